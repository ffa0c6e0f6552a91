"""The sandbox's world: users, batches, tasks and kickouts, seeded relative to "now".

Everything here is plain data and is NOT thread-safe: the server holds one lock around every
use. The seed is deterministic for a given seed number, but its dates are relative to the moment
of the reset, so "last 7 days" means the same rows whenever the sandbox starts.

Seed roles (the same for every seed number, so tests and dev tooling can name them):

Users: 1 ``apiimport`` "API Import Service" (the key's owner, the API user); 2 "Maria Okafor";
3 "Dev Patel"; 4 "Lena Fischer"; 5 "Tom O'Brien" (an apostrophe, for filter quoting);
6 "Sofia Reyes".

Batches:

====  ===============  =======  ==================  =========================================
id    code             status   owner               reaches
====  ===============  =======  ==================  =========================================
901   ELEC-NOV         Open     API user            existing batch by id; smart: own open
902   WATER-Q4         Open     API user            the 2nd own open batch: "exactly one" fails
903   GAS-NOV          Open     Maria Okafor        another user's open batch (needs Manage)
904   TELECOM-NOV      Open     Dev Patel
905   STEAM-ADJ        Open     Lena Fischer
906   AUDIT-HOLD       Pending  Maria Okafor        smart: pending code
907   ELEC-PENDING     Pending  API user            use pending batch (907, as in the docs)
908   WATER-PENDING    Pending  Tom O'Brien
909   ELEC-OCT         Closed   API user            smart: closed code -> new "ELEC-OCT-<guid>"
910+  AP-yyyy-mm-dd    Closed   mixed               filler, 11 of them
====  ===============  =======  ==================  =========================================

Tasks with fixed GUIDs (the rest get GUIDs from the seed): see the ``*_TASK_GUID`` constants.
``KICKOUT_TASK_GUID`` is ``Completed with kickouts`` with three messages and 12 rows;
``API_USER_KICKOUT_TASK_GUID`` has one message and three rows; ``RUNNING_TASK_GUID`` is
``Processing`` for six hours; ``FAILED_TASK_GUID``, ``COMPLETED_TASK_GUID`` are ended bill
imports; ``EXPORT_TASK_GUID`` (``ExportBills``) and ``ACCOUNT_IMPORT_TASK_GUID``
(``AccountImport``) are not bill imports. In all: 78 bill imports (72 in the last 30 days,
6 between 32 and 80 days ago; 16 ``Completed with kickouts``, 3 running, 6 ``Failed``) and
4 tasks of other types.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

BILL_IMPORT = "BillImport"
COMPLETED = "Completed"
COMPLETED_WITH_KICKOUTS = "Completed with kickouts"
FAILED = "Failed"
PROCESSING = "Processing"
OUTCOMES = (COMPLETED, COMPLETED_WITH_KICKOUTS, FAILED)

API_USER_ID = 1
KICKOUT_TASK_GUID = "7d1f3c2a-5b84-4e3f-9a61-2c8e4b7d9f10"
API_USER_KICKOUT_TASK_GUID = "b2e64a91-3c7d-4f28-8e15-9d0a6c3f5e27"
RUNNING_TASK_GUID = "c4a8e2f6-1d3b-4a97-b5c0-7e2f9d8a1b34"
FAILED_TASK_GUID = "e9b3d7a1-6f2c-4d85-a4e9-3b1c8f6d2a50"
COMPLETED_TASK_GUID = "1a6c9e4b-8d2f-4b71-9c3e-5f7a2d0b8e61"
EXPORT_TASK_GUID = "f0d2b8c6-4e1a-4c39-8b7d-6a9e3f1c5d72"
ACCOUNT_IMPORT_TASK_GUID = "5e8a1f3d-2b9c-4e60-a7d4-1c6f8b2e9a83"

API_OPEN_BATCH_IDS = (901, 902)
OTHER_USER_OPEN_BATCH_ID = 903
OTHER_USER_OPEN_BATCH_CODE = "GAS-NOV"
OWN_OPEN_BATCH_CODE = "ELEC-NOV"
PENDING_BATCH_ID = 907
PENDING_BATCH_CODE = "AUDIT-HOLD"
CLOSED_BATCH_ID = 909
CLOSED_BATCH_CODE = "ELEC-OCT"

# Seed running tasks must stay running through any test run or demo.
SEED_RUNNING_DURATION = timedelta(hours=6)

KICKOUT_MESSAGES = (
    "Account not found",
    "Meter not found for account",
    "Bill overlaps an existing bill",
    "Vendor code does not match account",
    "Total cost does not equal line item sum",
    "Bill end date is before start date",
)
END_BEFORE_START = KICKOUT_MESSAGES[5]
FAILURE_MESSAGES = (
    "The file could not be read: worksheet 'Bills' was not found.",
    "Import profile 'Standard Bill Import' does not match the columns of the file.",
    "Timed out while saving bills; no bills were imported.",
)
REIMPORT_FAILURE_MESSAGE = (
    "The kickout file could not be imported: the bill import service stopped unexpectedly."
)
TASK_NOTES = (
    "",
    "",
    "",
    "November electric bills",
    "Monthly EDI feed",
    "Imported from the AP mailbox",
    "Water Q4 true-up",
    "Re-run after the vendor fixed the account numbers",
)
VENDORS = (
    ("CONED", "ConEd"),
    ("PSEG", "PSEG"),
    ("NGRID", "NationalGrid"),
    ("DUKE", "DukeEnergy"),
    ("PGE", "PGandE"),
    ("AWWC", "AmericanWater"),
    ("XCEL", "XcelEnergy"),
)
DETAIL_COLUMNS = (
    "Kickout Message",
    "Row Number",
    "Account Code",
    "Meter Code",
    "Vendor Code",
    "Bill Start Date",
    "Bill End Date",
    "Total Cost",
    "File Name",
)


class ControlError(ValueError):
    """A control request the sandbox cannot carry out; answered 400 with this message."""


@dataclass
class User:
    user_id: int
    user_code: str
    full_name: str
    email: str

    def reference(self) -> dict[str, Any]:
        return {"userId": self.user_id, "userCode": self.user_code, "fullName": self.full_name}


@dataclass
class Permissions:
    """The API user's Bills and Batches permissions, as /me reports them."""

    view: bool = True
    create: bool = True
    edit: bool = True
    delete: bool = False
    manage: bool = False


@dataclass(frozen=True)
class TaskType:
    task_type_id: int
    code: str
    info: str


TASK_TYPES = {
    "billimport": TaskType(2, BILL_IMPORT, "Bill Import"),
    "exportbills": TaskType(9, "ExportBills", "Export Bills"),
    "accountimport": TaskType(3, "AccountImport", "Account Import"),
    "meterimport": TaskType(4, "MeterImport", "Meter Import"),
}


@dataclass(frozen=True)
class KickoutRow:
    message: str
    row_number: int
    account_code: str
    meter_code: str
    vendor_code: str
    # Text only for a row of an imported file whose dates or cost could not be read.
    bill_start: date | str
    bill_end: date | str
    total_cost: float | str
    # Rows of an imported file: the file (inside a ZIP) they came from, and their line item
    # total as the file had it.
    file_name: str | None = None
    line_item_total: float | None = None


@dataclass
class Batch:
    batch_id: int
    batch_code: str
    status: str  # "Open", "Pending" or "Closed"
    owner_id: int
    start_date: datetime
    end_date: datetime | None
    bill_count: int = 0
    running_total: float = 0.0
    note: str = ""
    flag_count: int = 0
    has_imports_with_kickout: bool = False

    @property
    def is_open(self) -> bool:
        return self.status == "Open"


@dataclass
class TaskOutcome:
    """What a task shows once it has ended."""

    status: str
    message: str | None = None
    kickouts: list[KickoutRow] = field(default_factory=list)
    success_count: int = 0
    flag_count: int = 0


@dataclass
class Task:
    task_id: int
    task_guid: str
    task_type: TaskType
    user_id: int
    begin_date: datetime
    # None: runs until someone changes it (control-added "running" tasks).
    ends_at: datetime | None
    outcome: TaskOutcome
    running_status: str = PROCESSING
    note: str = ""
    batch_id: int | None = None
    file_name: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    total_bills: int = 0
    # Side effects on the batch are applied once, when the task ends (see settle()).
    close_batch_when_done: bool = False
    settled: bool = True

    @property
    def is_bill_import(self) -> bool:
        return self.task_type.code == BILL_IMPORT

    def is_running(self, now: datetime) -> bool:
        return self.ends_at is None or now < self.ends_at

    def status_at(self, now: datetime) -> str:
        return self.running_status if self.is_running(now) else self.outcome.status

    def kickouts_at(self, now: datetime) -> list[KickoutRow]:
        return [] if self.is_running(now) else self.outcome.kickouts


def utc_now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# Compact, as ASP.NET writes JSON; ensure_ascii off, as it sends UTF-8.
encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def format_task_date(moment: datetime | None) -> str | None:
    """Task dates: UTC without offset, with milliseconds, as EnergyCAP shows some dates."""
    if moment is None:
        return None
    # isoformat, not strftime: a list of 250 tasks formats 500 dates per answer.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def format_batch_date(moment: datetime | None) -> str | None:
    """Batch dates: with an offset, as EnergyCAP shows other dates."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


class SandboxState:
    """All mutable sandbox data for one seed; rebuilt from scratch by a reset."""

    def __init__(self, seed: int, task_seconds: float, now: datetime | None = None) -> None:
        self.seed = seed
        self.task_seconds = task_seconds
        self.created_at = now or utc_now()
        self.rng = random.Random(seed)
        # A separate stream, so the outcome of a re-import does not depend on how many
        # GUIDs or batch codes were drawn before it.
        self.outcome_rng = random.Random(f"{seed}-outcomes")
        # Detail column ids are deliberately not reproducible: EnergyCAP says they change.
        self.column_rng = random.Random()
        self.next_outcomes: deque[str] = deque()
        self.users: dict[int, User] = {}
        self.api_user_id = API_USER_ID
        self.permissions = Permissions()
        self.batches: dict[int, Batch] = {}
        self.tasks: dict[str, Task] = {}
        self.next_task_id = 48100
        self.next_batch_id = 921
        self._last_column_ids: dict[str, tuple[int, ...]] = {}
        _Seeder(self, self.created_at).run()

    # --- lookups --------------------------------------------------------------------------

    @property
    def api_user(self) -> User:
        return self.users[self.api_user_id]

    def task(self, guid: str) -> Task | None:
        try:
            key = str(uuid.UUID(guid))
        except ValueError:
            return None  # a malformed GUID is simply not found, as a route would answer
        return self.tasks.get(key)

    def tasks_newest_first(self, task_type_code: str | None) -> list[Task]:
        tasks = [
            task
            for task in self.tasks.values()
            if task_type_code is None or task.task_type.code.lower() == task_type_code.lower()
        ]
        return sorted(tasks, key=lambda t: (t.begin_date, t.task_id), reverse=True)

    def batches_newest_first(self) -> list[Batch]:
        return sorted(self.batches.values(), key=lambda b: (b.start_date, b.batch_id), reverse=True)

    def new_guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    @staticmethod
    def fresh_guid() -> str:
        """A GUID for a task made at run time: unique across sandbox restarts, as in EnergyCAP,
        so a dashboard database that outlives a sandbox never sees a GUID twice."""
        return str(uuid.uuid4())

    # --- life cycle -----------------------------------------------------------------------

    def settle(self, now: datetime) -> None:
        """Apply the batch side effects of every task that has ended since the last look."""
        for task in self.tasks.values():
            if task.settled or task.is_running(now):
                continue
            task.settled = True
            batch = self.batches.get(task.batch_id) if task.batch_id is not None else None
            if batch is None:
                continue
            batch.bill_count += task.outcome.success_count
            batch.flag_count += task.outcome.flag_count
            batch.running_total = round(
                batch.running_total + 187.35 * task.outcome.success_count, 2
            )
            if task.outcome.kickouts:
                batch.has_imports_with_kickout = True
            if task.close_batch_when_done and batch.status != "Closed":
                batch.status = "Closed"
                batch.end_date = task.ends_at

    def pick_outcome(self) -> str:
        if self.next_outcomes:
            return self.next_outcomes.popleft()
        draw = self.outcome_rng.random()
        if draw < 0.50:
            return COMPLETED
        if draw < 0.85:
            return COMPLETED_WITH_KICKOUTS
        return FAILED

    def start_reimport(
        self,
        source: Task,
        *,
        batch: Batch,
        close_batch_when_done: bool,
        import_note: str,
        settings: dict[str, Any],
        now: datetime,
    ) -> Task:
        """Create the single new bill import that re-imports all kickouts of ``source``."""
        source_rows = source.outcome.kickouts
        total = len(source_rows)
        stem = (source.file_name or "import").rsplit(".", 1)[0]
        file_name = f"{stem}_kickouts.zip"
        status = self.pick_outcome()
        outcome = TaskOutcome(status=status)
        if status == COMPLETED:
            outcome.success_count = total
            outcome.flag_count = self.outcome_rng.randint(0, min(3, total))
        elif status == COMPLETED_WITH_KICKOUTS:
            outcome.kickouts = self._fewer_kickouts(source_rows, file_name)
            outcome.success_count = total - len(outcome.kickouts)
        elif status == FAILED:
            outcome.message = REIMPORT_FAILURE_MESSAGE
        else:
            # An unknown status from the outcome queue is shown verbatim, like real
            # EnergyCAP could; the bills count as imported.
            outcome.success_count = total
        task = Task(
            task_id=self._take_task_id(),
            task_guid=self.fresh_guid(),
            task_type=TASK_TYPES["billimport"],
            user_id=self.api_user_id,
            begin_date=now,
            ends_at=now + timedelta(seconds=self.task_seconds),
            outcome=outcome,
            note=import_note,
            batch_id=batch.batch_id,
            file_name=file_name,
            settings=settings,
            total_bills=total,
            close_batch_when_done=close_batch_when_done,
            settled=False,
        )
        self.tasks[task.task_guid] = task
        self.settle(now)  # a zero-second task ends at once
        return task

    def _fewer_kickouts(self, rows: list[KickoutRow], file_name: str) -> list[KickoutRow]:
        """A strict subset of the source's kickouts: fewer messages when there are several,
        fewer rows of each kept message (never zero rows, so the status stays honest)."""
        messages = list(dict.fromkeys(row.message for row in rows))
        if len(messages) > 1:
            how_many = self.outcome_rng.randint(1, len(messages) - 1)
            keep = set(self.outcome_rng.sample(messages, how_many))
            messages = [m for m in messages if m in keep]
        kept: list[KickoutRow] = []
        for message in messages:
            of_message = [row for row in rows if row.message == message]
            kept.extend(of_message[: max(1, len(of_message) // 2)])
        # Row 1 of the re-import file is its header.
        return [replace(row, row_number=index + 2) for index, row in enumerate(kept)]

    def _take_task_id(self) -> int:
        self.next_task_id += 1
        return self.next_task_id

    def take_batch_id(self) -> int:
        self.next_batch_id += 1
        return self.next_batch_id - 1

    def auto_batch_code(self, now: datetime) -> str:
        prefix = f"KO-{now:%Y%m%d}-"
        taken = {b.batch_code.lower() for b in self.batches.values()}
        number = 1
        while f"{prefix}{number}".lower() in taken:
            number += 1
        return f"{prefix}{number}"

    def create_batch(self, code: str, owner_id: int, now: datetime) -> Batch:
        batch = Batch(
            batch_id=self.take_batch_id(),
            batch_code=code,
            status="Open",
            owner_id=owner_id,
            start_date=now,
            end_date=None,
        )
        self.batches[batch.batch_id] = batch
        return batch

    def close_batch(self, batch: Batch, now: datetime) -> None:
        batch.status = "Closed"
        batch.end_date = now

    # --- JSON -----------------------------------------------------------------------------

    def task_json(self, task: Task, now: datetime) -> dict[str, Any]:
        running = task.is_running(now)
        outcome = task.outcome
        if running:
            processed = self._processed_while_running(task, now)
            success: int | None = processed
            analyzing: int | None = min(3, task.total_bills - processed)
            flags: int | None = 0
        else:
            success, analyzing, flags = outcome.success_count, 0, outcome.flag_count
        if not task.is_bill_import:
            success = analyzing = flags = None  # EnergyCAP fills these for bill imports only
        batch = self.batches.get(task.batch_id) if task.batch_id is not None else None
        user = self.users[task.user_id]
        return {
            "taskId": task.task_id,
            "taskGUId": task.task_guid,
            "taskType": {
                "taskTypeId": task.task_type.task_type_id,
                "taskTypeCode": task.task_type.code,
                "taskTypeInfo": task.task_type.info,
            },
            "beginDate": format_task_date(task.begin_date),
            "endDate": None if running else format_task_date(task.ends_at),
            "user": user.reference(),
            "message": None if running else outcome.message,
            "output": dict(task.output),
            "settings": dict(task.settings),
            "status": task.status_at(now),
            "taskNote": task.note,
            "hasAttachments": False,
            "analyzingCount": analyzing,
            "unresolvedFlagCount": flags,
            "currentSuccessCount": success,
            "batch": None
            if batch is None
            else {"batchId": batch.batch_id, "batchCode": batch.batch_code},
        }

    def _processed_while_running(self, task: Task, now: datetime) -> int:
        if task.ends_at is None:
            return 0
        length = (task.ends_at - task.begin_date).total_seconds()
        fraction = 0.0 if length <= 0 else (now - task.begin_date).total_seconds() / length
        return min(task.total_bills, math.floor(task.total_bills * max(0.0, fraction)))

    def batch_json(self, batch: Batch) -> dict[str, Any]:
        owner = self.users[batch.owner_id]
        return {
            "batchId": batch.batch_id,
            "batchCode": batch.batch_code,
            "isOpen": batch.is_open,
            "batchStatus": batch.status,
            "startDate": format_batch_date(batch.start_date),
            "endDate": format_batch_date(batch.end_date),
            "billCount": batch.bill_count,
            "runningTotal": batch.running_total,
            "note": batch.note,
            "createdBy": owner.reference(),
            "flagCount": batch.flag_count,
            "analyzingCount": 0,
            "hasImportedBills": batch.bill_count > 0,
            "hasImportsWithKickout": batch.has_imports_with_kickout,
        }

    def me_json(self) -> dict[str, Any]:
        user = self.api_user
        p = self.permissions
        return {
            "systemUserId": user.user_id,
            "systemUserCode": user.user_code,
            "fullName": user.full_name,
            "email": user.email,
            "userRoleName": "API Integration" if user.user_id == API_USER_ID else "Bill Clerk",
            "permissions": {
                "billsAndBatches": {
                    "view": p.view,
                    "create": p.create,
                    "edit": p.edit,
                    "delete": p.delete,
                    "manage": p.manage,
                }
            },
        }

    def kickout_summary(self, task: Task, now: datetime) -> dict[str, Any]:
        rows = task.kickouts_at(now)
        return {
            "fileName": task.file_name,
            "kickoutMessages": list(dict.fromkeys(row.message for row in rows)),
            "taskGuid": task.task_guid,
        }

    def kickout_detail(self, task: Task, message: str | None, now: datetime) -> dict[str, Any]:
        ids = self._fresh_column_ids(task.task_guid)
        fields = [{"id": i, "name": name} for i, name in zip(ids, DETAIL_COLUMNS, strict=True)]
        data = []
        for row in task.kickouts_at(now):
            if message is not None and row.message != message:
                continue
            values = (
                row.message,
                row.row_number,
                row.account_code,
                row.meter_code,
                row.vendor_code,
                _date_text(row.bill_start),
                _date_text(row.bill_end),
                row.total_cost,
                row.file_name or task.file_name,
            )
            data.append([{"fieldId": i, "value": v} for i, v in zip(ids, values, strict=True)])
        return {"fields": fields, "data": data}

    def _fresh_column_ids(self, task_guid: str) -> tuple[int, ...]:
        # EnergyCAP: column ids are not stable between calls. Make sure they never are here,
        # so a client that caches them fails in the sandbox and not in production.
        last = self._last_column_ids.get(task_guid)
        while True:
            ids = tuple(self.column_rng.sample(range(1, 100), len(DETAIL_COLUMNS)))
            if ids != last:
                self._last_column_ids[task_guid] = ids
                return ids

    # --- control --------------------------------------------------------------------------

    def find_user(self, *, user_id: Any = None, full_name: Any = None) -> User:
        if user_id is not None:
            if not _is_int(user_id) or user_id not in self.users:
                raise ControlError(f"no user with id {user_id!r}")
            return self.users[user_id]
        if full_name is not None:
            if not isinstance(full_name, str) or not full_name.strip():
                raise ControlError("userFullName must be a non-empty string")
            for user in self.users.values():
                if user.full_name.lower() == full_name.lower():
                    return user
            new_id = max(self.users) + 1
            code = "".join(ch for ch in full_name.lower() if ch.isalnum())[:20] or f"u{new_id}"
            user = User(new_id, code, full_name, f"{code}@example.com")
            self.users[new_id] = user
            return user
        return self.api_user

    def add_task(self, props: dict[str, Any], now: datetime) -> Task:
        type_code = _get(props, "taskTypeCode", str, BILL_IMPORT)
        task_type = TASK_TYPES.get(type_code.lower(), TaskType(99, type_code, type_code))
        user = self.find_user(user_id=props.get("userId"), full_name=props.get("userFullName"))
        messages = _get(props, "kickoutMessages", list, [])
        if not all(isinstance(m, str) and m for m in messages):
            raise ControlError("kickoutMessages must be a list of non-empty strings")
        rows_per_message = _get(props, "rowsPerMessage", int, 3)
        if rows_per_message < 1:
            raise ControlError("rowsPerMessage must be at least 1")
        begin = _get_date(props, "beginDate") or now - timedelta(minutes=10)
        if "endDate" in props:
            ends_at = _get_date(props, "endDate")
        else:
            ends_at = begin + timedelta(seconds=90)
        still_running = ends_at is None or ends_at > now
        stated = "kickoutRows" in props and bool(_get(props, "kickoutRows", list, []))
        default_status = COMPLETED_WITH_KICKOUTS if messages or stated else COMPLETED
        status = _get(props, "status", str, PROCESSING if ends_at is None else default_status)
        batch_id = props.get("batchId")
        if batch_id is not None and (not _is_int(batch_id) or batch_id not in self.batches):
            raise ControlError(f"no batch with id {batch_id!r}")
        guid_text = _get(props, "taskGUId", str, "") or self.fresh_guid()
        try:
            guid = str(uuid.UUID(guid_text))
        except ValueError:
            raise ControlError(f"taskGUId {guid_text!r} is not a GUID") from None
        if guid in self.tasks:
            raise ControlError(f"a task with GUID {guid} already exists")
        file_name = _get(props, "fileName", str, "Sandbox_import.xlsx")
        generator = _Seeder(self, now)
        kickouts = generator.kickout_rows(messages, rows_per_message, "CONED")
        if "kickoutRows" in props:
            # Rows stated exactly (tests comparing two imports' kickouts row by row).
            kickouts = _stated_rows(_get(props, "kickoutRows", list, []))
        success = _get(props, "currentSuccessCount", int, 25)
        task = Task(
            task_id=_get(props, "taskId", int, 0) or self._take_task_id(),
            task_guid=guid,
            task_type=task_type,
            user_id=user.user_id,
            begin_date=begin,
            ends_at=ends_at,
            outcome=TaskOutcome(
                status=status,
                message=_get(props, "message", str, None),
                kickouts=kickouts,
                success_count=success,
                flag_count=_get(props, "unresolvedFlagCount", int, 0),
            ),
            running_status=status if ends_at is None else PROCESSING,
            note=_get(props, "taskNote", str, ""),
            batch_id=batch_id,
            file_name=file_name,
            settings=_get(props, "settings", dict, {}),
            output=_get(props, "output", dict, {}),
            total_bills=success + len(kickouts),
            settled=not still_running,
        )
        self.tasks[guid] = task
        return task

    def add_batch(self, props: dict[str, Any], now: datetime) -> Batch:
        status = _batch_status(_get(props, "batchStatus", str, "Open"))
        owner = self.find_user(user_id=props.get("ownerUserId", self.api_user_id))
        batch_id = _get(props, "batchId", int, 0) or self.take_batch_id()
        if batch_id in self.batches:
            raise ControlError(f"a batch with id {batch_id} already exists")
        code = _get(props, "batchCode", str, "") or f"SBX-{batch_id}"
        batch = Batch(
            batch_id=batch_id,
            batch_code=code,
            status=status,
            owner_id=owner.user_id,
            start_date=_get_date(props, "startDate") or now,
            end_date=now if status == "Closed" else None,
            bill_count=_get(props, "billCount", int, 0),
            running_total=float(_get(props, "runningTotal", (int, float), 0.0)),
            note=_get(props, "note", str, ""),
            has_imports_with_kickout=_get(props, "hasImportsWithKickout", bool, False),
        )
        self.batches[batch_id] = batch
        return batch

    def update_batch(self, batch_id: int, props: dict[str, Any], now: datetime) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ControlError(f"no batch with id {batch_id}")
        if "batchStatus" in props:
            status = _batch_status(_get(props, "batchStatus", str, batch.status))
        elif "isOpen" in props:
            status = "Open" if _get(props, "isOpen", bool, batch.is_open) else "Closed"
        else:
            status = batch.status
        if status != batch.status:
            batch.status = status
            batch.end_date = now if status == "Closed" else None
        if "ownerUserId" in props:
            batch.owner_id = self.find_user(user_id=props["ownerUserId"]).user_id
        batch.batch_code = _get(props, "batchCode", str, batch.batch_code)
        batch.note = _get(props, "note", str, batch.note)
        return batch

    def update_task(self, guid: str, props: dict[str, Any], now: datetime) -> Task:
        """Change a task as someone in EnergyCAP would: its status, note or message.

        A new ``status`` ends a running task now (or, with ``endDate`` null, keeps it
        running under that status), so tests can make a task go stale under a form.
        """
        task = self.task(guid)
        if task is None:
            raise ControlError(f"no task with GUID {guid}")
        if "status" in props:
            status = _get(props, "status", str, task.outcome.status)
            if "endDate" in props and props["endDate"] is None:
                task.ends_at = None
                task.running_status = status
            else:
                if task.is_running(now):
                    task.ends_at = now
                kickouts = task.outcome.kickouts if status == COMPLETED_WITH_KICKOUTS else []
                task.outcome = TaskOutcome(
                    status=status,
                    message=task.outcome.message,
                    kickouts=kickouts,
                    success_count=task.outcome.success_count,
                    flag_count=task.outcome.flag_count,
                )
        task.note = _get(props, "taskNote", str, task.note)
        if "message" in props:
            task.outcome.message = props["message"]
        return task

    def update_me(self, props: dict[str, Any]) -> None:
        if "systemUserId" in props:
            self.api_user_id = self.find_user(user_id=props["systemUserId"]).user_id
        for name in ("view", "create", "edit", "delete", "manage"):
            if name in props:
                setattr(self.permissions, name, _get(props, name, bool, False))


class _Seeder:
    """Builds the deterministic seed world; also makes kickout rows for control-added tasks."""

    def __init__(self, state: SandboxState, now: datetime) -> None:
        self.state = state
        self.now = now
        self.rng = state.rng

    def run(self) -> None:
        self._users()
        self._batches()
        self._role_tasks()
        self._random_tasks()
        self._mark_kickout_batches()

    def _users(self) -> None:
        for user in (
            User(API_USER_ID, "apiimport", "API Import Service", "api.import@example.com"),
            User(2, "mokafor", "Maria Okafor", "maria.okafor@example.com"),
            User(3, "dpatel", "Dev Patel", "dev.patel@example.com"),
            User(4, "lfischer", "Lena Fischer", "lena.fischer@example.com"),
            User(5, "tobrien", "Tom O'Brien", "tom.obrien@example.com"),
            User(6, "sreyes", "Sofia Reyes", "sofia.reyes@example.com"),
        ):
            self.state.users[user.user_id] = user

    def _batches(self) -> None:
        roles = (
            (901, OWN_OPEN_BATCH_CODE, "Open", API_USER_ID, 3, "Electric bills from the EDI feed"),
            (902, "WATER-Q4", "Open", API_USER_ID, 9, "Water, fourth quarter"),
            (903, OTHER_USER_OPEN_BATCH_CODE, "Open", 2, 4, ""),
            (904, "TELECOM-NOV", "Open", 3, 6, ""),
            (905, "STEAM-ADJ", "Open", 4, 2, "Steam adjustments"),
            (906, PENDING_BATCH_CODE, "Pending", 2, 12, "Held for the audit review"),
            (907, "ELEC-PENDING", "Pending", API_USER_ID, 15, ""),
            (908, "WATER-PENDING", "Pending", 5, 18, ""),
            (CLOSED_BATCH_ID, CLOSED_BATCH_CODE, "Closed", API_USER_ID, 31, "October electric"),
        )
        for batch_id, code, status, owner, days_ago, note in roles:
            self._add_batch(batch_id, code, status, owner, days_ago, note)
        user_ids = sorted(self.state.users)
        for index in range(11):
            days_ago = 12 + 7 * index
            start = self.now - timedelta(days=days_ago)
            owner = self.rng.choice(user_ids)
            self._add_batch(910 + index, f"AP-{start:%Y-%m-%d}", "Closed", owner, days_ago, "")

    def _add_batch(
        self, batch_id: int, code: str, status: str, owner: int, days_ago: int, note: str
    ) -> None:
        start = self.now - timedelta(days=days_ago, minutes=self.rng.randint(0, 600))
        end = start + timedelta(days=self.rng.randint(1, 4)) if status == "Closed" else None
        bills = self.rng.randint(4, 120)
        self.state.batches[batch_id] = Batch(
            batch_id=batch_id,
            batch_code=code,
            status=status,
            owner_id=owner,
            start_date=start,
            end_date=end,
            bill_count=bills,
            running_total=round(bills * self.rng.uniform(90, 2400), 2),
            note=note,
            flag_count=self.rng.randint(0, 5),
        )

    def _role_tasks(self) -> None:
        day = timedelta(days=1)
        self._bill_import(
            KICKOUT_TASK_GUID,
            2,
            self.now - 2 * day - timedelta(hours=3),
            COMPLETED_WITH_KICKOUTS,
            batch_id=903,
            vendor=VENDORS[0],
            note="November electric bills",
            kickout_plan=[
                (KICKOUT_MESSAGES[0], 5),
                (KICKOUT_MESSAGES[1], 4),
                (KICKOUT_MESSAGES[2], 3),
            ],
        )
        self._bill_import(
            API_USER_KICKOUT_TASK_GUID,
            API_USER_ID,
            self.now - day,
            COMPLETED_WITH_KICKOUTS,
            batch_id=901,
            vendor=VENDORS[2],
            note="Monthly EDI feed",
            kickout_plan=[(KICKOUT_MESSAGES[3], 3)],
        )
        self._bill_import(
            RUNNING_TASK_GUID,
            API_USER_ID,
            self.now - timedelta(minutes=20),
            PROCESSING,
            batch_id=901,
            vendor=VENDORS[1],
            note="",
        )
        self._bill_import(
            FAILED_TASK_GUID,
            3,
            self.now - 3 * day,
            FAILED,
            batch_id=None,
            vendor=VENDORS[3],
            note="",
            message=FAILURE_MESSAGES[0],
        )
        self._bill_import(
            COMPLETED_TASK_GUID,
            4,
            self.now - 4 * day,
            COMPLETED,
            batch_id=904,
            vendor=VENDORS[4],
            note="Water Q4 true-up",
        )
        self._other_task(EXPORT_TASK_GUID, "exportbills", 5, self.now - timedelta(hours=5))
        self._other_task(ACCOUNT_IMPORT_TASK_GUID, "accountimport", 6, self.now - 6 * day)

    def _random_tasks(self) -> None:
        rng = self.rng
        recent = [PROCESSING] * 2 + [COMPLETED_WITH_KICKOUTS] * 13 + [FAILED] * 4 + [COMPLETED] * 48
        rng.shuffle(recent)
        older = [COMPLETED_WITH_KICKOUTS, FAILED, COMPLETED, COMPLETED, COMPLETED, COMPLETED]
        user_ids = sorted(self.state.users)
        open_ids = [b.batch_id for b in self.state.batches.values() if b.status == "Open"]
        closed_ids = [b.batch_id for b in self.state.batches.values() if b.status == "Closed"]
        plan = [(status, False) for status in recent] + [(status, True) for status in older]
        for index, (status, is_old) in enumerate(plan):
            if status == PROCESSING:
                begin = self.now - timedelta(minutes=rng.randint(3, 55))
            elif is_old:
                begin = self.now - timedelta(days=rng.uniform(32, 80))
            else:
                begin = self.now - timedelta(days=rng.uniform(0.05, 29))
            # The first rounds go to every user in turn, so each name has some imports.
            user_id = user_ids[index] if index < len(user_ids) else rng.choice(user_ids + [1, 1])
            if rng.random() < 0.15:
                batch_id = None
            elif begin > self.now - timedelta(days=10):
                batch_id = rng.choice(open_ids)
            else:
                batch_id = rng.choice(closed_ids)
            self._bill_import(
                self.state.new_guid(),
                user_id,
                begin,
                status,
                batch_id=batch_id,
                vendor=rng.choice(VENDORS),
                note=rng.choice(TASK_NOTES),
                message=rng.choice(FAILURE_MESSAGES) if status == FAILED else None,
            )
        self._other_task(
            self.state.new_guid(), "exportbills", 3, self.now - timedelta(days=rng.uniform(1, 20))
        )
        self._other_task(
            self.state.new_guid(), "meterimport", 4, self.now - timedelta(days=rng.uniform(1, 20))
        )

    def _bill_import(
        self,
        guid: str,
        user_id: int,
        begin: datetime,
        status: str,
        *,
        batch_id: int | None,
        vendor: tuple[str, str],
        note: str,
        message: str | None = None,
        kickout_plan: list[tuple[str, int]] | None = None,
    ) -> None:
        rng = self.rng
        begin = begin.replace(microsecond=rng.randint(0, 999) * 1000)
        extension = "csv" if rng.random() < 0.3 else "xlsx"
        file_name = f"{vendor[1]}_{begin:%Y-%m-%d}.{extension}"
        kickouts: list[KickoutRow] = []
        if status == COMPLETED_WITH_KICKOUTS:
            if kickout_plan is None:
                kickout_plan = self._random_kickout_plan()
            kickouts = self._rows_for_plan(kickout_plan, vendor[0], begin)
        success = 0 if status == FAILED else rng.randint(5, 150)
        if status == PROCESSING:
            ends_at = begin + SEED_RUNNING_DURATION
        else:
            ends_at = begin + timedelta(seconds=rng.randint(30, 900))
        task = Task(
            task_id=0,
            task_guid=guid,
            task_type=TASK_TYPES["billimport"],
            user_id=user_id,
            begin_date=begin,
            ends_at=ends_at,
            outcome=TaskOutcome(
                status=COMPLETED if status == PROCESSING else status,
                message=message,
                kickouts=kickouts,
                success_count=success,
                flag_count=0 if status == FAILED else rng.randint(0, 6),
            ),
            note=note,
            batch_id=batch_id,
            file_name=file_name,
            settings={"importProfile": "Standard Bill Import", "fileName": file_name},
            total_bills=success + len(kickouts),
            # Seed batches already count the bills of ended seed tasks.
            settled=status != PROCESSING,
        )
        self.state.tasks[guid] = task

    def _other_task(self, guid: str, type_key: str, user_id: int, begin: datetime) -> None:
        task_type = TASK_TYPES[type_key]
        begin = begin.replace(microsecond=self.rng.randint(0, 999) * 1000)
        self.state.tasks[guid] = Task(
            task_id=0,
            task_guid=guid,
            task_type=task_type,
            user_id=user_id,
            begin_date=begin,
            ends_at=begin + timedelta(seconds=self.rng.randint(20, 300)),
            outcome=TaskOutcome(status=COMPLETED),
            settings={"format": "xlsx"} if type_key == "exportbills" else {},
            output={"fileName": f"{task_type.code}_{begin:%Y%m%d}.xlsx"},
        )

    def _renumber(self) -> None:
        # Task ids follow begin dates, as in a real system.
        ordered = sorted(self.state.tasks.values(), key=lambda t: (t.begin_date, t.task_guid))
        for index, task in enumerate(ordered):
            task.task_id = 47001 + index * 3
        self.state.next_task_id = 47001 + len(ordered) * 3 + 100

    def _random_kickout_plan(self) -> list[tuple[str, int]]:
        rng = self.rng
        messages = rng.sample(KICKOUT_MESSAGES, rng.randint(1, 4))
        total = rng.randint(max(3, len(messages)), 40)
        counts = [1] * len(messages)
        for _ in range(total - len(messages)):
            counts[rng.randrange(len(messages))] += 1
        return list(zip(messages, counts, strict=True))

    def _rows_for_plan(
        self, plan: list[tuple[str, int]], vendor_code: str, begin: datetime
    ) -> list[KickoutRow]:
        rng = self.rng
        total = sum(count for _, count in plan)
        row_numbers = sorted(rng.sample(range(2, total * 4 + 2), total))
        month_start = (begin.date().replace(day=1) - timedelta(days=1)).replace(day=1)
        rows = []
        index = 0
        for message, count in plan:
            for _ in range(count):
                start = month_start + timedelta(days=rng.randint(0, 5))
                end = start + timedelta(days=rng.randint(27, 32))
                if message == END_BEFORE_START:
                    # The row's own dates are what kicked it out: a file imported again
                    # unchanged must be kicked out again for the same reason.
                    start, end = end, start
                rows.append(
                    KickoutRow(
                        message=message,
                        row_number=row_numbers[index],
                        account_code=f"ACCT-{rng.randint(100000, 999999)}",
                        meter_code=f"MTR-{rng.randint(10000, 99999)}",
                        vendor_code=vendor_code,
                        bill_start=start,
                        bill_end=end,
                        total_cost=round(rng.uniform(40, 9000), 2),
                    )
                )
                index += 1
        return rows

    def kickout_rows(
        self, messages: list[str], rows_per_message: int, vendor_code: str
    ) -> list[KickoutRow]:
        return self._rows_for_plan(
            [(message, rows_per_message) for message in messages], vendor_code, self.now
        )

    def _mark_kickout_batches(self) -> None:
        self._renumber()
        for task in self.state.tasks.values():
            if task.outcome.kickouts and task.batch_id is not None:
                self.state.batches[task.batch_id].has_imports_with_kickout = True


def _stated_rows(rows: list[Any]) -> list[KickoutRow]:
    """``kickoutRows``: dicts with message, accountCode, meterCode, billStart, billEnd."""
    stated = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("message"), str):
            raise ControlError("each of kickoutRows must be an object with a message")
        try:
            start = date.fromisoformat(row.get("billStart", "2026-01-01"))
            end = date.fromisoformat(row.get("billEnd", "2026-01-31"))
        except (TypeError, ValueError):
            raise ControlError("billStart and billEnd must be ISO dates") from None
        stated.append(
            KickoutRow(
                message=row["message"],
                row_number=index + 2,
                account_code=str(row.get("accountCode", "")),
                meter_code=str(row.get("meterCode", "")),
                vendor_code=str(row.get("vendorCode", "CONED")),
                bill_start=start,
                bill_end=end,
                total_cost=float(row.get("totalCost", 100.0)),
            )
        )
    return stated


def _date_text(value: date | str) -> str:
    return value if isinstance(value, str) else value.isoformat()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(props: dict[str, Any], name: str, kind: Any, default: Any) -> Any:
    """Read an optional control property, refusing a wrong JSON type with a clear message."""
    if name not in props or props[name] is None:
        return default
    value = props[name]
    wrong_bool = isinstance(value, bool) and kind in (int, (int, float))
    if wrong_bool or not isinstance(value, kind):
        raise ControlError(f"{name} has the wrong type: {value!r}")
    return value


def _get_date(props: dict[str, Any], name: str) -> datetime | None:
    value = props.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ControlError(f"{name} must be an ISO date-time string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ControlError(f"{name} {value!r} is not an ISO date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _batch_status(value: str) -> str:
    for status in ("Open", "Pending", "Closed"):
        if value.lower() == status.lower():
            return status
    raise ControlError(f"batchStatus must be Open, Pending or Closed, not {value!r}")
