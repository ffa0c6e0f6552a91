"""The benchmark's database: people, and N retry records made once and reused.

Two years of rows: every outcome, batch mode and final status, ~25 people with very different
workloads, batch codes matching a handful of rows, a few rare notes, so each history filter has
something to find. Deterministic; a marker table remembers the row count and generator version,
and later runs reuse the rows (after `migrate`). Import it after `django.setup()`."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Mod

from kickouts import roles
from kickouts.bulk_models import BulkLine, BulkRetry
from kickouts.models import FollowUp, RetryAttempt, RetrySource
from kickouts.roles import ensure_roles

GENERATOR = "6"
MARKER = "bench_dataset"
PASSWORD = "bench-password-not-secret"  # noqa: S105 - loopback-only throwaway accounts
CLERKS = [f"clerk{n:02d}" for n in range(1, 21)]
SUPERVISORS = ["sam", "ingrid"]
ADMIN = "bench-admin"
MODES = ["use existing batch", "new batch", "new self-contained batch", "use pending batch"]
MODES += ["smart batch"]
OUTCOMES = ["submitted"] * 82 + ["rejected"] * 9 + ["not_sent"] * 5 + ["unknown"] * 4
FINALS = ["Completed"] * 50 + ["Completed with kickouts"] * 35 + ["Failed"] * 13
FINALS += ["Completed with errors"] * 2  # an undocumented status, shown verbatim
CODES = ["ELEC", "WATER", "GAS", "TELECOM", "STEAM", "EDI"]
NOTES = ["", "", "", "Fixed account numbers", "Vendor corrected the meter codes", "Month-end"]
RARE_NOTE_EVERY = 100_000  # "Meter swap at site <n>": a search that matches one row
# One retry in twenty was part of a bulk: ten consecutive retries of every two hundred.
BULK_EVERY, BULK_SIZE = 200, 10
BULK_MARKER = "bench_bulks"
LINE_STATES = {"submitted": "sent", "rejected": "refused", "not_sent": "not_sent"}


def prepare(rows: int, say: Callable[[str], None]) -> str:
    """Migrate, make the people, and make sure the table holds `rows` generated retries."""
    tables = connection.introspection.table_names()
    if tables and MARKER not in tables:
        raise SystemExit(
            f"{connection.settings_dict['NAME']} holds tables the benchmark did not make, and "
            "the benchmark replaces its retries: point it at a scratch database."
        )
    call_command("migrate", interactive=False, verbosity=0)
    users = ensure_people()
    wanted = f"{GENERATOR}:{rows}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {MARKER} (value varchar(100) NOT NULL)")
        cursor.execute(f"SELECT value FROM {MARKER}")  # noqa: S608
        if [value for (value,) in cursor.fetchall()] == [wanted]:
            return "reused"
        started = time.monotonic()
        say(f"Generating {rows:,} retries (once; later runs reuse them)")
        cursor.execute(f"DELETE FROM {MARKER}")  # noqa: S608
        _delete_bulks(cursor)
        for table in ("followup", "retrysource", "correctedfile", "retryattempt"):
            cursor.execute(f"DELETE FROM kickouts_{table}")  # noqa: S608
        load(generate(rows, [users[name] for name in CLERKS + SUPERVISORS]), say)
        cursor.execute(f"INSERT INTO {MARKER} VALUES (%s)", [wanted])  # noqa: S608
    return f"generated in {time.monotonic() - started:.0f} s"


def prepare_bulks(rows: int, say: Callable[[str], None]) -> str:
    """Make sure one retry in twenty belongs to a generated bulk (made once, reused)."""
    wanted = f"{GENERATOR}:{rows}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {BULK_MARKER} (value varchar(100) NOT NULL)")
        cursor.execute(f"SELECT value FROM {BULK_MARKER}")  # noqa: S608
        if [value for (value,) in cursor.fetchall()] == [wanted]:
            return "reused"
        started = time.monotonic()
        say(f"Generating the bulks of {rows:,} retries (once; later runs reuse them)")
        _delete_bulks(cursor)
        load_bulks(rows)
        cursor.execute(f"INSERT INTO {BULK_MARKER} VALUES (%s)", [wanted])  # noqa: S608
    return f"generated in {time.monotonic() - started:.0f} s"


def _delete_bulks(cursor) -> None:
    """Every bulk, its lines and the retries' ties to them (and the bulks' marker)."""
    cursor.execute(f"CREATE TABLE IF NOT EXISTS {BULK_MARKER} (value varchar(100) NOT NULL)")
    cursor.execute(f"DELETE FROM {BULK_MARKER}")  # noqa: S608
    cursor.execute(f"DELETE FROM {BulkLine._meta.db_table}")  # noqa: S608
    retries = RetryAttempt._meta.db_table
    cursor.execute(f"UPDATE {retries} SET bulk_id = NULL WHERE bulk_id IS NOT NULL")  # noqa: S608
    cursor.execute(f"DELETE FROM {BulkRetry._meta.db_table}")  # noqa: S608


def load_bulks(rows: int) -> None:
    """A bulk for each run of BULK_SIZE retries at the start of every BULK_EVERY: the first
    retry's user, time and settings, one line per retry with the state its outcome gives."""
    members = RetryAttempt.objects.alias(slot=Mod(F("id") - 1, BULK_EVERY)).filter(
        id__lte=rows, slot__lt=BULK_SIZE
    )
    columns = ("id", "requested_by_id", "requested_at", "batch_mode", "batch_code", "outcome")
    bulks: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    for retry_id, user, at, mode, code, outcome in (
        members.order_by("id").values_list(*columns).iterator(chunk_size=20_000)
    ):
        bulk_id, position = divmod(retry_id - 1, BULK_EVERY)
        bulk_id += 1
        if position == 0:
            settings = {"batchMode": mode, **({"newBatchCode": code} if code else {})}
            bulks.append(
                dict(id=bulk_id, requested_by_id=user, requested_at=at, batch_mode=mode)
                | dict(batch_code=code, payload={"batchSettings": settings}, state="done")
                | dict(finished_at=at, form_token=f"{bulk_id:08x}-0000-4000-8000-000000000000")
            )
        lines.append(
            dict(id=len(lines) + 1, bulk_id=bulk_id, position=position, retry_id=retry_id)
            | dict(task_guid=f"{retry_id:08x}-0000-4000-8000-{bulk_id:012x}")
            | dict(state=LINE_STATES.get(outcome, "unknown"))
        )
    copy_rows(BulkRetry, bulks)
    copy_rows(BulkLine, lines)
    members.update(bulk_id=(F("id") - 1) / BULK_EVERY + 1)
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        for model in (BulkRetry, BulkLine, RetryAttempt):
            table = model._meta.db_table
            if postgres and model is not RetryAttempt:
                sequence = f"pg_get_serial_sequence('{table}', 'id')"
                cursor.execute(f"SELECT setval({sequence}, (SELECT MAX(id) FROM {table}))")  # noqa: S608
            cursor.execute(f"VACUUM ANALYZE {table}" if postgres else "ANALYZE")


def copy_rows(model, rows: list[dict]) -> None:
    """`rows` of `model` (fields not given take their defaults), by COPY on PostgreSQL."""
    table = _Table(model, connection.vendor == "postgresql")
    for row in rows:
        table.add(row)
        if len(table.batch) == 20_000:
            table.flush()
    table.flush()


def ensure_people() -> dict[str, int]:
    """Twenty clerks, two supervisors and a superuser for the admin; ids by username."""
    groups = ensure_roles()
    password = make_password(PASSWORD)  # one hash for all: each costs the full work factor
    ids = {}
    for name in [*CLERKS, *SUPERVISORS, ADMIN]:
        admin = name == ADMIN
        defaults = dict(password=password, first_name=name.capitalize(), is_staff=admin)
        defaults["is_superuser"] = admin
        user, _ = get_user_model().objects.update_or_create(username=name, defaults=defaults)
        if name != ADMIN:
            user.groups.set([groups[roles.SUPERVISORS if name in SUPERVISORS else roles.AP_STAFF]])
        ids[name] = user.pk
    return ids


def generate(rows: int, people: list[int]) -> Iterator[tuple[dict, dict | None, dict]]:
    """`rows` retry records, oldest first, with ids 1..rows and their own source GUIDs, each
    with its follow-up when it was submitted (its new task ended) and its source row."""
    rng = random.Random(20260101 + rows)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=730)
    step = (now - start - timedelta(hours=1)) / rows
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(people))]
    who = rng.choices(people, weights=weights, k=rows)

    def guid() -> str:
        h = f"{rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    for index in range(rows):
        at = start + step * index + timedelta(seconds=rng.random())
        at = at.replace(microsecond=at.microsecond // 1000 * 1000)
        mode, outcome = rng.choice(MODES), rng.choice(OUTCOMES)
        code = f"{rng.choice(CODES)}-{at:%Y-%m}-{rng.randrange(1000)}" if rng.random() < 0.7 else ""
        note = rng.choice(NOTES)
        if index % RARE_NOTE_EVERY == RARE_NOTE_EVERY // 2:
            note = f"Meter swap at site {index}"
        settings = {"batchMode": mode, **({"newBatchCode": code} if code else {})}
        payload = {"batchSettings": settings, **({"importNote": note} if note else {})}
        row = dict(id=index + 1, requested_by_id=who[index], requested_at=at, payload=payload)
        row.update(form_token=guid(), source_task_guid=guid(), source_task_id=40_000 + index)
        row.update(source_status="Completed with kickouts", batch_mode=mode, batch_code=code)
        row.update(import_note=note, outcome=outcome, answered_at=at + timedelta(seconds=1))
        if outcome != "not_sent":
            row["sent_at"] = at + timedelta(milliseconds=400)
        follow = None
        if outcome == "submitted":
            end = at + timedelta(seconds=rng.randint(30, 1800))
            new_guid = guid()
            row.update(upstream_status_code=200, new_task_guid=new_guid)
            row.update(new_task_id=90_000 + index)
            follow = dict(retry_id=index + 1, task_guid=new_guid, state="ended")
            follow.update(started_at=at + timedelta(seconds=1), finished=True)
            follow.update(status=rng.choice(FINALS), read_at=end, checked_at=end)
            follow.update(succeeded_at=end, begin_date=at + timedelta(seconds=5), end_date=end)
            follow.update(success_count=rng.randint(0, 40), analyzing_count=0)
            follow.update(flag_count=rng.randint(0, 3), batch_code=code or "AUTO")
            follow.update(notified_at=end, notification="Emailed.")
        elif outcome == "rejected":
            row.update(upstream_status_code=400, upstream_message="The batch is not open.")
        else:
            row["upstream_message"] = "EnergyCAP did not answer in time."
        source = dict(id=index + 1, retry_id=index + 1, task_guid=row["source_task_guid"])
        source.update(outcome=outcome)
        source.update(task_id=row["source_task_id"])
        yield row, follow, source


class _Table:
    """One table's rows as its model stores them, COPYed (PostgreSQL) or inserted a batch at
    a time."""

    def __init__(self, model, postgres: bool):
        fields = model._meta.concrete_fields
        self.name = model._meta.db_table
        self.columns = ", ".join(f.column for f in fields)
        self.convert = [(f.attname, f.get_default(), _converter(f, postgres)) for f in fields]
        self.postgres = postgres
        self.batch: list[list] = []

    def add(self, row: dict) -> None:
        self.batch.append([to_db(row.get(name, default)) for name, default, to_db in self.convert])

    def flush(self) -> None:
        if self.batch:
            _insert(self.batch, self.name, self.columns, self.postgres)
        self.batch = []


def load(rows: Iterator[tuple[dict, dict | None, dict]], say: Callable[[str], None]) -> None:
    """COPY on PostgreSQL, executemany on SQLite, 20,000 retries a transaction."""
    postgres = connection.vendor == "postgresql"
    retries, follows = _Table(RetryAttempt, postgres), _Table(FollowUp, postgres)
    sources = _Table(RetrySource, postgres)
    for done, (retry, follow, source) in enumerate(rows, 1):
        retries.add(retry)
        sources.add(source)
        if follow is not None:
            follows.add(follow)
        if len(retries.batch) == 20_000:
            for table in (retries, follows, sources):
                table.flush()
        if done % 200_000 == 0:
            say(f"  {done:,} rows")
    for table in (retries, follows, sources):
        table.flush()
    with connection.cursor() as cursor:
        if postgres:
            for name in ("kickouts_retryattempt", "kickouts_retrysource"):
                sequence = f"pg_get_serial_sequence('{name}', 'id')"
                cursor.execute(f"SELECT setval({sequence}, (SELECT MAX(id) FROM {name}))")  # noqa: S608
            cursor.execute("VACUUM ANALYZE kickouts_retryattempt")
            cursor.execute("VACUUM ANALYZE kickouts_followup")
            cursor.execute("VACUUM ANALYZE kickouts_retrysource")
        else:
            cursor.execute("ANALYZE")


def _converter(field, postgres: bool):
    """As Django's backend stores a value: JSON as text; on SQLite naive UTC, bare UUIDs."""
    kind = field.get_internal_type()
    if kind == "JSONField":
        return json.dumps
    if not postgres and kind == "DateTimeField":
        return lambda value: value and str(value.replace(tzinfo=None))
    if not postgres and kind == "UUIDField":
        return lambda value: value and value.replace("-", "")
    return lambda value: value


def _insert(values: list[list], table: str, columns: str, postgres: bool) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres:
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
        else:
            marks = ", ".join("?" * len(values[0]))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608
            cursor.cursor.executemany(sql, values)
