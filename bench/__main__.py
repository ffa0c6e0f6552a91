"""`python -m bench`: what clerks feel with EnergyCAP 200 ms away, and how cost grows.

    python -m bench             # PostgreSQL + Redis + gunicorn gthread, 1,000,000 retries
    python -m bench --quick     # a smoke run: 20,000 retries, fewer repeats, short phases
    python -m bench --sqlite    # SQLite (bench/out/bench.sqlite3) instead of PostgreSQL
    python -m bench --phases history,kickout_queue   # only these (a partial table)

On 127.0.0.1: the sandbox as EnergyCAP (every answer --latency late), the dashboard under
gunicorn (DEBUG off), a scratch database (made when missing) whose retries are generated once
and reused. The table goes to bench/results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
POLL_SECONDS = 3
DATABASE = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
# Production settings (DEBUG off, whitenoise), but plain HTTP on loopback.
LOOPBACK_PRODUCTION = (
    "DJANGO_SETTINGS_MODULE=dashboard.settings DEBUG=false ALLOWED_HOSTS=127.0.0.1 "
    "SECURE_SSL_REDIRECT=false SESSION_COOKIE_SECURE=false CSRF_COOKIE_SECURE=false "
    f"SECURE_HSTS_SECONDS=0 STATUS_POLL_SECONDS={POLL_SECONDS} LOG_LEVEL=WARNING "
    "SECRET_KEY=bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (a few minutes)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--rows", type=int, help="retries in the history (1,000,000)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds EnergyCAP is away")
    parser.add_argument("--load-seconds", type=float, help="length of the load phase (60)")
    parser.add_argument("--database-url", default=DATABASE, help="a scratch PostgreSQL db")
    parser.add_argument("--redis-url", default=REDIS, help="a Redis db the benchmark may empty")
    parser.add_argument(
        "--phases",
        help="only these phases, comma-separated (e.g. history,kickout_queue; round_trip runs "
        "first whatever is chosen)",
    )
    args = parser.parse_args(argv)
    rows = args.rows or (20_000 if args.quick else 1_000_000)
    database_url = args.database_url
    if args.sqlite:
        database_url = f"sqlite:///{ROOT / 'bench' / 'out' / 'bench.sqlite3'}"
        (ROOT / "bench" / "out").mkdir(exist_ok=True)
    wall = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - wall:5.0f} s] {text}", flush=True)

    from kickouts.sandbox.control import SandboxControl
    from kickouts.sandbox.process import start_sandbox

    from .web import SANDBOX_KEY

    # Re-imports run for an hour, so every retry the benchmark sends is still being watched.
    with start_sandbox(api_key=SANDBOX_KEY, task_seconds=3600, latency=args.latency) as sandbox:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENERGYCAP_", "DJANGO"))}
        env.update(pair.partition("=")[::2] for pair in LOOPBACK_PRODUCTION.split())
        env.update(ENERGYCAP_BASE_URL=sandbox.url, ENERGYCAP_API_KEY=SANDBOX_KEY)
        env.update(DATABASE_URL=database_url, REDIS_URL=args.redis_url)
        os.environ.update(env)
        import django

        django.setup()
        from django.core.cache import cache
        from django.core.management import call_command

        from . import data, phases
        from .web import Gunicorn

        postgres = not args.sqlite
        if postgres:
            _create_database(database_url)
        say(f"Database {'PostgreSQL' if postgres else 'SQLite'}; {rows:,} retries")
        made = data.prepare(rows, say)
        phases.Retry.objects.filter(pk__gt=rows).delete()  # sends of earlier runs
        made += f"; bulks {data.prepare_bulks(rows, say)}"
        cache.clear()  # Redis: nothing a run saw (`me`, kickouts of a GUID) carries over
        call_command("collectstatic", interactive=False, verbosity=0)
        server = Gunicorn(env, workers=4, threads=8)  # as in the README's Operations
        say(f"Dashboard {server.url} ({server.description}); sandbox {sandbox.url}")
        control, workers = SandboxControl(sandbox.url), server.worker_pids()
        run = phases.Run(args.quick, postgres, server.url, control, workers, POLL_SECONDS)
        run.load_seconds = args.load_seconds or (20.0 if args.quick else 60.0)
        run.latency = args.latency
        try:
            for step in phases.chosen(args.phases):
                say(step.__name__)
                try:
                    step(run)
                except Exception as exc:  # noqa: BLE001 - one broken phase must not hide the rest
                    traceback.print_exc()
                    run.add(step.__name__, "did not finish", repr(exc), "", False)
        finally:
            server.stop()
    took = time.monotonic() - wall
    setup = [
        f"`{' '.join(['python -m bench', *(argv if argv is not None else sys.argv[1:])])}`, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {took / 60:.1f} minutes",
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Django {django.get_version()}, load average {os.getloadavg()[0]:.1f} at the end",
        f"{'PostgreSQL' if postgres else 'SQLite'}, Redis cache, {server.description}, "
        "DEBUG off, whitenoise",
        f"{phases.Retry.objects.count():,} retries ({made}); EnergyCAP: the built-in sandbox, "
        f"every answer {args.latency * 1000:.0f} ms late; status panels poll every {POLL_SECONDS}s",
        "RT = one round trip, measured in the same run; RT targets judge the median, the "
        "budget of pages with no EnergyCAP call judges the p95 in milliseconds",
    ]
    report = _report(run.rows, setup)
    print(report)
    RESULTS.write_text(report, encoding="utf-8")
    say(f"Written to {RESULTS.relative_to(ROOT)}")
    return 0


def _report(rows, setup: list[str]) -> str:
    lines = ["# Benchmark results", "", *[f"- {line}" for line in setup]]
    sections = dict.fromkeys(row.section for row in rows)  # in order of first appearance
    for section in sections:
        lines += ["", f"## {section}", "", "| measured | figure | target | |"]
        lines.append("|---|---|---|---|")
        for row in (row for row in rows if row.section == section):
            cells = [row.name, row.figure, row.target, row.result]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    missed = [f"{row.section}: {row.name}" for row in rows if row.result == "MISS"]
    passed = sum(row.result == "PASS" for row in rows)
    lines += ["", f"**{passed} PASS, {len(missed)} MISS** " + "; ".join(missed)]
    return "\n".join(lines) + "\n"


def _create_database(url: str) -> None:
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(url)
    with psycopg.connect(
        host=config["HOST"] or None,
        port=config["PORT"] or None,
        dbname="postgres",
        user=config["USER"] or None,
        password=config["PASSWORD"] or None,
        autocommit=True,
    ) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]])
        if not found.fetchone():
            connection.execute(f'CREATE DATABASE "{config["NAME"]}"')


if __name__ == "__main__":
    sys.exit(main())
