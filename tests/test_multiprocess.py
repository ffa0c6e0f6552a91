"""Production shape: two gunicorn servers sharing one PostgreSQL database, one Redis, one EnergyCAP.

What holds inside one process must hold across processes: one re-import however many clerks
click at once, and at most one status request per task and polling interval however many
panels poll it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import connection

from kickouts.models import Outcome, RetryAttempt
from kickouts.roles import ensure_roles
from kickouts.sandbox.state import KICKOUT_TASK_GUID, RUNNING_TASK_GUID

from .conftest import PASSWORD
from .factories import make_retry

pytestmark = pytest.mark.postgres

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS_URL = "redis://127.0.0.1:6379/14"
TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(settings_dict: dict) -> str:
    """The URL of the database pytest-django created, for the child processes."""
    user = settings_dict["USER"] or ""
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict["HOST"] or "127.0.0.1"
    port = settings_dict["PORT"] or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


class Server:
    """One `gunicorn dashboard.wsgi -w 2` on its own port; stderr kept for failures."""

    def __init__(self, env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            mode="w+", prefix="gunicorn-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            [str(BIN / "gunicorn"), "dashboard.wsgi", "-w", "2", "-b", f"127.0.0.1:{self.port}"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

    def wait_until_live(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if requests.get(self.url + "/health/live/", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError(f"gunicorn on {self.port} did not start:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def servers(django_db_setup, sandbox_process):
    """Two gunicorn servers (two workers each) on the test database, Redis db 14, the sandbox."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in make test's PostgreSQL pass")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": REDIS_URL,
        "ENERGYCAP_BASE_URL": sandbox_process.url,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "STATUS_POLL_SECONDS": "1",
    }
    # With DEBUG off, whitenoise serves from the manifest, which collectstatic writes.
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    started: list[Server] = []
    try:
        for _ in range(2):
            started.append(Server(env))
        for server in started:
            server.wait_until_live()
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(autouse=True)
def shared_cache():
    """The servers' Redis database starts empty in every test."""
    redis.Redis.from_url(REDIS_URL).flushdb()


def make_users(django_user_model, role: str, names: list[str]):
    group = ensure_roles()[role]
    # One real (slow) hash for everyone, with the servers' default hasher: the tests'
    # own settings use a fast one the servers do not know.
    encoded = make_password(PASSWORD, hasher=PBKDF2PasswordHasher())
    users = []
    for name in names:
        user = django_user_model.objects.create(username=name, password=encoded)
        user.groups.add(group)
        users.append(user)
    return users


def sign_in(base_url: str, username: str) -> requests.Session:
    """Sign in through the real form, CSRF token and all."""
    session = requests.Session()
    page = session.get(base_url + "/accounts/login/", timeout=TIMEOUT)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = session.post(
        base_url + "/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    assert response.status_code == 302, response.text[:500]
    return session


def all_at_once(jobs) -> list:
    """Run the jobs in threads released together; their results, in order."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def run(index, job):
        barrier.wait()
        try:
            results[index] = job()
        except Exception as exc:  # noqa: BLE001 - reported by the caller's assertion
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    return results


@pytest.mark.django_db(transaction=True)
def test_ten_clerks_on_two_servers_make_one_re_import(servers, sandbox, django_user_model):
    """Ten simultaneous submits for one task, split across both servers: one POST upstream."""
    clerks = make_users(django_user_model, "AP staff", [f"clerk{n}" for n in range(10)])
    sessions = [
        (servers[n % 2].url, sign_in(servers[n % 2].url, clerk.username))
        for n, clerk in enumerate(clerks)
    ]
    # A slow answer keeps the first POST in flight while the others arrive.
    sandbox.fault("kickout_post", latency=0.3)

    def submit(base_url, session):
        return lambda: session.post(
            f"{base_url}/tasks/{KICKOUT_TASK_GUID}/retry/",
            data={
                "action": "send",
                "form_token": str(uuid.uuid4()),
                "batch_mode": "new self-contained batch",
            },
            headers={"X-CSRFToken": session.cookies["csrftoken"], "HX-Request": "true"},
            timeout=TIMEOUT,
        )

    results = all_at_once([submit(url, session) for url, session in sessions])
    statuses = [getattr(r, "status_code", repr(r)) for r in results]
    assert statuses == [200] * 10, (statuses, [s.output() for s in servers])
    assert sandbox.count("kickout_post") == 1
    assert RetryAttempt.objects.filter(outcome=Outcome.SUBMITTED).count() == 1
    assert not RetryAttempt.objects.filter(outcome=Outcome.SUBMITTING).exists()


@pytest.mark.django_db(transaction=True)
def test_twenty_panels_on_two_servers_share_one_status_request(servers, sandbox, django_user_model):
    """Twenty panel refreshes at once across both servers: one task_get per interval."""
    [supervisor] = make_users(django_user_model, "Supervisors", ["sam"])
    attempt = make_retry(
        supervisor, source_task_guid=KICKOUT_TASK_GUID, new_task_guid=RUNNING_TASK_GUID
    )
    signed_in = [sign_in(server.url, "sam") for server in servers]
    sandbox.fault("task_get", latency=0.05)

    def poll(n):
        # Own connection per thread; the same signed-in browser session.
        session = requests.Session()
        session.cookies.update(signed_in[n % 2].cookies)
        url = f"{servers[n % 2].url}/retries/{attempt.pk}/status/"
        return lambda: session.get(
            url, params={"started": time.time()}, headers={"HX-Request": "true"}, timeout=TIMEOUT
        )

    started = time.monotonic()
    results = all_at_once([poll(n) for n in range(20)])
    elapsed = time.monotonic() - started
    statuses = [getattr(r, "status_code", repr(r)) for r in results]
    assert statuses == [200] * 20, (statuses, [s.output() for s in servers])
    assert all("Processing" in r.text for r in results)
    gets = [e for e in sandbox.log("task_get") if e["path"].endswith(RUNNING_TASK_GUID)]
    intervals = int(elapsed // 1.0) + 1  # STATUS_POLL_SECONDS=1
    assert 1 <= len(gets) <= intervals, (len(gets), elapsed)
