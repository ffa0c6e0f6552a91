"""A bounded load test: 20 clerks against a real gunicorn dashboard and a slow sandbox.

    .venv/bin/python -m bench.loadtest              # two minutes
    .venv/bin/python -m bench.loadtest --seconds 20 # a quick look

Everything runs on 127.0.0.1 and stops by itself. It starts its own EnergyCAP sandbox
(every answer 0.2 s late, like a distant server), its own dashboard (gunicorn, 4 workers,
DEBUG off) on a temporary SQLite database, or on DATABASE_URL if set, with REDIS_URL as the
shared cache if set (nothing there is flushed: every run uses fresh task GUIDs). Twenty
signed-in clerks browse the task list, open tasks and poll the status panels of their
retries; half-way, all twenty submit a retry of the same task at once, and a supervisor opens
the retry page each click led to. With DATABASE_URL set, the run's `bench-*` users and their
retries are deleted again at the end.

It prints a Markdown table: failures and p50/p95 per page kind, EnergyCAP requests by
endpoint, and the number of re-import POSTs, which must be exactly one (exit status 1 if not,
or if more than --max-failure-rate of the requests failed).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import requests

from kickouts.sandbox.control import SandboxControl
from kickouts.sandbox.process import start_sandbox

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "bench-clerk-password-4f9a"  # noqa: S105 - a throwaway account on loopback
REQUEST_TIMEOUT = 60
RUNNING_TASKS = 5  # the clerks' retries watch these; four clerks share each one
TASK_LINK = re.compile(r'href="/tasks/([0-9a-f-]{36})/"')
POLL_DELAY = re.compile(r'hx-trigger="load delay:([0-9.]+)s"')


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Stats:
    """Latencies and failures per page kind; shared by every clerk thread."""

    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: Counter = field(default_factory=Counter)
    failure_examples: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, kind: str, ok_statuses: set[int], send) -> requests.Response | None:
        started = time.monotonic()
        try:
            response = send()
        except requests.RequestException as exc:
            response, problem = None, type(exc).__name__
        else:
            problem = None if response.status_code in ok_statuses else str(response.status_code)
        elapsed = time.monotonic() - started
        with self.lock:
            self.timings[kind].append(elapsed)
            if problem:
                self.failures[kind] += 1
                self.failure_examples.setdefault(kind, problem)
        return response if problem is None else None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


class UpstreamLog:
    """Follows the sandbox's request log (it keeps only the last 10 000 entries)."""

    def __init__(self, control: SandboxControl):
        self.control = control
        self.since = control.log_page()["next"]  # only what happens from now on
        self.entries: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def _drain(self) -> None:
        page = self.control.log_page(since=self.since)
        self.entries.extend(page["entries"])
        self.since = page.get("next", self.since)

    def _follow(self) -> None:
        while not self.stop.wait(2.0):
            try:
                self._drain()
            except requests.RequestException:
                continue

    def __enter__(self) -> UpstreamLog:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._drain()


# --- the dashboard under test ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_env(args, sandbox_url: str, api_key: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SENTRY_DSN", "DJANGO_SETTINGS_MODULE"}}
    env.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ENERGYCAP_BASE_URL=sandbox_url,
        ENERGYCAP_API_KEY=api_key,
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        ALLOWED_HOSTS="127.0.0.1",
        STATUS_POLL_SECONDS=str(args.poll_seconds),
        LOG_LEVEL="WARNING",
        # Plain HTTP on loopback: no TLS redirect, cookies without the Secure flag.
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        SECURE_HSTS_SECONDS="0",
    )
    return env


def prepare_database(env: dict[str, str], args) -> dict:
    """Migrate, then make 20 clerks, a supervisor, and one running retry per clerk."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command
    from django.db import connection

    from kickouts.models import Outcome, RetryAttempt
    from kickouts.roles import ensure_roles

    call_command("migrate", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    groups = ensure_roles()
    user_model = get_user_model()
    encoded = make_password(PASSWORD)  # one slow hash for everyone
    names = [f"bench-clerk-{n:02d}" for n in range(1, args.clerks + 1)]
    RetryAttempt.objects.filter(requested_by__username__startswith="bench-").delete()
    users = {}
    for name in [*names, "bench-supervisor"]:
        user, _ = user_model.objects.update_or_create(
            username=name, defaults={"password": encoded, "first_name": name}
        )
        user.groups.set([groups["Supervisors" if name == "bench-supervisor" else "AP staff"]])
        users[name] = user
    retries = {}
    for n, name in enumerate(names):
        retries[name] = RetryAttempt.objects.create(
            requested_by=users[name],
            form_token=uuid.uuid4(),
            source_task_guid=args.kickout_guids[n],
            batch_mode="new self-contained batch",
            payload={"batchSettings": {"batchMode": "new self-contained batch"}},
            outcome=Outcome.SUBMITTED,
            new_task_guid=args.running_guids[n % len(args.running_guids)],
        ).pk
    connection.close()
    return retries


def cleanup_database() -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from kickouts.models import RetryAttempt

    RetryAttempt.objects.filter(requested_by__username__startswith="bench-").delete()
    get_user_model().objects.filter(username__startswith="bench-").delete()
    connection.close()


class Gunicorn:
    def __init__(self, env: dict[str, str], workers: int, threads: int, log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            str(BIN / "gunicorn"),
            "dashboard.wsgi",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{self.port}",
        ]
        if threads > 1:
            self.command += ["--worker-class", "gthread", "--threads", str(threads)]
        self.log_path = log_dir / "gunicorn.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            self.command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

    def wait_until_live(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(self.url + "/health/live/", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise SystemExit(f"gunicorn did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# --- the clerks -----------------------------------------------------------------------------


def sign_in(base_url: str, username: str, stats: Stats) -> requests.Session:
    session = requests.Session()
    page = session.get(base_url + "/accounts/login/", timeout=REQUEST_TIMEOUT)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = stats.call(
        "sign in",
        {302},
        lambda: session.post(
            base_url + "/accounts/login/",
            data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
            timeout=REQUEST_TIMEOUT,
            allow_redirects=False,
        ),
    )
    if response is None:
        raise SystemExit(f"{username} could not sign in")
    return session


class Clerk(threading.Thread):
    """Browses like a person: the list, a filter, a task, then their retry's status panel."""

    def __init__(self, base_url, session, retry_pk, stats, deadline, poll_seconds, seed):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.session = session
        self.retry_pk = retry_pk
        self.stats = stats
        self.deadline = deadline
        self.poll_seconds = poll_seconds
        self.random = random.Random(seed)

    def think(self, low=0.5, high=2.0) -> bool:
        pause = self.random.uniform(low, high)
        if time.monotonic() + pause >= self.deadline:
            return False
        time.sleep(pause)
        return True

    def get(self, kind: str, path: str, ok=frozenset({200}), htmx=False, **params):
        headers = {"HX-Request": "true"} if htmx else {}
        return self.stats.call(
            kind,
            set(ok),
            lambda: self.session.get(
                self.base_url + path, params=params, headers=headers, timeout=REQUEST_TIMEOUT
            ),
        )

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            listing = self.get("task list", "/")
            if not self.think():
                return
            period = self.random.choice(["7", "30", "90"])
            self.get("task list (htmx filter)", "/", htmx=True, period=period)
            if not self.think():
                return
            guids = TASK_LINK.findall(listing.text) if listing is not None else []
            if guids:
                self.get("task page", f"/tasks/{self.random.choice(guids)}/")
                if not self.think():
                    return
            self.get("retry page", f"/retries/{self.retry_pk}/")
            started = f"{time.time():.0f}"
            for _ in range(3):  # the panel polls itself while the page is open
                if not self.think(self.poll_seconds, self.poll_seconds):
                    return
                panel = self.get(
                    "status panel (htmx poll)",
                    f"/retries/{self.retry_pk}/status/",
                    ok={200, 286},
                    htmx=True,
                    started=started,
                )
                if panel is None or panel.status_code == 286:
                    break


def retry_storm(base_url, sessions, guid, stats) -> list[requests.Response | None]:
    """Every clerk sends a retry of the same task at the same moment."""
    barrier = threading.Barrier(len(sessions))
    answers: list[requests.Response | None] = [None] * len(sessions)

    def submit(index, session):
        data = {
            "action": "send",
            "form_token": str(uuid.uuid4()),
            "batch_mode": "new self-contained batch",
        }
        headers = {"X-CSRFToken": session.cookies["csrftoken"], "HX-Request": "true"}
        barrier.wait()
        answers[index] = stats.call(
            "retry submit (all at once)",
            {200},
            lambda: session.post(
                f"{base_url}/tasks/{guid}/retry/",
                data=data,
                headers=headers,
                timeout=REQUEST_TIMEOUT,
            ),
        )

    threads = [threading.Thread(target=submit, args=pair) for pair in enumerate(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def clone(session: requests.Session) -> requests.Session:
    """The same signed-in browser, on its own connection (for a second tab)."""
    copy = requests.Session()
    copy.cookies.update(session.cookies)
    return copy


# --- the report -----------------------------------------------------------------------------


def report(args, stats, upstream, storm_posts, wall, server_command, database, cache) -> str:
    command = " ".join(["gunicorn", *server_command[1:]])
    lines = [
        f"Load test: {args.clerks} clerks for {args.seconds:g} s against `{command}` "
        f"({database}, {cache}); every EnergyCAP answer {args.latency:g} s late; "
        f"status panels poll every {args.poll_seconds:g} s.",
        "",
        "| page kind | requests | failed | failure rate | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = failed = 0
    everything: list[float] = []
    for kind in sorted(stats.timings):
        values = stats.timings[kind]
        count, bad = len(values), stats.failures[kind]
        total, failed = total + count, failed + bad
        everything.extend(values)
        lines.append(
            f"| {kind} | {count} | {bad} | {bad / count:.1%} | {percentile(values, 0.5) * 1000:.0f}"
            f" | {percentile(values, 0.95) * 1000:.0f} | {max(values) * 1000:.0f} |"
        )
    lines.append(
        f"| **all** | **{total}** | **{failed}** | **{(failed / total if total else 0):.1%}** | "
        f"{percentile(everything, 0.5) * 1000:.0f} | {percentile(everything, 0.95) * 1000:.0f} | "
        f"{max(everything) * 1000:.0f} |"
    )
    lines += ["", "| EnergyCAP endpoint | method | requests | per second |", "|---|---|---:|---:|"]
    counts = Counter((e["endpoint"] or "unknown", e["method"]) for e in upstream.entries)
    for (endpoint, method), count in sorted(counts.items()):
        lines.append(f"| {endpoint} | {method} | {count} | {count / wall:.1f} |")
    lines.append(
        f"| **all** | | **{sum(counts.values())}** | **{sum(counts.values()) / wall:.1f}** |"
    )
    verdict = "OK" if storm_posts == 1 else "FAILED"
    lines += [
        "",
        f"Re-import POSTs after {args.clerks} simultaneous submits of one task: "
        f"**{storm_posts}** (exactly 1 expected) — {verdict}.",
    ]
    if stats.failure_examples:
        examples = ", ".join(f"{k}: {v}" for k, v in sorted(stats.failure_examples.items()))
        lines.append(f"First failure of each kind: {examples}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120, help="how long the clerks browse")
    parser.add_argument("--clerks", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help=">1 uses gthread workers")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds added upstream")
    parser.add_argument("--poll-seconds", type=float, default=3.0, help="STATUS_POLL_SECONDS")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--max-failure-rate", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 3600:
        parser.error("--seconds must be between 0 and 3600")

    workdir = Path(tempfile.mkdtemp(prefix="kickouts-loadtest-"))
    external_db = bool(os.environ.get("DATABASE_URL"))
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}"
    database = "PostgreSQL" if database_url.startswith("postgres") else "SQLite"
    cache = "Redis cache" if args.redis_url else "per-process memory cache"
    api_key = "bench-" + secrets.token_hex(16)
    server = None
    try:
        with start_sandbox(port=0, api_key=api_key, task_seconds=20.0) as sandbox_process:
            sandbox = SandboxControl(sandbox_process.url)
            args.running_guids = [
                sandbox.add_task(end_date=None, task_note=f"Bench running import {n}")["taskGUId"]
                for n in range(RUNNING_TASKS)
            ]
            # One retried import per clerk (a task is re-imported once), and one for the storm.
            args.kickout_guids = [
                sandbox.add_task(
                    status="Completed with kickouts", kickout_messages=["Account not found"]
                )["taskGUId"]
                for _ in range(args.clerks + 1)
            ]
            storm_guid = args.kickout_guids.pop()
            env = dashboard_env(args, sandbox_process.url, api_key, database_url)
            retries = prepare_database(env, args)
            server = Gunicorn(env, args.workers, args.threads, workdir)
            server.wait_until_live()
            sandbox.fault("*", latency=args.latency)

            stats = Stats()
            names = sorted(retries)
            sessions = {name: sign_in(server.url, name, stats) for name in names}
            supervisor = sign_in(server.url, "bench-supervisor", stats)
            with UpstreamLog(sandbox) as upstream:
                started = time.monotonic()
                deadline = started + args.seconds
                clerks = [
                    Clerk(server.url, sessions[name], retries[name], stats, deadline,
                          args.poll_seconds, seed=n)
                    for n, name in enumerate(names)
                ]  # fmt: skip
                for clerk in clerks:
                    clerk.start()
                time.sleep(args.seconds / 2)
                answers = retry_storm(
                    server.url, [clone(sessions[n]) for n in names], storm_guid, stats
                )
                # The supervisor looks at what each of the twenty clicks became.
                for path in sorted({a.headers.get("HX-Redirect", "") for a in answers if a}):
                    if path:
                        stats.call(
                            "retry page",
                            {200},
                            lambda path=path: supervisor.get(
                                server.url + path, timeout=REQUEST_TIMEOUT
                            ),
                        )
                for clerk in clerks:
                    clerk.join()
                wall = time.monotonic() - started
            storm_posts = sum(
                1
                for e in upstream.entries
                if e["endpoint"] == "kickout_post" and storm_guid in e["path"]
            )
            print(report(args, stats, upstream, storm_posts, wall, server.command, database, cache))
            server.stop()
            if external_db:
                cleanup_database()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    failures = sum(stats.failures.values())
    requests_made = sum(len(v) for v in stats.timings.values())
    if storm_posts != 1:
        return 1
    if requests_made and failures / requests_made > args.max_failure_rate:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
