"""Submitting a kickout retry: re-check, record first, send once, record the outcome.

This is the one place that turns a valid `RetryForm` into a POST to EnergyCAP; it also says
which EnergyCAP calls the form needs (`batch_choice_calls`), so a page makes them at once with
its own.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from functools import partial

from django.core.cache import cache
from django.db import transaction

from . import energycap, snapshots
from .energycap import Answers, EnergyCapError, ReimportAnswer, Verdict
from .forms import BatchChoices, RetryForm
from .history_filters import forget_people_with_retries
from .models import RetryAttempt
from .payloads import CurrentUser, Task
from .tasks import start_following

logger = logging.getLogger(__name__)

API_USER_CACHE_SECONDS = 300


def _api_user_key(api: energycap.EnergyCap) -> str:
    return "energycap:me:" + hashlib.sha256(api.base_url.encode()).hexdigest()[:16]


def api_user(api: energycap.EnergyCap, answers: Answers | None = None) -> CurrentUser:
    """The key's EnergyCAP user, cached: its identity and permissions rarely change.

    `answers` may hold it already, as `me` from `batch_choice_calls`.
    """
    key = _api_user_key(api)
    user = cache.get(key)
    if user is None:
        user = (answers or Answers()).value("me", api.current_user)
        cache.set(key, user, API_USER_CACHE_SECONDS)
    return user


def batch_choice_calls(api: energycap.EnergyCap) -> dict[str, Callable]:
    """The calls the retry form needs, for `EnergyCap.at_once` beside the page's others:
    the open and pending batches, and the key's user unless it is cached."""
    calls: dict[str, Callable] = {
        "batches": partial(
            api.list_batches, filter_clauses=[("batchStatus", "one of", ["Open", "Pending"])]
        ),
    }
    if cache.get(_api_user_key(api)) is None:
        calls["me"] = api.current_user
    return calls


def load_batch_choices(api: energycap.EnergyCap, answers: Answers | None = None) -> BatchChoices:
    """The API user and the open and pending batches, from `answers` made with
    `batch_choice_calls`, or asked now, at once. Raises a call's typed error (the user's
    first). Smart batch's look-up by code comes later: the code must be valid first."""
    if answers is None or "batches" not in answers:
        answers = api.at_once(**batch_choice_calls(api))
    user = api_user(api, answers)
    return BatchChoices(
        api_user=user, batches=answers["batches"].get().items, find_by_code=api.batches_with_code
    )


def unavailable_batch_choices() -> BatchChoices:
    """No batches known (EnergyCAP did not answer): the form can only show what was typed."""
    return BatchChoices(
        api_user=CurrentUser(
            user_id=None,
            user_code="",
            full_name="",
            can_view_bills=False,
            can_create_bills=False,
            can_manage_bills=False,
        ),
        batches=[],
        find_by_code=lambda code: [],
    )


def latest_import_of(task_guid: str) -> RetryAttempt | None:
    """The newest retry of this task that may have imported its kickouts."""
    return (
        RetryAttempt.objects.filter(source_task_guid=task_guid)
        .may_have_imported()
        .select_related("requested_by")
        .order_by("-duplicate_sequence", "-requested_at")
        .first()
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
        attempt.mark_submitted(answer.new_task_guid)
        # A worker follows the new task to its end and tells the requester (kickouts/tasks.py).
        transaction.on_commit(partial(start_following, attempt.pk))
    elif answer.verdict == Verdict.REFUSED:
        attempt.mark_rejected(answer.status_code, words)
    elif answer.verdict == Verdict.NOT_SENT:
        attempt.mark_not_sent(f"Not sent: {words}")
    else:
        attempt.mark_unknown(f"{words} It is never re-sent: check the task list before retrying.")
