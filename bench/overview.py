"""The overview's benchmark: a year of a large team's kickouts, and the page's p95.

`seed` stores 20,000 imports with kickouts over the last year (25 rows each: 500,000 kickout
rows, their causes and per-cause counts), most of them handled by the clerk who retried them,
and gives each of their retries whose new task completed a before and after (its source rows
fixed or still, per cause): the dashboard compares only a retry whose source import it stored,
so the stored imports bound the comparisons. The imports are the sources of that year's
retries, so the EnergyCAP-user filter narrows both. Deterministic, COPYed like bench/data.py;
the phase removes its rows when it ends, so later phases and runs start as before. Import after
`django.setup()`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.core.cache import cache
from django.db import connection

from kickouts.causes import cause_key
from kickouts.models import (
    Comparison,
    ComparisonCause,
    HandledChange,
    ImportCause,
    ImportSnapshot,
    KickoutRow,
)

from .data import _Table
from .web import TIMEOUT, Timing, timed

IMPORTS = 20_000
ROWS_PER_IMPORT = 25
BUDGET_SECONDS = 0.300
ENERGYCAP_USERS = [f"EnergyCAP User {n}" for n in range(1, 9)]
MESSAGES = [
    "Account not found",
    "Account number matches more than one vendor",
    "Meter not found for account",
    "Bill overlaps an existing bill",
    "Vendor code does not match account",
    "Account is inactive",
    "Dates in mixed formats",
    "Bill dates are outside the account's service dates",
    "Account alert set to block",
    "Total cost does not equal line item sum",  # no cause knows it
]
REASONS = ["reimported"] * 12 + ["corrected_file"] * 5 + ["duplicate_bills"] * 2 + ["other"]


def seed(say: Callable[[str], None], imports: int = IMPORTS, rows: int = ROWS_PER_IMPORT) -> str:
    """Replace the stored imports with `imports` of the last year, `rows` kickout rows each,
    and give the year's completed retries a before and after."""
    started = time.monotonic()
    postgres = connection.vendor == "postgresql"
    clear()
    rng = random.Random(2300 + imports)
    now = datetime.now(UTC)
    year_ago = now - timedelta(days=365)
    retries = _year_of_retries(year_ago)
    step = max(1, len(retries) // imports)
    tables = {
        model: _Table(model, postgres)
        for model in (ImportSnapshot, KickoutRow, ImportCause, HandledChange)
    }
    row_id = cause_id = 0
    sources = retries[::step][:imports]
    for number, (_, guid, task_id, asked, who, _status) in enumerate(sources, 1):
        begin = max(year_ago + timedelta(hours=1), asked - timedelta(hours=rng.uniform(1, 72)))
        snapshot = dict(id=number, task_guid=guid, task_id=task_id, begin_date=begin)
        snapshot.update(status="Completed with kickouts", end_date=begin + timedelta(minutes=5))
        snapshot.update(user_full_name=rng.choice(ENERGYCAP_USERS), columns=["Kickout Message"])
        snapshot.update(row_count=rows, state="ready", fetched_at=begin, version=1)
        handled = (now - begin).days > 3 and rng.random() < 0.8
        if handled:
            at = min(now, begin + timedelta(days=rng.uniform(0.2, 20)))
            reason = rng.choice(REASONS)
            snapshot.update(handled_reason=reason, handled_by_id=who, handled_at=at)
            change = dict(snapshot_id=number, changed_by_id=who, changed_at=at)
            change.update(id=number, from_reason="", to_reason=reason)
            tables[HandledChange].add(change)
        tables[ImportSnapshot].add(snapshot)
        causes: Counter[str] = Counter()
        for position in range(rows):
            message = rng.choice(MESSAGES[: 3 + number % 7] + MESSAGES[-1:])
            row_id += 1
            causes[cause_key(message)] += 1
            tables[KickoutRow].add(
                dict(
                    id=row_id,
                    snapshot_id=number,
                    position=position,
                    message=message,
                    cause=cause_key(message),
                    cells={"Kickout Message": message},
                    account_code=f"AC-{rng.randrange(5000)}",
                    meter_code=f"M-{rng.randrange(9000)}",
                    vendor_code=f"V-{rng.randrange(40)}",
                )
            )
        for key, count in causes.items():
            cause_id += 1
            tables[ImportCause].add(dict(id=cause_id, snapshot_id=number, cause=key, rows=count))
        if number % 2000 == 0:
            for table in tables.values():
                table.flush()
    for table in tables.values():
        table.flush()
    compared = _before_and_after(sources, rng, postgres)
    _analyze(postgres)
    took = time.monotonic() - started
    return f"{imports:,} imports, {row_id:,} rows, {compared:,} comparisons in {took:.0f} s"


def _year_of_retries(since: datetime) -> list[tuple]:
    """(id, source GUID, source number, asked at, by, new task's status) of the year's
    retries, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.id, r.source_task_guid, r.source_task_id, r.requested_at, "
            "r.requested_by_id, COALESCE(f.status, '') FROM kickouts_retryattempt r "
            "LEFT JOIN kickouts_followup f ON f.retry_id = r.id "
            "WHERE r.requested_at >= %s ORDER BY r.requested_at, r.id",
            [since],
        )
        return [
            (pk, guid, task_id, _aware(at), who, status)
            for pk, guid, task_id, at, who, status in cursor.fetchall()
        ]


def _aware(moment) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _before_and_after(retries: list[tuple], rng: random.Random, postgres: bool) -> int:
    """A comparison, with its counts per cause, for each of these retries whose new task
    completed; its rows are of a few causes, as an import's are."""
    comparisons, causes = _Table(Comparison, postgres), _Table(ComparisonCause, postgres)
    count = cause_id = 0
    for pk, _, _, asked, _, status in retries:
        if status not in ("Completed", "Completed with kickouts"):
            continue
        count += 1
        messages = rng.sample(MESSAGES, 3)
        split = Counter(cause_key(rng.choice(messages)) for _ in range(rng.randint(1, 30)))
        before = fixed = 0
        for key, n in split.items():
            done = n if status == "Completed" else rng.choice([0, n // 2, n])
            cause_id += 1
            causes.add(dict(id=cause_id, comparison_id=pk, cause=key, before=n, fixed=done))
            before, fixed = before + n, fixed + done
        comparisons.add(
            dict(retry_id=pk, state="compared", compared_at=asked + timedelta(minutes=20))
            | dict(before_count=before, fixed_count=fixed, still_count=before - fixed)
            | dict(new_count=0, rows=[])
        )
        if count % 20_000 == 0:
            comparisons.flush()
            causes.flush()
    comparisons.flush()
    causes.flush()
    return count


def _analyze(postgres: bool) -> None:
    """Sequences past the ids given, and fresh statistics for the planner."""
    models = (ImportSnapshot, KickoutRow, ImportCause, HandledChange, ComparisonCause)
    with connection.cursor() as cursor:
        if not postgres:
            cursor.execute("ANALYZE")
            return
        for model in models:
            table = model._meta.db_table
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
            )
        for analysed in (*models, Comparison):
            cursor.execute(f"VACUUM ANALYZE {analysed._meta.db_table}")


def clear() -> None:
    """Remove every stored import and before and after (the scratch database's)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            names = [m._meta.db_table for m in (ImportSnapshot, Comparison)]
            cursor.execute(f"TRUNCATE {', '.join(names)} CASCADE")
        else:
            for model in (ComparisonCause, Comparison, ImportCause, HandledChange, KickoutRow):
                cursor.execute(f"DELETE FROM {model._meta.db_table}")  # noqa: S608
            cursor.execute(f"DELETE FROM {ImportSnapshot._meta.db_table}")  # noqa: S608


def overview_phase(run) -> None:
    """The overview at a year of data: each period, everyone's and one EnergyCAP user's, for a
    supervisor and for a clerk, p95 against the absolute budget; then the rows are removed."""
    imports = 500 if run.quick else IMPORTS
    section = "Overview"
    try:
        seeded = seed(lambda text: None, imports=imports)
        section = f"Overview: {seeded}"
        repeats = 5 if run.quick else 20
        cases = [(period, "") for period in ("30", "90", "365")] + [("365", ENERGYCAP_USERS[0])]
        for period, user in cases:
            for who, session in (("supervisor", run.supervisor), ("clerk", run.clerk)):
                query = {"period": period, **({"user": user} if user else {})}
                url = run.url("overview", **query)
                cache.clear()  # the first view adds the figures up; the page keeps them
                first = Timing()
                timed(first, lambda u=url, s=session: s.get(u, timeout=TIMEOUT))
                timing = _time(session, url, repeats)
                name = f"{who}, last {period} days" + (f", {user}" if user else "")
                figure = f"p95 **{timing.p95 * 1000:.0f} ms**, median {timing.median * 1000:.0f} ms"
                figure += f" (kept figures); adding them up {first.samples[0] * 1000:.0f} ms"
                figure += f", n={len(timing.samples)}" + (
                    f", {len(timing.failures)} failed" if timing.failures else ""
                )
                ok = timing.p95 <= BUDGET_SECONDS and not timing.failures
                target = "p95 ≤ 300 ms" + ("" if run.postgres else " on PostgreSQL")
                run.add(section, name, figure, target, ok if run.postgres else None)
        timing = _time(
            run.supervisor, run.url("overview_csv", chart="causes", period="365"), repeats
        )
        run.add(section, "a chart's CSV (by cause, 365 days)", f"p95 {timing.p95 * 1000:.0f} ms")
    finally:
        clear()


def _time(session, url: str, repeats: int) -> Timing:
    timing = Timing()
    for _ in range(repeats + 1):
        timed(timing, lambda: session.get(url, timeout=TIMEOUT))
    timing.samples.pop(0)  # warm-up
    return timing
