"""Bulk retry: one form's settings sent to several imports, once each, one after another.

The review lists what will be sent and what cannot be (and why); "Send" writes one
`BulkRetry` per one-time form token, due now. Its sweep (`send_due_bulks`, one background task
for every bulk) claims due bulks as the follow-ups' sweep claims follow-ups (a conditional
UPDATE of `due_at`, for as long as one import's re-check and POST may take) and sends each
one import through the single retry's own path (`retries.send_started_retry`): its own retry
record first, linked to the line, the re-check, one POST, the outcome classified as today. The
answer decides whether the rest go on (`_apply`). A worker that dies leaves the bulk to come
due again when its claim runs out; the line's own record then says how far it got.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Min
from django.utils import timezone
from django_tasks import TaskContext, task

from . import batch_modes, choices, energycap, follow_up, snapshots, sweeps
from .bulk_models import BulkLine, BulkRetry, BulkState, LineState
from .energycap import Answer, EnergyCapError, is_guid
from .forms import BatchChoices, BulkRetryForm
from .history_filters import forget_people_with_retries
from .models import DuplicateToken, Outcome, RetryAttempt, RetryInFlight, send_lease
from .payloads import Task
from .queue_models import ImportSnapshot, SnapshotState
from .retries import Recheck, send_started_retry


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
    loading: bool = False  # its kickouts are not stored yet (the worker fetches them)

    @property
    def sendable(self) -> bool:
        return not self.reason and (self.earlier is None or self.confirmed)

    @property
    def label(self) -> str:
        return f"Import {self.task.task_id}" if self.task and self.task.task_id else self.guid


@dataclass(frozen=True)
class Review:
    """What the bulk review shows: each selected import as a candidate, and the form's
    choices (or the typed error that kept them from the page)."""

    candidates: list[Candidate]
    choices: BatchChoices | EnergyCapError

    @property
    def sendable(self) -> list[Candidate]:
        return [c for c in self.candidates if c.sendable]


def load_review(user, guids: list[str], data=None) -> Review:
    """The selected imports and the form's batches, asked for at once through the client's
    pool; see `review_imports`."""
    api = energycap.client()
    needed = choices.choice_calls(api)
    calls = [partial(api.get_task, guid) for guid in guids]
    answers = api.at_once(*calls, *needed.calls())
    try:
        offered: BatchChoices | EnergyCapError = needed.choices(answers[len(guids) :])
    except EnergyCapError as exc:
        offered = exc
    return Review(review_imports(user, guids, answers[: len(guids)], data), offered)


def review_imports(user, guids: list[str], answers: list[Answer], data=None) -> list[Candidate]:
    """The selected imports as EnergyCAP answered (`answers`, one per GUID), with their
    kickouts and whether each can be sent.

    The kickouts come from the stored snapshots (those not stored yet are fetched in the
    background, and the review says which are still loading). `data` carries the per-import
    confirmations of duplicates (a supervisor's ticks)."""
    may_repeat = user.has_perm("kickouts.confirm_duplicate_retry")
    in_flight = set(
        RetryAttempt.objects.filter(
            source_task_guid__in=guids, outcome=Outcome.SUBMITTING
        ).values_list("source_task_guid", flat=True)
    )
    candidates = []
    for position, (guid, answer) in enumerate(zip(guids, answers, strict=True), start=1):
        candidate = Candidate(guid=guid, position=position)
        candidates.append(candidate)
        if answer.error is not None:
            candidate.reason = f"EnergyCAP could not be asked about it: {answer.error.message}"
            continue
        found = candidate.task = answer.value
        if not found.can_retry_kickouts:
            candidate.reason = (
                f"Its status is now “{found.status or 'unknown'}”: only a bill import that is "
                f"“Completed with kickouts” can be re-imported."
            )
        elif guid in in_flight:
            candidate.reason = "Another retry of this import is being sent."
        else:
            candidate.earlier = RetryAttempt.objects.latest_import_of(guid)
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
    """Each import's kickout messages and rows, from the stored snapshots; the worker stores
    those missing, and the review shows them as still loading meanwhile."""
    snapshots.register([c.task for c in candidates])
    guids = [c.guid for c in candidates]
    ready = set(
        ImportSnapshot.objects.filter(task_guid__in=guids, state=SnapshotState.READY).values_list(
            "task_guid", flat=True
        )
    )
    missing = [guid for guid in guids if guid not in ready]
    snapshots.snapshot_in_background(missing)
    counts: dict[str, list[tuple[str, int]]] = {}
    rows = (
        ImportSnapshot.objects.filter(task_guid__in=ready)
        .values_list("task_guid", "rows__message")
        .annotate(n=Count("rows"))
        .order_by("task_guid", "rows__message")
    )
    for guid, message, n in rows:
        if message is not None:
            counts.setdefault(guid, []).append((message, n))
    for candidate in candidates:
        candidate.loading = candidate.guid not in ready
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
    now = timezone.now()
    try:
        with transaction.atomic():
            bulk = BulkRetry.objects.create(
                requested_by=user,
                form_token=token,
                batch_mode=form.cleaned_data["batch_mode"],
                batch_code=form.batch_code(),
                import_note=form.cleaned_data.get("import_note", ""),
                payload=form.payload(),
                due_at=now,
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
            sweeps.wake(send_due_bulks, now)
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
    """End the bulk; every line still waiting, for which no retry record was written, is
    "not sent" with the reason. Then the requester's one email is looked at."""
    with transaction.atomic():
        if not_sent_reason:
            bulk.lines.filter(state=LineState.WAITING, retry__isnull=True).update(
                state=LineState.NOT_SENT, reason=not_sent_reason
            )
        BulkRetry.objects.filter(pk=bulk.pk, state=BulkState.SENDING).update(
            state=state, stop_reason=reason, finished_at=timezone.now(), due_at=None
        )
        follow_up.bulk_email_due(bulk.pk)


def send_next_line(bulk: BulkRetry) -> bool:
    """Send the next waiting import of the bulk; True while more remain to send.

    A line whose retry record exists was begun by a sweep that died: that record, never a
    new one, says what comes next, whatever was asked meanwhile (a cancel included)."""
    bulk.refresh_from_db()
    if not bulk.is_running:
        return False
    line = bulk.lines.filter(state=LineState.WAITING).order_by("position").first()
    if line is None:
        _finish(bulk, BulkState.DONE, "")
        return False
    token = line_token(bulk, line)
    begun = RetryAttempt.objects.filter(form_token=token).first()
    if begun is not None:
        BulkLine.objects.filter(pk=line.pk).update(retry=begun)
        resumed = _resume(bulk, line, begun)
        if resumed is not None:
            return resumed
        attempt = begun
    elif bulk.cancel_requested:
        _finish(bulk, BulkState.CANCELLED, "Cancelled.", "Not sent (cancelled).")
        return False
    else:
        user = bulk.requested_by
        source = SourceTask(line.task_guid, line.task_id, line.task_status)
        try:
            attempt = RetryAttempt.start(
                user=user,
                form_token=token,
                source_task=source,
                batch_mode=bulk.batch_mode,
                batch_code=bulk.batch_code,
                import_note=bulk.import_note,
                payload=bulk.payload,
                confirmed_duplicate_of=line.confirmed_duplicate_of,
                bulk=bulk,
            )
        except DuplicateToken as exc:
            attempt = exc.attempt
        except RetryInFlight as exc:
            _record_line(line, exc.attempt, LineState.SKIPPED, exc.attempt.upstream_message)
            return True
        finally:
            forget_people_with_retries()
        # Linked before anything is sent: from now on this line is never "not sent" unless
        # its own record proves that no POST was begun.
        BulkLine.objects.filter(pk=line.pk).update(retry=attempt)
    recheck = send_started_retry(attempt, user=bulk.requested_by, guid=line.task_guid)
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


def resendable(bulk: BulkRetry) -> list[BulkLine]:
    """Lines "not sent" whose own record proves that no POST was begun (none was written,
    or it was settled before sending): these may be sent again, in a new bulk."""
    lines = bulk.lines.filter(state=LineState.NOT_SENT).select_related("retry")
    return [
        line
        for line in lines.order_by("position")
        if line.retry is None
        or (line.retry.sent_at is None and line.retry.outcome == Outcome.NOT_SENT)
    ]


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
        mode = batch_modes.BY_VALUE[bulk.batch_mode]
        batch = bulk.batch_code or "the batch"
        holds = f", and which bills batch {bulk.batch_code} holds" if bulk.batch_code else ""
        _finish(
            bulk,
            BulkState.STOPPED,
            f"Stopped: the outcome of {name} is unknown (EnergyCAP may have started it), and in "
            f"{mode.label} mode {mode.unknown_stop.format(batch=batch)}. Check in EnergyCAP's "
            f"task list whether a re-import of {name} started{holds}, before retrying the "
            f"rest.",
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


def visible_bulks(user):
    bulks = BulkRetry.objects.all()
    if not user.has_perm("kickouts.view_all_retries"):
        bulks = bulks.filter(requested_by=user)
    return bulks


# -- the sweep that sends -------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A bulk a sweep claimed to send its next import, and the `due_at` that is the claim."""

    bulk: BulkRetry
    lease: datetime


def claim_due(now: datetime, limit: int = 10) -> list[Claim]:
    """Claim the bulks whose next import is due, each for one import's re-check and POST."""
    claims = []
    due = BulkRetry.objects.filter(state=BulkState.SENDING, due_at__lte=now).order_by("due_at")
    for bulk in due.select_related("requested_by")[:limit]:
        lease = now + send_lease()
        if BulkRetry.objects.filter(pk=bulk.pk, due_at=bulk.due_at).update(due_at=lease):
            bulk.due_at = lease
            claims.append(Claim(bulk, lease))
    return claims


def next_due(now: datetime | None = None) -> datetime | None:
    return BulkRetry.objects.filter(state=BulkState.SENDING).aggregate(at=Min("due_at"))["at"]


@task(takes_context=True)
def send_due_bulks(context: TaskContext) -> str:
    """The sweep, as the worker runs it (see `sweep`)."""
    return sweep(str(context.task_result.id))


def sweep(me: str | None = None) -> str:
    """Send the next import of each due bulk, one import per bulk and claim. `me` is the
    queued sweep's id (None: a run by hand)."""
    claims = sweeps.begin(send_due_bulks, me, claim_due, next_due)
    if claims is None:
        return "another sweep is scheduled"
    for claim in claims:
        if send_next_line(claim.bulk):
            # The next import is due at once (another sweep, so other work interleaves).
            BulkRetry.objects.filter(pk=claim.bulk.pk, due_at=claim.lease).update(
                due_at=timezone.now()
            )
    sweeps.finish(send_due_bulks, next_due())
    return f"sent one import of {len(claims)} bulk(s)"
