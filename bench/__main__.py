"""`python -m bench`: run every benchmark and print one table (also written to results.md).

    python -m bench            # 1,000,000 history rows, full repeats (well under 20 minutes)
    python -m bench --quick    # 50,000 rows, fewer repeats: a smoke run
    python -m bench --rows N

PostgreSQL when DATABASE_URL points at it (and Redis db 13 as the cache of every server),
SQLite otherwise, in bench/out/db/ (and a per-process memory cache, except for the many-viewers
benchmark, which always shares Redis between its four workers). The generated database is
reused by later runs with the same row count and migrations.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable

SANDBOX_TASK_SECONDS = 20.0
POLL_SECONDS = 3.0
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


def _project_relative(text: str) -> str:
    """Paths in the results relative to the project, so no machine's paths are written."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return text.replace("sqlite:///" + root + "/", "").replace(root + "/", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 rows, fewer repeats")
    parser.add_argument("--rows", type=int, help="history rows (default 1,000,000)")
    args = parser.parse_args(argv)
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    if rows < 1000:
        parser.error("--rows must be at least 1000")
    wall = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - wall:6.0f} s] {text}", flush=True)

    from kickouts.sandbox.process import start_sandbox

    from . import data
    from .server import SANDBOX_KEY, app_environment

    database_url = data.database_url_for(rows)
    postgres = data.is_postgres(database_url)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    sandbox = start_sandbox(port=0, api_key=SANDBOX_KEY, task_seconds=SANDBOX_TASK_SECONDS)
    try:
        env = app_environment(
            database_url=database_url,
            sandbox_port=sandbox.port,
            poll_seconds=POLL_SECONDS,
            redis_url=redis_url if postgres else "",
        )
        os.environ.update(env)
        os.environ["ALLOWED_HOSTS"] += ",testserver"  # for the in-process SQL profiles
        os.environ["LOG_LEVEL"] = "WARNING"  # this process's own upstream calls need no log
        if not postgres:
            os.environ.pop("REDIS_URL", None)
        import django

        django.setup()
        try:
            return _run(args, rows, database_url, postgres, redis_url, env, sandbox, say, wall)
        except data.NotABenchDatabase as exc:
            print(f"python -m bench: {exc}", file=sys.stderr)
            return 2
    finally:
        sandbox.stop()


def _run(args, rows, database_url, postgres, redis_url, env, sandbox, say, wall) -> int:
    from django.core.management import call_command

    from kickouts.sandbox.control import SandboxControl

    from . import data, report, scenarios
    from .measure import signed_in
    from .scenarios import Plan, Run
    from .server import start_gunicorn

    plan = Plan.for_mode(args.quick)
    load_at_start = os.getloadavg()
    data.ensure_database_exists(database_url)
    where = (
        f"PostgreSQL {_postgres_version()} ({database_url.rsplit('@', 1)[-1]})"
        if postgres
        else f"SQLite {sqlite3.sqlite_version} ({_project_relative(database_url)})"
    )
    cache = f"Redis ({redis_url})" if postgres else "per-process memory (LocMemCache)"
    say(f"Database: {where}. Cache of the main server: {cache}.")
    say(f"{'Quick' if args.quick else 'Full'} run, {rows:,} history rows.")
    redis_ok = _flush_redis(redis_url, say)
    call_command("collectstatic", interactive=False, verbosity=0)
    dataset = data.prepare(rows, database_url, say)
    say(f"Data: {rows:,} retries, {dataset.description} ({dataset.seconds:.0f} s).")
    control = SandboxControl(sandbox.url)
    tasks_in_period = scenarios.prepare_sandbox(control)

    setup = {
        "database": where,
        "history rows": f"{rows:,} ({dataset.description}, {dataset.seconds:.0f} s)",
        "cache": cache,
        "EnergyCAP": "the built-in sandbox, answering without added latency",
        "STATUS_POLL_SECONDS": f"{POLL_SECONDS:g}",
        "mode": "quick (--quick)" if args.quick else "full",
    }
    server = start_gunicorn("main", env)
    setup["server"] = f"{server.description}, DEBUG off, whitenoise, same settings as production"
    say(f"Dashboard: {server.url} ({server.description}); sandbox {sandbox.url}.")
    people = {
        "clerk": data.CLERK,
        "supervisor": data.SUPERVISOR,
        "supervisor2": data.OTHER_SUPERVISOR,
        "admin": data.ADMIN,
    }
    sessions = {name: signed_in(server.url, user, data.PASSWORD) for name, user in people.items()}
    run = Run(plan, rows, server, control, sessions)

    def step(name: str, action: Callable[[], object]) -> None:
        say(name)
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
            traceback.print_exc()
            run.add(report.Row(name, "did not run", f"{type(exc).__name__}: {exc}", result="MISS"))

    try:
        queries: list[scenarios.HistoryQuery] = []
        step(
            "Choosing the history queries", lambda: queries.extend(scenarios.history_queries(rows))
        )
        step("Profiling SQL per page (in-process)", lambda: scenarios.sql_profiles(run, queries))
        if postgres:
            _flush_redis(redis_url, say)  # the profiles above must not warm the server's cache
        step("Framework floor", lambda: scenarios.floor(run, first=True))
        step("Task page", lambda: scenarios.task_page(run))
        step("Task list", lambda: scenarios.task_list(run, tasks_in_period))
        step("Status panel", lambda: scenarios.status_panel(run, POLL_SECONDS))
        step("History against the admin", lambda: scenarios.history(run, queries))
        step("CSV export", lambda: scenarios.csv_export(run))
        step("Framework floor, second pass", lambda: scenarios.floor(run, first=False))
        step("Memory", lambda: scenarios.worker_memory(run))
    finally:
        server.stop()

    if redis_ok:
        viewers_env = {**env, "REDIS_URL": redis_url}
        _flush_redis(redis_url, say)

        def viewers() -> None:
            shared = start_gunicorn("viewers", viewers_env, workers=4)
            try:
                scenarios.many_viewers(run, shared, POLL_SECONDS)
            finally:
                shared.stop()

        step(f"{plan.viewers} viewers of one running task", viewers)
    else:
        run.add(
            report.Row(
                "Upstream economy",
                "many viewers of one running task",
                "not run: Redis is not reachable",
                target="1",
                result="MISS",
            )
        )

    took = time.monotonic() - wall
    load_at_end = os.getloadavg()
    setup["load average (1, 5, 15 min)"] = (
        f"{_load(load_at_start)} at the start, {_load(load_at_end)} at the end "
        "(other processes share the machine; the interleaved floor sees the same load)"
    )
    command = (
        "python -m bench"
        + (" --quick" if args.quick else "")
        + (f" --rows {args.rows}" if args.rows else "")
    )
    notes = [
        f"Server logs: {_project_relative(str(server.log_path.parent))}/. "
        f"Data: {_project_relative(database_url)}.",
        "Every ratio divides medians measured in this run on the same gunicorn worker; "
        "'floor (interleaved)' was sampled alternately with the page it is compared with.",
        "'in-process … SQL … Python' notes: the same view run in the bench process through "
        "Django's test client, every query timed by a connection.execute_wrapper; what is not "
        "SQL is Python (view, forms, templates) and cache round trips.",
        "The typical status panel is one watcher polling again and again within the polling "
        "interval, so nearly every request reads the shared cache (as with many watchers); "
        "the cold one asks the sandbox for a task nobody has looked at yet and records it.",
        *run.notes,
    ]
    print()
    print(report.text_table(run.results))
    print()
    print(report.summary(run.results))
    print(f"Took {took / 60:.1f} minutes. Written to {report.RESULTS}.")
    report.write_results(run.results, setup, took, command, notes)
    return 0


def _postgres_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return str(cursor.fetchone()[0]).split()[0]


def _load(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.1f}" for value in values)


def _flush_redis(url: str, say: Callable[[str], None]) -> bool:
    """Empty the benchmark's own Redis database; False when Redis is not reachable."""
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=3).flushdb()
    except redis.RedisError as exc:
        say(f"Redis at {url} is not reachable ({exc}).")
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
