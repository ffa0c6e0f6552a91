"""The benchmark's data: a database with N retry records, made once and reused.

Rows are realistic rather than uniform: ~25 people with very different workloads, two years of
office hours (busier lately), every outcome, batch mode and final status, and a few chains
(retries of a retry's new task, repeats a supervisor confirmed, tries again after a rejection).
Every row gets its own uuid4 source GUID except those chains, so the two partial unique
constraints of `RetryAttempt` hold.

Generation is deterministic for a row count. A finished data set leaves a marker table holding
its fingerprint (row count, generator version, migrations); a later run with the same
fingerprint and row count reuses the database instead of generating it again.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dj_database_url

GENERATOR_VERSION = "3"
BATCH_ROWS = 10_000
SEED = 20260101
PASSWORD = "bench-password-not-secret"
MARKER_TABLE = "bench_dataset"
BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"

# Who signs in during the benchmark (all are also among the people with retries, except admin).
CLERK = "carla"
SUPERVISOR = "sam"
OTHER_SUPERVISOR = "ingrid"
ADMIN = "bench-admin"
# (username, full name, role); the order is also the order of workload, heaviest first.
PEOPLE = [
    ("maria", "Maria Okafor", "AP staff"),
    (CLERK, "Carla Clerk", "AP staff"),
    ("dev", "Dev Patel", "AP staff"),
    ("lena", "Lena Fischer", "AP staff"),
    ("tom", "Tom O'Brien", "AP staff"),
    ("sofia", "Sofia Reyes", "AP staff"),
    ("ahmed", "Ahmed Haddad", "AP staff"),
    ("yuki", "Yuki Tanaka", "AP staff"),
    ("grace", "Grace Mensah", "AP staff"),
    ("li", "Li Wei", "AP staff"),
    ("olga", "Olga Ivanova", "AP staff"),
    ("pedro", "Pedro Alves", "AP staff"),
    (SUPERVISOR, "Sam Supervisor", "Supervisors"),
    ("fatima", "Fatima Zahra", "AP staff"),
    ("jonas", "Jonas Berg", "AP staff"),
    ("amara", "Amara Nwosu", "AP staff"),
    ("ravi", "Ravi Kumar", "AP staff"),
    (OTHER_SUPERVISOR, "Ingrid Holm", "Supervisors"),
    ("mateo", "Mateo Rossi", "AP staff"),
    ("chloe", "Chloe Martin", "AP staff"),
    ("kofi", "Kofi Boateng", "AP staff"),
    ("hana", "Hana Novak", "AP staff"),
    ("omar", "Omar Farouk", "AP staff"),
    ("elif", "Elif Demir", "Supervisors"),
    ("nils", "Nils Larsen", "AP staff"),
]
# Retries the status panel benchmarks watch: one of the sandbox's six-hour RUNNING_TASK_GUID
# and WATCH_COUNT more of running tasks the benchmark adds to the sandbox under these GUIDs
# (a first look at each is a cold, uncached status panel).
WATCH_COUNT = 120
WATCH_NAMESPACE = uuid.UUID("6f1c2f0e-2d7b-4f43-9a8e-be0c00000000")

BATCH_MODE_WEIGHTS = [
    ("use existing batch", 35),
    ("new batch", 20),
    ("new self-contained batch", 10),
    ("use pending batch", 15),
    ("smart batch", 20),
]
OUTCOME_WEIGHTS = [("submitted", 820), ("rejected", 90), ("not_sent", 55), ("unknown", 35)]
FINAL_STATUS_WEIGHTS = [
    ("Completed", 50),
    ("Completed with kickouts", 35),
    ("Failed", 13),
    ("Completed with errors", 2),  # an undocumented status, shown verbatim
]
REJECTIONS = [
    (400, "The batch is not open."),
    (400, "Batch code already exists."),
    (401, ""),
    (409, "The task's kickouts are being re-imported already."),
    (400, "Pending batch 907 does not belong to the API user."),
]
NOT_SENT = [
    "Not sent: EnergyCAP could not be reached (connection refused).",
    "Not sent: the task's status is now “Completed”, and EnergyCAP only re-imports the "
    "kickouts of a bill import that is “Completed with kickouts”.",
    "Not sent: another retry of this task was being sent or had just been made. Check the "
    "task's retries before trying again.",
]
UNKNOWN = (
    "EnergyCAP did not answer within 20 seconds. EnergyCAP may or may not have started the "
    "re-import: check the task list before retrying."
)
NOTES = [
    "",
    "",
    "",
    "",
    "Fixed account numbers",
    "Vendor corrected the meter codes",
    "Re-run after the account setup",
    "Second try, new batch",
    "Month-end close",
]
CODES = ["ELEC", "WATER", "GAS", "TELECOM", "STEAM", "AP", "EDI", "AUDIT"]
RECENT_POOL = 5_000


def watch_guids() -> list[str]:
    """The GUIDs of the running tasks the cold status panel benchmark watches."""
    return [str(uuid.uuid5(WATCH_NAMESPACE, f"watch-{index}")) for index in range(WATCH_COUNT)]


def sandbox_seed_task_guids() -> list[str]:
    """The sandbox's own seed bill imports, so some rows are retries of tasks the list shows."""
    from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID, SandboxState

    state = SandboxState(seed=1, task_seconds=20.0)
    # The task page benchmark shows this one's retry form to a clerk: no earlier import.
    return [
        task.task_guid
        for task in state.tasks.values()
        if task.is_bill_import and task.task_guid != API_USER_KICKOUT_TASK_GUID
    ]


@dataclass
class Dataset:
    rows: int
    reused: bool
    seconds: float
    description: str


# --- The database itself ---------------------------------------------------------------------


class NotABenchDatabase(RuntimeError):
    """DATABASE_URL names a PostgreSQL database with tables the benchmark did not make."""


def database_url_for(rows: int) -> str:
    """PostgreSQL when DATABASE_URL points at it; otherwise a SQLite file of our own under
    bench/out/ (never the SQLite file DATABASE_URL may name: the benchmark replaces its data)."""
    import os

    url = os.environ.get("DATABASE_URL", "").strip()
    if is_postgres(url):
        return url
    path = OUT_DIR / "db" / f"bench-{rows}.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://", "pgsql://"))


def _pg_admin_connection(url: str):
    import psycopg

    config = dj_database_url.parse(url)
    return psycopg.connect(
        host=config.get("HOST") or None,
        port=config.get("PORT") or None,
        user=config.get("USER") or None,
        password=config.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


def ensure_database_exists(url: str) -> None:
    if not is_postgres(url):
        return
    name = dj_database_url.parse(url)["NAME"]
    with _pg_admin_connection(url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def recreate_database(url: str) -> None:
    """Start from an empty database: a new SQLite file, or DROP and CREATE on PostgreSQL.

    A PostgreSQL database is only dropped if the benchmark made it (it has the marker table);
    an empty one is used as it is, and one with other tables (real data) is refused.
    """
    from django.db import connection, connections

    if is_postgres(url):
        tables = connection.introspection.table_names()
        if not tables:
            return  # empty already
        if MARKER_TABLE not in tables:
            raise NotABenchDatabase(
                f"{dj_database_url.parse(url)['NAME']} has tables the benchmark did not make, "
                "and the benchmark drops and refills its database. Point DATABASE_URL at a "
                "scratch database, e.g. createdb -h 127.0.0.1 -U postgres kickouts_bench."
            )
        connections.close_all()
        name = dj_database_url.parse(url)["NAME"]
        with _pg_admin_connection(url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return
    connections.close_all()
    path = Path(dj_database_url.parse(url)["NAME"])
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def fingerprint(rows: int) -> str:
    """What the data depends on: the row count, this generator and the migrations."""
    import django

    digest = hashlib.sha256(f"{GENERATOR_VERSION}|{rows}|{django.get_version()}".encode())
    migrations = BENCH_DIR.parent / "kickouts" / "migrations"
    for path in sorted(migrations.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def _stored_fingerprint() -> str | None:
    from django.db import connection

    if MARKER_TABLE not in connection.introspection.table_names():
        return None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value FROM {MARKER_TABLE} WHERE name = 'fingerprint'")  # noqa: S608
        row = cursor.fetchone()
    return row[0] if row else None


def _write_fingerprint(value: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} "
            "(name varchar(40) PRIMARY KEY, value varchar(200) NOT NULL)"
        )
        cursor.execute(f"DELETE FROM {MARKER_TABLE}")  # noqa: S608
        cursor.execute(
            f"INSERT INTO {MARKER_TABLE} (name, value) VALUES ('fingerprint', %s)",  # noqa: S608
            [value],
        )


def prepare(rows: int, url: str, say: Callable[[str], None]) -> Dataset:
    """A migrated database holding exactly `rows` retry records; reused when it already does."""
    from django.core.management import call_command
    from django.db import connection

    from kickouts.models import RetryAttempt

    started = time.monotonic()
    wanted = fingerprint(rows)
    ensure_database_exists(url)
    if _stored_fingerprint() == wanted and RetryAttempt.objects.count() == rows:
        call_command("migrate", interactive=False, verbosity=0)
        return Dataset(rows, True, time.monotonic() - started, "reused (same rows, migrations)")
    say(f"Generating {rows:,} retry records (once; later runs reuse them)…")
    recreate_database(url)
    call_command("migrate", interactive=False, verbosity=0)
    _write_fingerprint("incomplete")  # ours from now on, even if this run stops half-way
    users = ensure_people()
    load(generate(rows, users), rows, started, say)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Explicit ids were copied in: move the sequence past them.
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('kickouts_retryattempt', 'id'), "
                "(SELECT MAX(id) FROM kickouts_retryattempt))"
            )
            # Autovacuum would analyze the new table within a minute; do it now.
            cursor.execute("ANALYZE")
    _write_fingerprint(wanted)
    return Dataset(rows, False, time.monotonic() - started, "generated this run")


# --- People ------------------------------------------------------------------------------


def ensure_people() -> dict[str, int]:
    """The ~25 people with retries, in their roles, and a superuser for the admin; by username."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from kickouts.roles import ensure_roles

    user_model = get_user_model()
    groups = ensure_roles()
    # One hash for everyone: each costs PBKDF2's full work factor.
    password = make_password(PASSWORD)
    ids = {}
    for username, full_name, role in PEOPLE:
        first, _, last = full_name.partition(" ")
        user, _ = user_model.objects.update_or_create(
            username=username,
            defaults={"first_name": first, "last_name": last, "password": password},
        )
        user.groups.set([groups[role]])
        ids[username] = user.pk
    admin, _ = user_model.objects.update_or_create(
        username=ADMIN,
        defaults={"is_staff": True, "is_superuser": True, "password": password},
    )
    ids[ADMIN] = admin.pk
    return ids


# --- Rows ----------------------------------------------------------------------------------


def _weighted(rng: random.Random, pairs: list[tuple[str, int]]) -> Callable[[], str]:
    values = [value for value, _ in pairs]
    cumulative = []
    total = 0
    for _, weight in pairs:
        total += weight
        cumulative.append(total)

    def draw() -> str:
        return rng.choices(values, cum_weights=cumulative)[0]

    return draw


def _request_times(rng: random.Random, rows: int, now: datetime) -> list[datetime]:
    """Two years of office hours, weekdays mostly, busier in recent months; oldest first."""
    times = []
    start = now - timedelta(days=730)
    while len(times) < rows:
        days_ago = 729.9 * rng.random() ** 1.3
        day = (now - timedelta(days=days_ago)).date()
        if day.weekday() >= 5 and rng.random() < 0.85:
            continue
        hour = min(22.0, max(5.0, rng.gauss(15.5, 2.6)))  # UTC; ~10:30 in New York
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
            hours=hour, seconds=rng.random()
        )
        if start <= moment < now - timedelta(minutes=2):
            times.append(moment.replace(microsecond=moment.microsecond // 1000 * 1000))
    times.sort()
    return times


def generate(rows: int, users: dict[str, int]) -> Iterator[dict]:
    """`rows` retry records as dicts of column values, oldest first, ids 1..rows."""
    rng = random.Random(SEED + rows)
    now = datetime.now(UTC).replace(microsecond=0)
    people = [users[username] for username, _, _ in PEOPLE]
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(people))]
    who = rng.choices(people, weights=weights, k=rows)
    outcome_of = _weighted(rng, OUTCOME_WEIGHTS)
    mode_of = _weighted(rng, BATCH_MODE_WEIGHTS)
    final_of = _weighted(rng, FINAL_STATUS_WEIGHTS)

    def new_guid() -> str:
        return _guid(rng.getrandbits(128))

    # Chains reach back to recent rows only, as people retry what they just saw. Each pooled
    # row is used once, so no (source GUID, duplicate_sequence) pair repeats among rows that
    # may have imported, and no source has two "submitting" rows.
    with_kickouts: deque[tuple[int, str]] = deque(maxlen=RECENT_POOL)  # (id, new task GUID)
    imported: deque[tuple[int, str, int]] = deque(maxlen=RECENT_POOL)  # (id, source, sequence)
    refused: deque[str] = deque(maxlen=RECENT_POOL)  # fresh sources rejected or not sent

    times = _request_times(rng, rows, now)
    from kickouts.sandbox.state import RUNNING_TASK_GUID

    watched_new_guids = [RUNNING_TASK_GUID, *watch_guids()]
    seed_tasks = sandbox_seed_task_guids()
    # The newest rows are the watched retries; the ones before them retry the sandbox's tasks.
    first_watch = rows - len(watched_new_guids)
    first_seed = max(0, first_watch - len(seed_tasks) // 4)

    for index, requested_at in enumerate(times):
        pk = index + 1
        user_id = who[index]
        outcome = outcome_of()
        source = None
        parent_id = None
        duplicate_of = None
        sequence = 0
        pooled = False  # whether this row may become the start of a chain
        fresh = False  # a source GUID of its own
        draw = rng.random()
        if index >= first_watch:
            outcome = "submitted"
            source = new_guid()
        elif index >= first_seed:
            source = seed_tasks[(index - first_seed) * 4 % len(seed_tasks)]
            outcome = "rejected" if (index - first_seed) % 3 else "submitted"
        elif draw < 0.010 and with_kickouts:
            parent_id, source = with_kickouts.popleft()
            pooled = True
        elif draw < 0.013 and imported:
            duplicate_of, source, earlier = imported.popleft()
            sequence = earlier + 1
            pooled = True
        elif draw < 0.033 and refused:
            source = refused.popleft()
            pooled = True
        else:
            source = new_guid()
            pooled = fresh = True
            if draw > 0.9998:
                outcome = "submitting"  # a process died mid-call and nobody has looked since
        mode = mode_of()
        year_month = f"{requested_at:%Y-%m}"
        code = ""
        settings: dict = {"batchMode": mode}
        if mode == "use existing batch":
            batch_id = 900 + rng.randrange(400)
            settings["existingOpenBatchId"] = batch_id
            code = f"{rng.choice(CODES)}-{year_month}-{batch_id}"
        elif mode == "new batch":
            settings["leaveExistingBatchesOpen"] = rng.random() < 0.3
            if rng.random() < 0.6:
                code = f"{rng.choice(CODES)}-{year_month}-R{rng.randrange(1000)}"
                settings["newBatchCode"] = code
        elif mode == "new self-contained batch":
            if rng.random() < 0.5:
                code = f"SC-{year_month}-{rng.randrange(1000)}"
                settings["newBatchCode"] = code
        elif mode == "use pending batch":
            batch_id = 900 + rng.randrange(400)
            settings["pendingBatchId"] = batch_id
            code = f"PEND-{year_month}-{batch_id}"
        else:
            code = f"{rng.choice(CODES)}-{year_month}"
            settings["newBatchCode"] = code
        note = rng.choice(NOTES)
        payload: dict = {"batchSettings": settings}
        if note:
            payload["importNote"] = note
        if rng.random() < 0.1:
            payload["saveAsResolved"] = True
            payload["comment"] = "Resolved by re-import"

        row = {
            "id": pk,
            "requested_by_id": user_id,
            "requested_at": requested_at,
            "form_token": _guid(rng.getrandbits(128)),
            "source_task_guid": source,
            "source_task_id": 40_000 + index // 3,
            "source_status": "Completed with kickouts",
            "parent_id": parent_id,
            "confirmed_duplicate_of_id": duplicate_of,
            "duplicate_sequence": sequence,
            "batch_mode": mode,
            "batch_code": code,
            "import_note": note,
            "payload": payload,
            "outcome": outcome,
        }
        sent = requested_at + timedelta(milliseconds=rng.randint(150, 900))
        answered = sent + timedelta(milliseconds=rng.randint(200, 4000))
        if outcome == "submitted":
            new_task = watched_new_guids[index - first_watch] if index >= first_watch else None
            new_task = new_task or new_guid()
            row.update(
                sent_at=sent,
                answered_at=answered,
                upstream_status_code=200,
                new_task_guid=new_task,
            )
            if index < first_watch:
                status = final_of()
                begin = answered + timedelta(seconds=rng.randint(1, 30))
                end = begin + timedelta(seconds=rng.randint(20, 1800))
                success = rng.randint(0, 40)
                row.update(
                    new_task_status=status,
                    new_task_finished=True,
                    new_task_begin_date=begin,
                    new_task_end_date=end,
                    new_task_success_count=success,
                    new_task_analyzing_count=0,
                    new_task_flag_count=rng.randint(0, 3),
                    new_task_batch_code=code or f"AUTO-{year_month}-{rng.randrange(10_000)}",
                    new_task_message=(
                        "The kickout file could not be imported." if status == "Failed" else ""
                    ),
                    new_task_checked_at=end + timedelta(seconds=rng.randint(1, 600)),
                )
                if status == "Completed with kickouts" and pooled:
                    with_kickouts.append((pk, new_task))
            if pooled:
                imported.append((pk, source, sequence))
        elif outcome == "rejected":
            status_code, message = rng.choice(REJECTIONS)
            row.update(
                sent_at=sent,
                answered_at=answered,
                upstream_status_code=status_code,
                upstream_message=message or "EnergyCAP refused the API key.",
            )
            if fresh:
                refused.append(source)
        elif outcome == "not_sent":
            row.update(answered_at=requested_at + timedelta(milliseconds=300))
            row["upstream_message"] = rng.choice(NOT_SENT)
            if fresh:
                refused.append(source)
        elif outcome == "unknown":
            row.update(sent_at=sent, answered_at=sent + timedelta(seconds=20))
            row["upstream_message"] = UNKNOWN
            if pooled:
                imported.append((pk, source, sequence))
        yield row


def _guid(bits: int) -> str:
    """A version 4 UUID from 128 random bits, as text (`uuid.UUID` is 3x slower here)."""
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _batches(rows: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load(rows: Iterator[dict], total: int, started: float, say: Callable[[str], None]) -> None:
    """Insert every row in batches of BATCH_ROWS, the table's secondary indexes built after.

    COPY on PostgreSQL. On SQLite, `executemany` of plain INSERTs: the ORM's bulk_create is
    3x slower there, as SQLite's 999-variable limit cuts it to 33-row statements. Building the
    indexes once at the end (the same DDL the migrations made, read back from the database)
    is several times faster than updating eleven of them row by row.
    """
    from django.db import connection

    indexes = _secondary_indexes()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            # For this connection only: a crash mid-load just means generating again.
            cursor.execute("PRAGMA synchronous = OFF")
            cursor.execute("PRAGMA cache_size = -262144")
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    inserted = 0
    for batch in _batches(rows, BATCH_ROWS):
        _insert(batch)
        inserted += len(batch)
        if inserted % 200_000 == 0 or inserted == total:
            say(f"  {inserted:,} rows, {time.monotonic() - started:.0f} s")
    with connection.cursor() as cursor:
        for _, ddl in indexes:
            cursor.execute(ddl)
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA cache_size = -2000")
    say(f"  indexes built, {time.monotonic() - started:.0f} s")


def _secondary_indexes() -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the retry table's indexes that back no constraint."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
                "WHERE t.relname = 'kickouts_retryattempt' AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
            )
        else:
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'kickouts_retryattempt' AND sql IS NOT NULL"
            )
        return list(cursor.fetchall())


def _insert(rows: list[dict]) -> None:
    from django.db import connection, transaction

    from kickouts.models import RetryAttempt

    fields = RetryAttempt._meta.concrete_fields
    names = [f.attname for f in fields]
    defaults = [f.get_default() for f in fields]
    columns = ", ".join(f.column for f in fields)
    payload = names.index("payload")
    when = [i for i, f in enumerate(fields) if f.get_internal_type() == "DateTimeField"]
    token = names.index("form_token")
    values = []
    for row in rows:
        value = [row.get(name, default) for name, default in zip(names, defaults, strict=True)]
        value[payload] = json.dumps(value[payload])
        values.append(value)
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        sql = f"COPY kickouts_retryattempt ({columns}) FROM STDIN"
        with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for value in values:
                copy.write_row(value)
        return
    # As Django's SQLite backend stores them: naive UTC text, UUIDs as 32 hex digits.
    for value in values:
        value[token] = value[token].replace("-", "")
        for i in when:
            if value[i] is not None:
                value[i] = str(value[i].replace(tzinfo=None))
    marks = ", ".join("?" * len(fields))
    raw = connection.connection  # sqlite3's own connection: Django's runs in autocommit
    raw.execute("BEGIN")
    sql = f"INSERT INTO kickouts_retryattempt ({columns}) VALUES ({marks})"  # noqa: S608
    raw.executemany(sql, values)
    raw.execute("COMMIT")
