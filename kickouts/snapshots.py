"""Snapshots of ended imports' kickouts: fetched from EnergyCAP once, then read from our tables.

An import that ended "Completed with kickouts" never changes its summary or rows, so the first
time the dashboard needs them it stores them (`ImportSnapshot`, `KickoutRow`). Fetching runs
requests concurrently in threads but never more than `MAX_IN_FLIGHT` at once; only the calling
thread touches the database.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import partial

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_tasks import task

from . import energycap, spreadsheet
from .causes import cause_key
from .energycap import Answer, EnergyCapError
from .overview_models import ImportCause, import_causes
from .payloads import KickoutGrid, KickoutSummary, Task
from .queue_models import HandledReason, ImportSnapshot, KickoutRow, QueueListing, SnapshotState

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4
LIST_PAGE_SIZE = 1000  # EnergyCAP's cap

# The grid's columns are EnergyCAP's and not fixed; these normalised names are recognised.
RECOGNISED_COLUMNS = {
    "message": {"kickoutmessage", "message", "errormessage", "error", "kickoutreason", "reason"},
    "account_code": {"accountcode", "accountnumber", "account", "accountno", "acctcode"},
    "meter_code": {"metercode", "meter", "meternumber", "meterserialnumber", "serialnumber"},
    "vendor_code": {"vendorcode", "vendor", "vendorname", "vendornumber"},
    "bill_start": {"billstartdate", "startdate", "billstart", "periodstart", "servicestartdate"},
    "bill_end": {"billenddate", "enddate", "billend", "periodend", "serviceenddate"},
    "total_cost": {"totalcost", "cost", "totalamount", "billamount", "amount", "total"},
}
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def recognise_columns(columns: Iterable[str]) -> dict[str, str]:
    """Which of the grid's columns holds the account, meter, vendor, dates, cost, message."""
    found: dict[str, str] = {}
    for column in columns:
        normal = _NOT_ALNUM.sub("", column.lower())
        for field, names in RECOGNISED_COLUMNS.items():
            if field not in found and normal in names:
                found[field] = column
    return found


def _date(value: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    for pattern in ("%Y-%m-%d", "%m/%d/%Y", "%Y-%m-%dT%H:%M:%S", "%d-%b-%Y"):
        try:
            return datetime.strptime(value[:19] if "T" in value else value, pattern).date()
        except ValueError:
            continue
    return None


def _cost(value: str) -> Decimal | None:
    text = value.strip().replace(",", "").replace("$", "")
    if not text:
        return None
    try:
        amount = Decimal(text).quantize(Decimal("0.01"))
    except InvalidOperation:
        return None
    return amount if abs(amount) < Decimal("1e12") else None


@dataclass
class Fetched:
    """What EnergyCAP said about one import: its summary and its rows (or why not)."""

    guid: str
    summary: KickoutSummary | None = None
    grid: KickoutGrid | None = None
    rows_by_message: list[tuple[str, dict[str, str]]] | None = None
    exception: EnergyCapError | None = None

    @property
    def error(self) -> str:
        return self.exception.message if self.exception else ""


@dataclass(frozen=True)
class Answered:
    """The answers to an import's summary and detail calls, made at once with a page's others
    (`kickout_calls`)."""

    summary: Answer[KickoutSummary]
    detail: Answer[KickoutGrid]


def kickout_calls(api: energycap.EnergyCap, guid: str) -> list[Callable]:
    """The summary and detail calls of an import, for `EnergyCap.at_once` beside the task's own
    GET (its GUID is known before the task answers); their answers make an `Answered`."""
    return [partial(api.kickout_summary, guid), partial(api.kickout_detail, guid)]


def fetch_kickouts(
    api: energycap.EnergyCap, guid: str, answered: Answered | None = None
) -> Fetched:
    """The summary and every row of one import: two requests (or their `answered` answers),
    more only if the grid has no message column (then one detail request per message). Runs
    in a worker thread, or in the request's with `answered`."""
    try:
        summary = answered.summary.get() if answered else api.kickout_summary(guid)
        grid = answered.detail.get() if answered else api.kickout_detail(guid)
        message_column = recognise_columns(grid.columns).get("message")
        if message_column is not None or not grid.rows:
            rows = [(row.get(message_column or "", ""), row) for row in grid.rows]
        else:
            rows = []
            for message in summary.kickout_messages:
                for row in api.kickout_detail(guid, message).rows:
                    rows.append((message, row))
    except EnergyCapError as exc:
        return Fetched(guid, exception=exc)
    return Fetched(guid, summary=summary, grid=grid, rows_by_message=rows)


def store(fetched: Fetched) -> ImportSnapshot | None:
    """Write one import's rows and mark its snapshot ready (or failed); idempotent."""
    snapshot = ImportSnapshot.objects.filter(task_guid=fetched.guid).first()
    if snapshot is None or snapshot.state == SnapshotState.READY:
        return snapshot
    now = timezone.now()
    if fetched.error:
        snapshot.state = SnapshotState.FAILED
        snapshot.fetch_error = fetched.error[:2000]
        snapshot.fetched_at = now
        snapshot.save(update_fields=["state", "fetch_error", "fetched_at"])
        return snapshot
    grid = fetched.grid
    objects = _rows(snapshot, fetched)
    try:
        with transaction.atomic():
            # The row lock makes a second worker storing the same import wait, then see READY.
            locked = ImportSnapshot.objects.select_for_update().get(pk=snapshot.pk)
            if locked.state == SnapshotState.READY:
                return locked
            KickoutRow.objects.filter(snapshot=snapshot).delete()
            KickoutRow.objects.bulk_create(objects, batch_size=1000)
            ImportCause.objects.filter(snapshot=snapshot).delete()
            ImportCause.objects.bulk_create(import_causes(snapshot, (r.message for r in objects)))
            locked.columns = list(grid.columns)
            locked.file_name = (fetched.summary.file_name or locked.file_name)[:500]
            locked.row_count = len(objects)
            locked.state = SnapshotState.READY
            locked.fetch_error = ""
            locked.fetched_at = now
            locked.save(
                update_fields=[
                    "columns",
                    "file_name",
                    "row_count",
                    "state",
                    "fetch_error",
                    "fetched_at",
                ]
            )
    except IntegrityError:
        # Another process stored the same rows first: theirs are the same snapshot.
        return ImportSnapshot.objects.get(pk=snapshot.pk)
    return locked


def _queued(task: Task) -> bool:
    """An ended bill import with kickouts: the queue keeps its kickouts."""
    return task.is_bill_import and task.has_kickouts and not task.is_running


def _snapshot_of(task: Task, **fields) -> ImportSnapshot:
    return ImportSnapshot(
        task_guid=task.guid,
        task_id=task.task_id,
        status=task.status[:100],
        begin_date=task.begin_date,
        end_date=task.end_date,
        user_full_name=task.user.full_name[:255] if task.user else "",
        batch_code=task.batch.batch_code[:255] if task.batch else "",
        **fields,
    )


def _rows(snapshot: ImportSnapshot, fetched: Fetched) -> list[KickoutRow]:
    columns = recognise_columns(fetched.grid.columns)
    objects = []
    for position, (message, cells) in enumerate(fetched.rows_by_message or []):
        get = cells.get
        objects.append(
            KickoutRow(
                snapshot=snapshot,
                position=position,
                message=message,
                cause=cause_key(message),
                cells=cells,
                account_code=get(columns.get("account_code", ""), "")[:255],
                meter_code=get(columns.get("meter_code", ""), "")[:255],
                vendor_code=get(columns.get("vendor_code", ""), "")[:255],
                bill_start=_date(get(columns.get("bill_start", ""), "")),
                bill_end=_date(get(columns.get("bill_end", ""), "")),
                total_cost=_cost(get(columns.get("total_cost", ""), "")),
            )
        )
    return objects


def csv_cells(task_id: int | None, columns: list[str], cells: dict) -> list[str]:
    """A kickout row as the downloads show it: the import's number, then the grid's columns."""
    get = cells.get
    return [str(task_id or ""), *(spreadsheet.guard(get(column)) for column in columns)]


def _store_new(task: Task, fetched: Fetched) -> ImportSnapshot | None:
    """An import seen for the first time, stored ready in one transaction (two INSERTs);
    None when another process registered it meanwhile (then `store` takes over)."""
    snapshot = _snapshot_of(
        task,
        columns=list(fetched.grid.columns),
        file_name=(fetched.summary.file_name or "")[:500],
        state=SnapshotState.READY,
        fetched_at=timezone.now(),
    )
    rows = _rows(snapshot, fetched)
    snapshot.row_count = len(rows)
    try:
        with transaction.atomic():
            snapshot.save(force_insert=True)
            KickoutRow.objects.bulk_create(rows, batch_size=1000)
            ImportCause.objects.bulk_create(import_causes(snapshot, (r.message for r in rows)))
    except IntegrityError:
        return None
    return snapshot


def register(tasks: Iterable[Task]) -> list[str]:
    """Make a "loading" snapshot for each ended import with kickouts not yet known; their
    GUIDs."""
    new = [_snapshot_of(task) for task in tasks if _queued(task)]
    if not new:
        return []
    known = set(
        ImportSnapshot.objects.filter(task_guid__in=[s.task_guid for s in new]).values_list(
            "task_guid", flat=True
        )
    )
    new = [s for s in new if s.task_guid not in known]
    ImportSnapshot.objects.bulk_create(new, ignore_conflicts=True)
    return [s.task_guid for s in new]


def register_and_read_handled(tasks: list[Task]) -> tuple[dict[str, str], list[str]]:
    """For the task list: queue the page's ended imports with kickouts, and say which of
    them are handled (GUID -> reason's label) and which are new. One query when none is new."""
    with_kickouts = [t for t in tasks if t.has_kickouts and not t.is_running]
    if not with_kickouts:
        return {}, []
    guids = [t.guid for t in with_kickouts]
    known = dict(
        ImportSnapshot.objects.filter(task_guid__in=guids).values_list(
            "task_guid", "handled_reason"
        )
    )
    new = register(t for t in with_kickouts if t.guid not in known)
    handled = {
        guid: HandledReason(reason).label
        for guid, reason in known.items()
        if reason in HandledReason.values
    }
    return handled, new


def list_period(days: int, full_name: str = "") -> list[Task]:
    """Every bill import EnergyCAP has begun in the last `days` days (all pages)."""
    api = energycap.client()
    clauses = [("beginDate", f"last {days} days", None)]
    if full_name:
        clauses.append(("fullName", "equals", full_name))
    tasks: list[Task] = []
    page_number = 1
    while True:
        page = api.list_bill_import_tasks(
            filter_clauses=clauses, page_number=page_number, page_size=LIST_PAGE_SIZE
        )
        tasks.extend(page.items)
        if not page.has_next or not page.items:
            return tasks
        page_number += 1


def listing_asked(days: int) -> datetime:
    """A listing of the period was just asked of the worker: until it finishes, the queue's
    pages say their totals may grow. Returns when it was asked."""
    now = timezone.now()
    QueueListing.record(days, asked_at=now)
    return now


def take_snapshots(guids: Iterable[str], *, max_in_flight: int = MAX_IN_FLIGHT) -> int:
    """Fetch and store the given imports' kickouts, at most `max_in_flight` imports at once.

    Fetching happens in threads; storing happens here, in the caller's thread and its database
    connection, as each import's answer arrives. Returns how many were stored.
    """
    api = energycap.client()
    pending = list(dict.fromkeys(guids))
    stored = 0
    with ThreadPoolExecutor(max_workers=max(1, max_in_flight)) as pool:
        running: set[Future] = set()
        while pending or running:
            while pending and len(running) < max_in_flight:
                running.add(pool.submit(fetch_kickouts, api, pending.pop(0)))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                fetched = future.result()
                if fetched.error:
                    logger.warning("Kickouts of %s not fetched: %s", fetched.guid, fetched.error)
                if _store_apart(fetched) is not None:
                    stored += 1
    return stored


STORE_FAILED = (
    "The dashboard could not store this import's kickouts ({error}); it tries again with the "
    "next listing. The worker's log has the details."
)


def _store_apart(fetched: Fetched) -> ImportSnapshot | None:
    """`store`, with whatever goes wrong kept to this import: it is recorded as failed (and
    tried again with the next listing) and the others of the batch still load."""
    try:
        # A savepoint: a database error leaves the caller's transaction usable.
        with transaction.atomic():
            return store(fetched)
    except Exception as exc:  # noqa: BLE001 - one bad import must not stop the others
        logger.exception("Kickouts of %s not stored", fetched.guid)
        ImportSnapshot.objects.filter(task_guid=fetched.guid).exclude(
            state=SnapshotState.READY
        ).update(
            state=SnapshotState.FAILED,
            fetch_error=STORE_FAILED.format(error=type(exc).__name__),
            fetched_at=timezone.now(),
        )
        return None


def snapshot_period(days: int, full_name: str = "") -> tuple[int, int]:
    """List the period's imports, register the new ones with kickouts, and fetch every one
    still loading or whose last fetch failed.

    Returns (new imports registered, snapshots stored). The period's record
    (`QueueListing`, not for one user's listing) says when its list last came in, or why not.
    """
    try:
        listed = list_period(days, full_name)
    except EnergyCapError as exc:
        if not full_name:
            QueueListing.record(days, error=exc.message[:2000])
        raise
    registered = len(register(listed))
    if not full_name:
        QueueListing.record(days, finished_at=timezone.now(), error="")
    loading = ImportSnapshot.objects.exclude(state=SnapshotState.READY).values_list(
        "task_guid", flat=True
    )
    return registered, take_snapshots(list(loading))


def stored(guid: str) -> ImportSnapshot | None:
    """The import's kickouts if they are stored already (nothing is asked of EnergyCAP)."""
    return ImportSnapshot.objects.filter(task_guid=guid.lower(), state=SnapshotState.READY).first()


def ensure_snapshot(task: Task, answered: Answered | None = None) -> ImportSnapshot:
    """The stored kickouts of one ended import with kickouts, fetched now if not stored yet
    (or taken from `answered`, made with `kickout_calls` beside the task's GET).

    Raises the client's `EnergyCapError` when EnergyCAP could not be asked.
    """
    snapshot = ImportSnapshot.objects.filter(task_guid=task.guid).first()
    if snapshot is not None and snapshot.state == SnapshotState.READY:
        return snapshot
    fetched = fetch_kickouts(energycap.client(), task.guid, answered)
    if snapshot is None and fetched.exception is None and _queued(task):
        made = _store_new(task, fetched)
        if made is not None:
            return made
    register([task])
    if fetched.exception is not None:
        store(fetched)
        raise fetched.exception
    return store(fetched)


def stored_kickouts(
    snapshot: ImportSnapshot, message: str | None = None
) -> tuple[KickoutSummary, KickoutGrid]:
    """A snapshot read back as EnergyCAP's summary and grid (the task page shows these)."""
    rows = list(snapshot.rows.order_by("position").values_list("message", "cells"))
    messages = list(dict.fromkeys(row_message for row_message, _ in rows))
    if message is not None:
        rows = [row for row in rows if row[0] == message]
    return (
        KickoutSummary(file_name=snapshot.file_name, kickout_messages=messages),
        KickoutGrid(columns=list(snapshot.columns), rows=[cells for _, cells in rows]),
    )


def mark_reimported(task: Task, user) -> None:
    """A re-import sent through the dashboard takes its import out of the queue by itself."""
    register([task])
    snapshot = ImportSnapshot.objects.filter(task_guid=task.guid).first()
    if snapshot is not None and snapshot.handled_reason != HandledReason.REIMPORTED:
        snapshot.mark_handled(
            user=user,
            reason=HandledReason.REIMPORTED,
            note="Re-import submitted through the dashboard.",
        )


def mark_corrected(sources: Iterable[ImportSnapshot], user, retry_pk: int) -> None:
    """A corrected file imported through the dashboard takes its source imports out of the
    queue by itself, as a re-import does."""
    for snapshot in sources:
        if snapshot.handled_reason != HandledReason.CORRECTED_FILE:
            snapshot.mark_handled(
                user=user,
                reason=HandledReason.CORRECTED_FILE,
                note=f"Corrected file imported through the dashboard (retry #{retry_pk}).",
            )


# -- in the background (Django's Tasks framework) ---------------------------------------

# The queue page asks for a fresh listing of its period at most this often (all processes).
QUEUE_REFRESH_SECONDS = 300


@task()
def refresh_kickout_queue(days: int) -> str:
    """List EnergyCAP's bill imports of the period and store the kickouts of each new one
    that ended "Completed with kickouts" (at most `MAX_IN_FLIGHT` in flight).

    Idempotent: an import already stored is never asked for again."""
    try:
        registered, stored = snapshot_period(days)
    except EnergyCapError as exc:
        # Let the next page view ask again soon, not in five minutes.
        cache.delete(_refresh_key(days))
        return f"not listed: {exc.message}"
    return f"{registered} new import(s) with kickouts, {stored} snapshot(s) taken"


@task()
def take_kickout_snapshots(guids: list[str]) -> str:
    """Store the kickouts of these imports (those not stored yet)."""
    return f"{take_snapshots(guids)} snapshot(s) taken"


def _refresh_key(days: int) -> str:
    return f"kickout-queue-refresh:{days}"


def request_queue_refresh(days: int) -> bool:
    """Enqueue a listing of the period, unless one was asked for in the last few minutes."""
    if not cache.add(_refresh_key(days), 1, timeout=QUEUE_REFRESH_SECONDS):
        return False
    transaction.on_commit(lambda: refresh_kickout_queue.enqueue(days))
    return True


def snapshot_in_background(guids: list[str]) -> None:
    """New imports with kickouts were seen (the task list, a bulk review): a worker stores
    them."""
    if guids:
        transaction.on_commit(lambda: take_kickout_snapshots.enqueue(list(guids)))
