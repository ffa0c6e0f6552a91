"""Bulk retry: one form's settings sent to several imports, once each, one after another.

The review lists what will be sent and what cannot be (and why); "Send" writes one
`BulkRetry` per one-time form token and hands it to the worker (kickouts/tasks.py,
`send_bulk_step`), which sends one import per step through the single retry's own path
(`retries.send_started_retry`): its own retry record first, the re-check, one POST, the
outcome classified as today. The answer decides whether the rest go on (`STOP_RULES`).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from . import energycap, snapshots
from .bulk_models import BulkLine, BulkRetry, BulkState, LineState
from .energycap import EnergyCapError, is_guid
from .forms import BulkRetryForm
from .history_filters import forget_people_with_retries
from .models import DuplicateToken, Outcome, RetryAttempt, RetryInFlight
from .payloads import Task
from .queue_models import ImportSnapshot, SnapshotState
from .retries import Recheck, latest_import_of, send_started_retry
from .tasks import start_bulk

# Tasks asked for at once while the review loads the selected imports.
REVIEW_IN_FLIGHT = 4


def selected_guids(data) -> list[str]:
    """The checked imports, in the order shown, each once; anything not a GUID is dropped."""
    # "Retry all on this page" (no JavaScript) sends the page's retryable imports.
    chosen = data.getlist("page_task") if data.get("whole_page") else data.getlist("task")
    guids = [g.strip().lower() for g in chosen if is_guid(g.strip())]
    return list(dict.fromkeys(guids))


def too_many(count: int) -> str:
    """Why a selection is refused for its size, or "" when it fits."""
    limit = settings.BULK_RETRY_MAX
    if count <= limit:
        return ""
    return (
        f"{count} imports are selected; a bulk retry sends at most {limit}. Select fewer "
        f"and send the rest in another bulk."
    )


@dataclass
class Candidate:
    """One selected import as the review shows it: sendable, or why not."""

    guid: str
    position: int
    task: Task | None = None
    messages: list[tuple[str, int]] = field(default_factory=list)  # (message, rows)
    row_count: int = 0
    reason: str = ""  # why it cannot be sent
    earlier: RetryAttempt | None = None  # already re-imported: a supervisor may confirm
    confirmed: bool = False

    @property
    def sendable(self) -> bool:
        return not self.reason and (self.earlier is None or self.confirmed)

    @property
    def label(self) -> str:
        return f"Import {self.task.task_id}" if self.task and self.task.task_id else self.guid


def review_imports(user, guids: list[str], data=None) -> list[Candidate]:
    """The selected imports from EnergyCAP, with their kickouts and whether each can be sent.

    `data` carries the per-import confirmations of duplicates (a supervisor's ticks)."""
    api = energycap.client()

    def fetch(guid: str) -> Task | EnergyCapError:
        try:
            return api.get_task(guid)
        except EnergyCapError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=REVIEW_IN_FLIGHT) as pool:
        fetched = list(pool.map(fetch, guids))
    may_repeat = user.has_perm("kickouts.confirm_duplicate_retry")
    in_flight = set(
        RetryAttempt.objects.filter(
            source_task_guid__in=guids, outcome=Outcome.SUBMITTING
        ).values_list("source_task_guid", flat=True)
    )
    candidates = []
    for position, (guid, task) in enumerate(zip(guids, fetched, strict=True), start=1):
        candidate = Candidate(guid=guid, position=position)
        candidates.append(candidate)
        if isinstance(task, EnergyCapError):
            candidate.reason = f"EnergyCAP could not be asked about it: {task.message}"
            continue
        candidate.task = task
        if not task.can_retry_kickouts:
            candidate.reason = (
                f"Its status is now “{task.status or 'unknown'}”: only a bill import that is "
                f"“Completed with kickouts” can be re-imported."
            )
        elif guid in in_flight:
            candidate.reason = "Another retry of this import is being sent."
        else:
            candidate.earlier = latest_import_of(guid)
            if candidate.earlier is not None:
                if not may_repeat:
                    candidate.reason = (
                        f"Already re-imported (retry #{candidate.earlier.pk}); only a "
                        f"supervisor can re-import it again."
                    )
                elif data is not None:
                    candidate.confirmed = data.get(f"confirm_{guid}") == str(candidate.earlier.pk)
    _add_kickouts([c for c in candidates if c.task is not None])
    return candidates


def _add_kickouts(candidates: list[Candidate]) -> None:
    """Each import's kickout messages and rows, from the stored snapshots (fetched when
    missing, a few at a time)."""
    tasks = [c.task for c in candidates]
    snapshots.register(tasks)
    ready = ImportSnapshot.objects.filter(
        task_guid__in=[c.guid for c in candidates], state=SnapshotState.READY
    )
    missing = {c.guid for c in candidates} - set(ready.values_list("task_guid", flat=True))
    if missing:
        snapshots.take_snapshots(list(missing))
    counts: dict[str, list[tuple[str, int]]] = {}
    rows = (
        ImportSnapshot.objects.filter(task_guid__in=[c.guid for c in candidates])
        .values_list("task_guid", "rows__message")
        .annotate(n=Count("rows"))
        .order_by("task_guid", "rows__message")
    )
    for guid, message, n in rows:
        if message is not None:
            counts.setdefault(guid, []).append((message, n))
    for candidate in candidates:
        candidate.messages = counts.get(candidate.guid, [])
        candidate.row_count = sum(n for _, n in candidate.messages)


def build_bulk_form(data, *, choices, import_count: int, initial=None) -> BulkRetryForm:
    return BulkRetryForm(data, initial=initial, choices=choices, import_count=import_count)


def create_bulk(*, user, form: BulkRetryForm, candidates: list[Candidate]) -> BulkRetry:
    """The bulk record and its lines, once per one-time form token, handed to the worker.

    The same form posted twice returns the bulk the first one made."""
    token = form.cleaned_data["form_token"]
    existing = BulkRetry.objects.filter(form_token=token).first()
    if existing is not None:
        return existing
    sendable = [c for c in candidates if c.sendable]
    try:
        with transaction.atomic():
            bulk = BulkRetry.objects.create(
                requested_by=user,
                form_token=token,
                batch_mode=form.cleaned_data["batch_mode"],
                batch_code=form.batch_code(),
                import_note=form.cleaned_data.get("import_note", ""),
                payload=form.payload(),
            )
            BulkLine.objects.bulk_create(
                BulkLine(
                    bulk=bulk,
                    position=position,
                    task_guid=c.guid,
                    task_id=c.task.task_id if c.task else None,
                    task_status=c.task.status[:100] if c.task else "",
                    confirmed_duplicate_of=c.earlier if c.confirmed else None,
                )
                for position, c in enumerate(sendable, start=1)
            )
            transaction.on_commit(partial(start_bulk, bulk.pk))
    except IntegrityError:
        # The same form, posted twice at once: the other request made the bulk.
        return BulkRetry.objects.get(form_token=token)
    return bulk


def line_token(bulk: BulkRetry, line: BulkLine) -> uuid.UUID:
    """The one-time token of a line's retry record: the same however often a step runs."""
    return uuid.uuid5(bulk.form_token, f"line-{line.position}")


@dataclass(frozen=True)
class SourceTask:
    """What `RetryAttempt.start` records of the source task, as the review saw it."""

    guid: str
    task_id: int | None
    status: str


def _finish(bulk: BulkRetry, state: str, reason: str, not_sent_reason: str = "") -> None:
    """End the bulk; every line still waiting is "not sent" with the reason."""
    with transaction.atomic():
        if not_sent_reason:
            bulk.lines.filter(state=LineState.WAITING).update(
                state=LineState.NOT_SENT, reason=not_sent_reason
            )
        BulkRetry.objects.filter(pk=bulk.pk, state=BulkState.SENDING).update(
            state=state, stop_reason=reason, finished_at=timezone.now()
        )


def send_next_line(bulk: BulkRetry) -> bool:
    """Send the next waiting import of the bulk; True while more remain to send."""
    bulk.refresh_from_db()
    if not bulk.is_running:
        return False
    line = bulk.lines.filter(state=LineState.WAITING).order_by("position").first()
    if line is None:
        _finish(bulk, BulkState.DONE, "")
        return False
    if bulk.cancel_requested:
        _finish(bulk, BulkState.CANCELLED, "Cancelled.", "Not sent (cancelled).")
        return False
    user = bulk.requested_by
    source = SourceTask(line.task_guid, line.task_id, line.task_status)
    try:
        attempt = RetryAttempt.start(
            user=user,
            form_token=line_token(bulk, line),
            source_task=source,
            batch_mode=bulk.batch_mode,
            batch_code=bulk.batch_code,
            import_note=bulk.import_note,
            payload=bulk.payload,
            confirmed_duplicate_of=line.confirmed_duplicate_of,
            bulk=bulk,
        )
    except DuplicateToken as exc:
        # This step ran before and died: its record says how far it got.
        attempt = exc.attempt
        resumed = _resume(bulk, line, attempt)
        if resumed is not None:
            return resumed
    except RetryInFlight as exc:
        _record_line(line, exc.attempt, LineState.SKIPPED, exc.attempt.upstream_message)
        return True
    finally:
        forget_people_with_retries()
    recheck = send_started_retry(attempt, user=user, guid=line.task_guid)
    return _apply(bulk, line, attempt, recheck)


def _resume(bulk: BulkRetry, line: BulkLine, attempt: RetryAttempt) -> bool | None:
    """A line whose retry record exists already: never send it again. None when the record
    was written but nothing was sent yet (the step died before the re-check's POST), so the
    step goes on with that same record."""
    if attempt.outcome == Outcome.SUBMITTING and attempt.sent_at is None:
        return None
    if attempt.outcome == Outcome.NOT_SENT and attempt.sent_at is None:
        # Refused before any POST (another retry in flight, or the re-check): skip it.
        _record_line(line, attempt, LineState.SKIPPED, attempt.upstream_message)
        return True
    if attempt.outcome == Outcome.SUBMITTING:
        attempt.mark_unknown(
            "The worker stopped while this import was being sent; EnergyCAP may have "
            "started it. It is never re-sent: check the task list before retrying."
        )
    return _apply(bulk, line, attempt, Recheck.SENT)


def _apply(bulk: BulkRetry, line: BulkLine, attempt: RetryAttempt, recheck: str) -> bool:
    """Record the line's result and apply the stop rules; True while the bulk goes on."""
    if recheck == Recheck.STATUS_CHANGED:
        # Concerns this import only: skip it and go on.
        _record_line(line, attempt, LineState.SKIPPED, attempt.upstream_message)
        return True
    if recheck == Recheck.CHECK_FAILED:
        _record_line(line, attempt, LineState.NOT_SENT, attempt.upstream_message)
        _finish(
            bulk,
            BulkState.STOPPED,
            f"Stopped: EnergyCAP could not be asked about import {line.task_id or line.task_guid}"
            f" before sending it.",
            "Not sent: the bulk stopped because EnergyCAP could not be asked about an import.",
        )
        return False
    if attempt.outcome == Outcome.SUBMITTED:
        _record_line(line, attempt, LineState.SENT, "")
        return True
    name = f"import {line.task_id or line.task_guid}"
    if attempt.outcome == Outcome.UNKNOWN:
        _record_line(line, attempt, LineState.UNKNOWN, attempt.upstream_message)
        _finish(
            bulk,
            BulkState.STOPPED,
            f"Stopped: the outcome of {name} is unknown, and the next import could depend on "
            f"it (smart batch makes its batch on the first). Check in EnergyCAP's task list "
            f"whether a re-import of {name} started, and which batch "
            f"{bulk.batch_code or 'it'} holds, before retrying the rest.",
            f"Not sent: the bulk stopped because the outcome of {name} is unknown.",
        )
        return False
    if attempt.outcome == Outcome.NOT_SENT:
        reason = f"Nothing reached EnergyCAP for {name}"
    elif attempt.upstream_status_code == 401:
        # EnergyCAP answers 401 both for a wrong key and for a missing permission.
        reason = f"EnergyCAP refused the API key (401) for {name}"
    else:
        # The re-check just found the task retryable, so a refusal concerns the batch or
        # the key (the batch no longer open or pending, not found): the rest would fail too.
        reason = f"EnergyCAP refused {name} ({attempt.upstream_status_code or 'no status'})"
    state = LineState.NOT_SENT if attempt.outcome == Outcome.NOT_SENT else LineState.REFUSED
    _record_line(line, attempt, state, attempt.upstream_message)
    detail = attempt.upstream_message
    _finish(
        bulk,
        BulkState.STOPPED,
        f"Stopped: {reason}. {detail}".strip(),
        f"Not sent: {reason}; the rest would have been refused too. {detail}".strip(),
    )
    return False


def _record_line(line: BulkLine, attempt: RetryAttempt, state: str, reason: str) -> None:
    BulkLine.objects.filter(pk=line.pk).update(state=state, reason=reason, retry=attempt)


def cancel(bulk: BulkRetry) -> bool:
    """Ask a running bulk to stop: the import being sent finishes, the rest are not sent."""
    return bool(
        BulkRetry.objects.filter(pk=bulk.pk, state=BulkState.SENDING).update(cancel_requested=True)
    )


@dataclass
class Progress:
    total: int
    sent: int
    refused: int
    skipped: int
    unknown: int
    not_sent: int
    waiting: int

    @property
    def done(self) -> int:
        return self.total - self.waiting


def progress(bulk: BulkRetry) -> Progress:
    counts = dict(bulk.lines.values_list("state").annotate(n=Count("id")).order_by())
    return Progress(
        total=sum(counts.values()),
        sent=counts.get(LineState.SENT, 0),
        refused=counts.get(LineState.REFUSED, 0),
        skipped=counts.get(LineState.SKIPPED, 0),
        unknown=counts.get(LineState.UNKNOWN, 0),
        not_sent=counts.get(LineState.NOT_SENT, 0),
        waiting=counts.get(LineState.WAITING, 0),
    )


def with_counts(bulks):
    """Bulks with their outcome counts, for the supervisors' list (one query)."""
    return bulks.annotate(
        total=Count("lines"),
        sent=Count("lines", filter=Q(lines__state=LineState.SENT)),
        refused=Count("lines", filter=Q(lines__state=LineState.REFUSED)),
        skipped=Count("lines", filter=Q(lines__state=LineState.SKIPPED)),
        unknown=Count("lines", filter=Q(lines__state=LineState.UNKNOWN)),
        not_sent=Count("lines", filter=Q(lines__state=LineState.NOT_SENT)),
    ).select_related("requested_by")


def visible_bulks(user):
    bulks = BulkRetry.objects.all()
    if not user.has_perm("kickouts.view_all_retries"):
        bulks = bulks.filter(requested_by=user)
    return bulks
