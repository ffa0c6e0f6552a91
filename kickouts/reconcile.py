"""Settling an "outcome unknown" retry from EnergyCAP's own task list.

A re-import (or a corrected file's import: the same for EnergyCAP) is a bill import begun by
the API key's user a few seconds after the POST, so the
candidates are the bill imports that user began between one minute before the POST and fifteen
minutes after it. The dashboard only lists them (marking a single one "likely"); a supervisor
decides: *linked* (this task is the re-import: the retry becomes submitted and is followed and
compared like any other) or *nothing was imported* (the task may be retried again without the
duplicate confirmation). Every decision and its reversal is kept as a `ReconcileDecision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from . import energycap, follow_up
from .choices import api_user
from .models import (
    Outcome,
    Reconciled,
    ReconcileDecision,
    RetryAttempt,
)
from .payloads import Task
from .queue_models import ImportSnapshot

BEFORE_POST = timedelta(minutes=1)
AFTER_POST = timedelta(minutes=15)
MAX_CANDIDATES = 100


class ReconcileError(Exception):
    """The decision cannot be made (or reversed) as asked; the message says why."""


@dataclass(frozen=True)
class Candidate:
    task: Task
    likely: bool
    # Another retry already linked to (or submitted with) this task.
    taken_by: int | None


def waiting_for_decision() -> QuerySet[RetryAttempt]:
    """The "outcome unknown" retries no supervisor has decided yet, oldest first (one partial
    index holds exactly these: `retry_waiting_decision`)."""
    return RetryAttempt.objects.filter(
        outcome=Outcome.UNKNOWN, reconciled=Reconciled.UNDECIDED
    ).order_by("requested_at", "id")


def waiting_count() -> int:
    """How many wait: the navigation's badge for supervisors (one COUNT on that index)."""
    return waiting_for_decision().order_by().count()


def is_waiting(attempt: RetryAttempt) -> bool:
    return attempt.outcome == Outcome.UNKNOWN and attempt.reconciled == Reconciled.UNDECIDED


def window(attempt: RetryAttempt):
    """When the re-import could have begun: around the POST (or the request, if never sent)."""
    sent = attempt.sent_at or attempt.requested_at
    return sent - BEFORE_POST, sent + AFTER_POST


def _energycap_time(moment) -> str:
    # EnergyCAP reads offset-less dates in its own zone (settings.ENERGYCAP_TIME_ZONE).
    zone = ZoneInfo(settings.ENERGYCAP_TIME_ZONE)
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S")


def candidates(attempt: RetryAttempt) -> list[Candidate]:
    """The bill imports the key's user began in the window, oldest first.

    Raises the client's `EnergyCapError` when EnergyCAP could not be asked.
    """
    api = energycap.client()
    start, end = window(attempt)
    clauses = [
        ("beginDate", "between", [_energycap_time(start), _energycap_time(end)]),
        ("fullName", "equals", api_user(api).full_name),
    ]
    page = api.list_bill_import_tasks(filter_clauses=clauses, page_size=MAX_CANDIDATES)
    sources = set(attempt.source_guids)
    tasks = sorted(
        (t for t in page.items if t.guid not in sources),
        key=lambda t: (t.begin_date is None, t.begin_date),
    )
    taken = dict(
        RetryAttempt.objects.filter(new_task_guid__in=[t.guid for t in tasks])
        .exclude(pk=attempt.pk)
        .values_list("new_task_guid", "pk")
    )
    free = [t for t in tasks if t.guid not in taken]
    return [
        Candidate(task=t, likely=len(free) == 1 and t.guid not in taken, taken_by=taken.get(t.guid))
        for t in tasks
    ]


def _decide(attempt: RetryAttempt, *, user, decision: str, note: str, task: Task | None = None):
    ReconcileDecision.objects.create(
        retry=attempt,
        decided_by=user,
        decision=decision,
        task_guid=task.guid if task else "",
        task_id=task.task_id if task else None,
        note=note,
    )


def _locked_unknown(pk: int) -> RetryAttempt:
    attempt = RetryAttempt.objects.select_for_update().get(pk=pk)
    if attempt.outcome != Outcome.UNKNOWN or attempt.reconciled:
        raise ReconcileError(
            "This retry is no longer “outcome unknown”: someone decided meanwhile. "
            "Reload the page to see the decision."
        )
    return attempt


def link(attempt: RetryAttempt, *, user, task_guid: str, note: str = "") -> RetryAttempt:
    """ "This is the re-import": the retry becomes submitted with that task and is followed
    from now on (its age counts from the link, however long ago the POST was)."""
    chosen = next((c for c in candidates(attempt) if c.task.guid == task_guid.lower()), None)
    if chosen is None:
        raise ReconcileError("That task is not one of this retry's candidates any more.")
    if chosen.taken_by is not None:
        raise ReconcileError(f"That task is already the new task of retry #{chosen.taken_by}.")
    with transaction.atomic():
        locked = _locked_unknown(attempt.pk)
        locked.mark_reconciled(
            Reconciled.LINKED, user=user, note=note, new_task_guid=chosen.task.guid
        )
        _decide(locked, user=user, decision=Reconciled.LINKED, note=note, task=chosen.task)
        # The source imports leave the kickout queue as at a submit.
        for source in ImportSnapshot.objects.filter(task_guid__in=locked.source_guids):
            if not source.is_handled:
                source.mark_handled(
                    user=user,
                    reason=locked.handled_reason,
                    note=f"The {locked.noun} of retry #{locked.pk}, found in EnergyCAP's task "
                    "list.",
                )
        follow_up.start(locked)
    return locked


def none_started(attempt: RetryAttempt, *, user, note: str = "") -> RetryAttempt:
    """ "Nothing was imported": the task is free to retry without the duplicate confirmation."""
    with transaction.atomic():
        locked = _locked_unknown(attempt.pk)
        locked.mark_reconciled(Reconciled.NONE_STARTED, user=user, note=note)
        _decide(locked, user=user, decision=Reconciled.NONE_STARTED, note=note)
    return locked


def reverse(attempt: RetryAttempt, *, user, note: str = "") -> RetryAttempt:
    """Undo the decision: the retry is "outcome unknown" again, as EnergyCAP left it."""
    try:
        with transaction.atomic():
            locked = RetryAttempt.objects.select_for_update().get(pk=attempt.pk)
            if not locked.reconciled:
                raise ReconcileError("There is no decision to reverse.")
            locked.unmark_reconciled()
            _decide(locked, user=user, decision=Reconciled.UNDECIDED, note=note)
    except IntegrityError:
        raise ReconcileError(
            "The task was retried again since nothing was recorded as imported; that retry "
            "holds its place now, so this decision cannot be reversed."
        ) from None
    return locked
