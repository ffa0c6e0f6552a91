"""Submitting a kickout retry: re-check, record first, send once, record the outcome.

This is the one place that turns a valid `RetryForm` into a POST to EnergyCAP.
"""

from __future__ import annotations

import logging

from django.db import transaction

from . import energycap, follow_up, snapshots
from .energycap import EnergyCapError, ReimportAnswer, Verdict
from .forms import BatchChoices, RetryForm
from .history_filters import forget_people_with_retries
from .models import RetryAttempt, expire_stale_submissions
from .payloads import Task

logger = logging.getLogger(__name__)


def latest_import_of(task_guid: str) -> RetryAttempt | None:
    """The latest import of this task's kickouts that may have imported them: a re-import,
    or a corrected file with this task among its sources (a record left "submitting" by a
    process that died is settled first, once its lease has passed). The latest is the one
    with the highest number in this task's duplicate sequence."""
    touching = RetryAttempt.objects.touching([task_guid])
    expire_stale_submissions(touching)
    imports = (
        touching.may_have_imported()
        .select_related("requested_by", "corrected_file")
        .prefetch_related("sources")
    )
    return max(
        imports,
        key=lambda retry: (retry.sequence_of(task_guid), retry.requested_at, retry.pk),
        default=None,
    )


def build_retry_form(data, *, user, task: Task, choices: BatchChoices, initial=None) -> RetryForm:
    return RetryForm(
        data,
        initial=initial,
        choices=choices,
        earlier_retry=latest_import_of(task.guid),
        may_repeat=user.has_perm("kickouts.confirm_duplicate_retry"),
    )


def submit_kickout_retry(
    *, user, form: RetryForm, task: Task, rechecked: bool = False
) -> RetryAttempt:
    """Send a validated retry exactly once and return its record.

    Right before sending, the task is looked at again: someone may have re-imported it in
    EnergyCAP itself since the form was opened. `rechecked` says the caller fetched `task`
    in this request, right before (the send step, beside the batches): that is the look, and
    the task is not fetched twice.

    Raises `DuplicateToken` (this form was sent already) and `RetryInFlight`
    (another retry of the task holds the slot) from `RetryAttempt.start`.
    """
    api = energycap.client()
    try:
        attempt = RetryAttempt.start(
            user=user,
            form_token=form.cleaned_data["form_token"],
            source_task=task,
            batch_mode=form.cleaned_data["batch_mode"],
            batch_code=form.batch_code(),
            import_note=form.cleaned_data.get("import_note", ""),
            payload=form.payload(),
            confirmed_duplicate_of=form.earlier_retry,
        )
    finally:
        # This user has a retry now (a refused one is recorded too): the history's
        # "Asked by" list may need them at once, not a minute later.
        forget_people_with_retries()
    send_started_retry(
        attempt, user=user, guid=task.guid, api=api, rechecked_task=task if rechecked else None
    )
    return attempt


class Recheck:
    """What the look at the task right before sending found (`send_started_retry`)."""

    SENT = "sent"  # the task could still be retried: the POST went out
    STATUS_CHANGED = "status changed"
    CHECK_FAILED = "check failed"


def send_started_retry(
    attempt: RetryAttempt, *, user, guid: str, api=None, rechecked_task: Task | None = None
) -> str:
    """The part of a retry after its record is written: the re-check of the task, one POST,
    the outcome recorded. A single retry and each import of a bulk retry go through here.

    `rechecked_task` is the task as fetched in this request right before (the send step
    fetches it beside the batches): that is the look, and the task is not fetched twice.
    Returns a `Recheck` value; the attempt holds the outcome.
    """
    api = api or energycap.client()
    # Should this process die before the answer is recorded, a sweep settles the record
    # once its lease has passed (kickouts/follow_up.py).
    follow_up.watch_submission(attempt)
    current = rechecked_task
    if current is None:
        # Right before sending, look at the task again: someone may have re-imported
        # it in EnergyCAP itself since the form was opened.
        try:
            current = api.get_task(guid)
        except EnergyCapError as exc:
            attempt.mark_not_sent(f"Not sent: the task could not be checked again. {exc.message}")
            return Recheck.CHECK_FAILED
    if not current.can_retry_kickouts:
        attempt.mark_not_sent(
            f"Not sent: the task's status is now “{current.status or 'unknown'}”"
            + ("" if current.is_bill_import else " and it is not a bill import")
            + ", and EnergyCAP only re-imports the kickouts of a bill import that is "
            "“Completed with kickouts”."
        )
        return Recheck.STATUS_CHANGED
    attempt.mark_sending()
    answer = api.reimport_kickouts(guid, attempt.payload)
    record_answer(attempt, answer)
    if answer.verdict == Verdict.ACCEPTED:
        # The import leaves the kickout queue as re-imported (kickouts/snapshots.py).
        snapshots.mark_reimported(current, user)
    logger.info(
        "Retry #%s of task %s by %s: %s (%s)",
        attempt.pk,
        guid,
        user.get_username(),
        attempt.outcome,
        answer.answer,
    )
    return Recheck.SENT


def record_answer(attempt: RetryAttempt, answer: ReimportAnswer) -> None:
    """Move the record to the outcome the client's verdict names (energycap.REIMPORT_ANSWERS):
    the verdict alone decides, never a status code."""
    words = f"{answer.message} {answer.reason}".strip()
    if answer.verdict == Verdict.ACCEPTED:
        # A worker follows the new task to its end and tells the requester
        # (kickouts/follow_up.py): the record and its follow-up commit together.
        with transaction.atomic():
            if attempt.mark_submitted(answer.new_task_guid):
                follow_up.start(attempt)
    elif answer.verdict == Verdict.REFUSED:
        attempt.mark_rejected(answer.status_code, words)
    elif answer.verdict == Verdict.NOT_SENT:
        attempt.mark_not_sent(f"Not sent: {words}")
    else:
        attempt.mark_unknown(f"{words} It is never re-sent: check the task list before retrying.")
