"""`python -m bench.queue`: the kickout queue on 500 open imports and 20,000 kickout rows.

    python -m bench.queue                 # SQLite in bench/out/db/, or DATABASE_URL's PostgreSQL
    python -m bench.queue --imports 100   # a smaller smoke run

Seeds the sandbox with the imports (40 rows each, four messages of twelve), takes the first
load of their kickouts with every kickout answer 100 ms late (and reports the most requests
begun within any 100 ms, which bounds how many were in flight), then serves the dashboard with
gunicorn and times the queue page, its biggest group and the whole queue's CSV, each interleaved
with the framework floor, counting the upstream requests they make. Writes
bench/queue-results.md.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

LATENCY = 0.1
ROWS_PER_MESSAGE = 10
MESSAGES_PER_IMPORT = 4
MESSAGES = (
    "Account not found",
    "Meter not found for account",
    "Bill overlaps an existing bill",
    "Vendor code does not match account",
    "Total cost does not equal line item sum",
    "Bill end date is before start date",
    "Account is inactive",
    "Bill dates are outside the account's service dates",
    "Account alert set to Block for this period",
    "Dates in mixed formats within one file",
    "Account number exists at more than one vendor",
    "Meter is not assigned to the account",
)
CLERK = "bench-queue-clerk"
PASSWORD = "bench-queue-password-not-secret"
RESULTS = Path(__file__).resolve().parent / "queue-results.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queue", description=__doc__)
    parser.add_argument("--imports", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args(argv)
    wall = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - wall:6.0f} s] {text}", flush=True)

    from kickouts.sandbox.process import start_sandbox

    from . import data
    from .server import SANDBOX_KEY, app_environment

    database_url = os.environ.get("DATABASE_URL", "").strip()
    if not data.is_postgres(database_url):
        path = data.OUT_DIR / "db" / "queue.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{path}"
    data.ensure_database_exists(database_url)
    sandbox = start_sandbox(port=0, api_key=SANDBOX_KEY, task_seconds=20.0)
    try:
        env = app_environment(database_url=database_url, sandbox_port=sandbox.port, poll_seconds=3)
        os.environ.update(env)
        os.environ["LOG_LEVEL"] = "WARNING"
        os.environ.pop("REDIS_URL", None)
        import django

        django.setup()
        return _run(args, sandbox, env, database_url, say, wall)
    finally:
        sandbox.stop()


def _run(args, sandbox, env, database_url, say, wall) -> int:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from kickouts import snapshots
    from kickouts.models import ImportSnapshot, KickoutRow
    from kickouts.roles import ensure_roles
    from kickouts.sandbox.control import SandboxControl

    from .measure import ms, signed_in, time_requests
    from .scenarios import log_seq, upstream_since
    from .server import start_gunicorn

    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    ImportSnapshot.objects.all().delete()
    user_model = get_user_model()
    clerk = user_model.objects.filter(username=CLERK).first() or user_model.objects.create_user(
        CLERK, password=PASSWORD, first_name="Bench", last_name="Clerk"
    )
    clerk.groups.add(ensure_roles()["AP staff"])

    control = SandboxControl(sandbox.url)
    say(f"Seeding the sandbox with {args.imports} imports with kickouts…")
    rng = random.Random(14)
    now = datetime.now(UTC)
    for _ in range(args.imports):
        begin = now - timedelta(days=rng.uniform(0.1, 29))
        control.add_task(
            kickout_messages=rng.sample(MESSAGES, MESSAGES_PER_IMPORT),
            rows_per_message=ROWS_PER_MESSAGE,
            user_id=rng.randint(1, 6),
            begin_date=begin.isoformat(),
            end_date=(begin + timedelta(minutes=rng.randint(1, 20))).isoformat(),
        )
    control.fault("kickout_summary", latency=LATENCY)
    control.fault("kickout_detail", latency=LATENCY)
    say(f"First load, {LATENCY * 1000:.0f} ms per kickout answer…")
    since = log_seq(control)
    began = time.monotonic()
    registered, stored = snapshots.snapshot_period(30)
    first_load = time.monotonic() - began
    entries = [
        e
        for e in upstream_since(control, since)
        if e["endpoint"] in ("kickout_summary", "kickout_detail")
    ]
    starts = sorted(datetime.fromisoformat(e["time"]).timestamp() for e in entries)
    busiest = max(
        (sum(1 for other in starts if start <= other < start + LATENCY * 0.95) for start in starts),
        default=0,
    )
    imports = ImportSnapshot.objects.count()
    rows = KickoutRow.objects.count()
    say(
        f"{registered} imports registered, {stored} stored in {first_load:.1f} s; "
        f"{rows:,} rows; at most {busiest} kickout requests begun within {LATENCY * 1000:.0f} ms."
    )
    control.clear_faults()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    server = start_gunicorn("queue", env)
    results: list[tuple[str, str, str, str]] = []
    try:
        session = signed_in(server.url, CLERK, PASSWORD)
        floor_session = signed_in(server.url, CLERK, PASSWORD)
        floor = (floor_session, server.url + "/bench/floor/")
        queue_url = server.url + "/kickouts/"
        session.get(queue_url, timeout=60)  # the first view asks the worker for a listing
        group = KickoutRow.objects.values_list("message", flat=True).order_by("message").first()
        from urllib.parse import urlencode

        pages = [
            ("queue page (all open imports)", queue_url, args.repeats),
            (
                "group page (one message, first page)",
                server.url + "/kickouts/group/?" + urlencode({"message": group}),
                args.repeats,
            ),
            ("CSV of the whole queue", server.url + "/kickouts.csv", max(5, args.repeats // 4)),
        ]
        for name, url, repeats in pages:
            say(f"Timing the {name}…")
            seq = log_seq(control)
            timing = time_requests(session, url, repeats=repeats, warmup=3, budget=120, floor=floor)
            upstream = len(upstream_since(control, seq))
            ratio = timing.median / timing.reference.median
            results.append(
                (
                    name,
                    f"{ms(timing.median)} (p95 {ms(timing.p95)}), {timing.body_bytes:,} bytes",
                    f"{ratio:.2f}× the floor ({ms(timing.reference.median)})",
                    f"{upstream}" + (f", errors: {timing.errors[:2]}" if timing.errors else ""),
                )
            )
    finally:
        server.stop()

    where = connection.vendor + (
        f" ({database_url.rsplit('@', 1)[-1]})" if connection.vendor == "postgresql" else ""
    )
    lines = [
        "# Kickout queue benchmark",
        "",
        f"`python -m bench.queue --imports {args.imports}` on {where}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {server.description}, DEBUG off. "
        f"Took {(time.monotonic() - wall) / 60:.1f} minutes.",
        "",
        f"- Data: {imports:,} imports with kickouts in the last 30 days ({args.imports} seeded "
        f"plus the sandbox's own), {rows:,} kickout rows.",
        f"- First load: {stored} snapshots in {first_load:.1f} s with every kickout answer "
        f"{LATENCY * 1000:.0f} ms late; at most **{busiest}** kickout requests began within "
        f"any {LATENCY * 1000:.0f} ms (each lasts at least that long, so at most {busiest} "
        "were in flight).",
        "",
        "| page | median | vs. the trivial view, interleaved | upstream requests |",
        "|---|---|---|---:|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in results),
        "",
    ]
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
