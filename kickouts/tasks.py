"""Background work, on Django's Tasks framework (the django-tasks backport).

Tasks run in `manage.py db_worker` processes that share the queue in the dashboard's
database. Every task finds its record, does one step, records it, and enqueues its next
step with `run_after`: a task run twice, or a worker killed halfway, changes nothing.

Following a retry: each step first enqueues the next one and, in the same transaction,
writes that step's id on the retry record (`follower_task_id`) with a lease. Only the step
named there (or any step, once the lease has run out) may go on; every other step ends at
once. So one retry never has two followers, and a worker killed mid-step (even `kill -9`)
leaves the next step queued: a restarted worker follows again when it is due. While one
step waits for EnergyCAP (`follow_busy_until`), the next waits for it, so two workers never
ask about one retry at once; a worker restarted with the same `--worker-id` knows its
own earlier ask died with it and does not wait.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q, QuerySet
from django.template.loader import render_to_string
from django.utils import timezone
from django_tasks import TaskContext, TaskResultStatus, task
from django_tasks_db.models import DBTaskResult

from . import compare, snapshots, status
from .energycap import EnergyCapError
from .models import CompareState, FollowState, Outcome, RetryAttempt, UserSettings

logger = logging.getLogger(__name__)

# Young retries are asked about every STATUS_POLL_SECONDS; older ones less often.
FOLLOW_AGES = [
    (timedelta(minutes=10), 0),  # (age below, minimum seconds between asks; 0: the interval)
    (timedelta(hours=1), 30),
]
FOLLOW_OLD_SECONDS = 300
# Back off after failures: 2, 4, 8 … times the delay, at most this much.
FOLLOW_MAX_DELAY_SECONDS = 900
# How often one retry may get a rescue step while its follower seems lost.
RESCUE_EVERY_SECONDS = 60
EMAIL_ATTEMPTS = 5
# A comparison EnergyCAP did not answer is tried again this often, later each time.
COMPARE_ATTEMPTS = 4
COMPARE_AGAIN_AFTER = timedelta(minutes=5)


def follow_delay(age: timedelta, failures: int) -> float:
    """Seconds until the next ask: the polling interval while young, more as it ages."""
    delay = settings.STATUS_POLL_SECONDS
    for below, minimum in FOLLOW_AGES:
        if age < below:
            delay = max(delay, minimum)
            break
    else:
        delay = max(delay, FOLLOW_OLD_SECONDS)
    if failures:
        delay = min(FOLLOW_MAX_DELAY_SECONDS, delay * 2 ** min(failures, 10))
    return delay


def lease_margin() -> timedelta:
    """How long past its due time a step keeps its claim: one step's longest ask, plus two
    polling intervals of a busy worker. After that, a rescue step may take over."""
    one_get = settings.ENERGYCAP_CONNECT_TIMEOUT + settings.ENERGYCAP_READ_TIMEOUT
    step = settings.ENERGYCAP_GET_ATTEMPTS * one_get + settings.ENERGYCAP_MAX_RETRY_AFTER
    return timedelta(seconds=step + 2 * settings.STATUS_POLL_SECONDS)


def _claimable(retry_id: int, step_id: str, now: datetime) -> QuerySet[RetryAttempt]:
    """The retry, if this step may follow it: named as the next step, or the lease ran out."""
    return RetryAttempt.objects.filter(pk=retry_id, follow_state=FollowState.FOLLOWING).filter(
        Q(follower_task_id=step_id)
        | Q(follower_task_id="")
        | Q(follow_lease_until__isnull=True)
        | Q(follow_lease_until__lt=now)
    )


def start_following(retry_id: int) -> bool:
    """Follow a submitted retry's new task from now on (after the retry is committed)."""
    now = timezone.now()
    with transaction.atomic():
        first = follow_retry.enqueue(retry_id)
        started = (
            RetryAttempt.objects.filter(
                pk=retry_id, outcome=Outcome.SUBMITTED, follow_state=FollowState.NOT_FOLLOWED
            )
            .exclude(new_task_guid="")
            .update(
                follow_state=FollowState.FOLLOWING,
                follower_task_id=str(first.id),
                follow_next_at=now,
                follow_lease_until=now + lease_margin(),
            )
        )
        if not started:
            # Not submitted, no new task (outcome unknown), or followed already.
            transaction.set_rollback(True)
    return bool(started)


@task(takes_context=True)
def follow_retry(context: TaskContext, retry_id: int) -> str:
    """One follow-up of a retry's new task: claim, schedule the next, ask, record."""
    step_id = str(context.task_result.id)
    worker_ids = context.task_result.worker_ids
    worker_id = worker_ids[-1] if worker_ids else ""
    now = timezone.now()
    attempt = RetryAttempt.objects.filter(pk=retry_id).first()
    if attempt is None or attempt.follow_state != FollowState.FOLLOWING:
        return "not followed"
    if not _claimable(retry_id, step_id, now).exists():
        return "followed by another step"
    age = now - (attempt.answered_at or attempt.requested_at)
    if age.total_seconds() > settings.FOLLOW_UP_MAX_SECONDS:
        hours = settings.FOLLOW_UP_MAX_SECONDS / 3600
        stopped = _claimable(retry_id, step_id, now).update(
            follow_state=FollowState.STOPPED,
            follow_stopped_reason=(
                f"Stopped following after {hours:g} hours: the new import had not ended. "
                "Check it in EnergyCAP, or open this page to look again."
            ),
            follower_task_id="",
            follow_next_at=None,
            follow_lease_until=None,
            follow_busy_until=None,
        )
        return "stopped: too old" if stopped else "followed by another step"
    # The previous step may still be waiting for EnergyCAP on another worker (a slow
    # answer outlasts the interval): wait one interval for it rather than ask twice.
    busy = (
        attempt.follow_busy_until is not None
        and attempt.follow_busy_until > now
        and attempt.follow_worker_id != worker_id
    )
    if busy:
        next_at = now + timedelta(seconds=settings.STATUS_POLL_SECONDS)
    else:
        next_at = now + timedelta(seconds=follow_delay(age, attempt.follow_failures))
    with transaction.atomic():
        next_step = follow_retry.using(run_after=next_at).enqueue(retry_id)
        values = {
            "follower_task_id": str(next_step.id),
            "follow_next_at": next_at,
            "follow_lease_until": next_at + lease_margin(),
        }
        if not busy:
            values.update(follow_busy_until=now + lease_margin(), follow_worker_id=worker_id)
        claimed = _claimable(retry_id, step_id, now).update(**values)
        if not claimed:
            transaction.set_rollback(True)  # the next step too: another follower has it
            return "followed by another step"
    if busy:
        return "waited for the previous step"
    reading = status.fetch_task_status(attempt.new_task_guid)
    if not reading.ok:
        # Moved before the failure is recorded: whoever reads the failure sees the new time.
        _back_off(retry_id, str(next_step.id), age, next_at, attempt.follow_failures + 1)
    status.record_reading(attempt, reading, follower=True)
    adopt_lost_followers(exclude=retry_id)
    if not reading.ok:
        logger.warning("Retry #%s: EnergyCAP did not answer: %s", retry_id, reading.error)
        return f"asked, no answer: {reading.error}"
    return f"asked: {reading.task.status or 'no status'}"


def _back_off(
    retry_id: int, next_step_id: str, age: timedelta, next_at: datetime, failures: int
) -> None:
    """After a failed ask, move the queued next step later: 2, 4, 8 … intervals."""
    later = timezone.now() + timedelta(seconds=follow_delay(age, failures))
    if later <= next_at:
        return
    with transaction.atomic():
        moved = DBTaskResult.objects.filter(id=next_step_id, status=TaskResultStatus.READY).update(
            run_after=later
        )
        if moved:
            RetryAttempt.objects.filter(pk=retry_id, follower_task_id=next_step_id).update(
                follow_next_at=later, follow_lease_until=later + lease_margin()
            )


def rescue_follower(attempt: RetryAttempt) -> bool:
    """Enqueue a step for a followed retry whose follower seems lost (lease ran out).

    Harmless if the follower was only late: the first step to run claims the retry and
    the others end. At most one rescue per retry a minute, however many pages ask.
    """
    now = timezone.now()
    if attempt.follow_state != FollowState.FOLLOWING:
        return False
    if attempt.follow_lease_until is not None and attempt.follow_lease_until >= now:
        return False
    if not cache.add(f"follow-rescue:{attempt.pk}", 1, timeout=RESCUE_EVERY_SECONDS):
        return False
    follow_retry.enqueue(attempt.pk)
    logger.warning("Retry #%s: its follower seemed lost; enqueued another", attempt.pk)
    return True


def adopt_lost_followers(*, exclude: int | None = None, limit: int = 20) -> int:
    """Rescue followed retries whose lease ran out (a step lost between being taken from
    the queue and claiming its retry, e.g. by `kill -9`)."""
    lost = (
        RetryAttempt.objects.filter(follow_state=FollowState.FOLLOWING)
        .filter(Q(follow_lease_until__lt=timezone.now()) | Q(follow_lease_until__isnull=True))
        .exclude(pk=exclude)
    )
    return sum(rescue_follower(attempt) for attempt in lost[:limit])


@task()
def notify_requester(retry_id: int, attempt_number: int = 1) -> str:
    """Compare the kickouts before and after (kickouts/compare.py), then email the requester
    that the new import ended and what it fixed, once per retry."""
    now = timezone.now()
    _compare(retry_id)
    claimed = RetryAttempt.objects.filter(pk=retry_id, notified_at__isnull=True).update(
        notified_at=now
    )
    if not claimed:
        return "already notified"
    attempt = RetryAttempt.objects.select_related("requested_by").get(pk=retry_id)
    user = attempt.requested_by
    if not user.email:
        note = "Not emailed: the requester has no email address."
    elif not UserSettings.of(user).email_when_retry_ends:
        note = "Not emailed: the requester turned these emails off."
    else:
        subject, body = retry_ended_email(attempt)
        try:
            send_mail(subject, body, None, [user.email])
        except (OSError, smtplib.SMTPException) as exc:
            # Not sent: free the claim, and try again later (a few times).
            RetryAttempt.objects.filter(pk=retry_id).update(
                notified_at=None, notification=f"Email failed: {type(exc).__name__}"
            )
            if attempt_number < EMAIL_ATTEMPTS:
                notify_requester.using(
                    run_after=now + timedelta(minutes=5 * attempt_number)
                ).enqueue(retry_id, attempt_number + 1)
            logger.warning("Retry #%s: the email failed: %s", retry_id, exc)
            return f"email failed: {type(exc).__name__}"
        note = f"Emailed to {user.email}."
    RetryAttempt.objects.filter(pk=retry_id).update(notification=note)
    return note


def _compare(retry_id: int) -> str:
    """Before the email: what the new import fixed. Never stops the email; when EnergyCAP
    did not answer, a later step tries again (`compare_kickouts`)."""
    attempt = RetryAttempt.objects.select_related("requested_by").filter(pk=retry_id).first()
    if attempt is None:
        return "no such retry"
    try:
        state = compare.compare_retry(attempt)
    except Exception:  # noqa: BLE001 - the requester is told of the end all the same
        logger.exception("Retry #%s: the kickouts could not be compared", retry_id)
        return "not compared"
    if state == CompareState.ERROR and compare.worth_trying_again(attempt):
        compare_kickouts.using(run_after=timezone.now() + COMPARE_AGAIN_AFTER).enqueue(retry_id, 2)
    return state


@task()
def compare_kickouts(retry_id: int, attempt_number: int = 1) -> str:
    """Compare again after EnergyCAP failed to answer, a few times, minutes apart."""
    attempt = RetryAttempt.objects.select_related("requested_by").filter(pk=retry_id).first()
    if attempt is None:
        return "no such retry"
    state = compare.compare_retry(attempt)
    if (
        state == CompareState.ERROR
        and compare.worth_trying_again(attempt)
        and attempt_number < COMPARE_ATTEMPTS
    ):
        compare_kickouts.using(
            run_after=timezone.now() + COMPARE_AGAIN_AFTER * attempt_number
        ).enqueue(retry_id, attempt_number + 1)
    return state


def retry_ended_email(attempt: RetryAttempt) -> tuple[str, str]:
    """The subject and text body telling the requester how the new import ended."""
    context = {
        "attempt": attempt,
        "source_name": (
            f"Bill Import {attempt.source_task_id}"
            if attempt.source_task_id is not None
            else f"bill import {attempt.source_task_guid}"
        ),
        "retry_url": settings.DASHBOARD_URL.rstrip("/") + attempt.get_absolute_url(),
        "counts": " · ".join(
            "–" if count is None else str(count)
            for count in (
                attempt.new_task_success_count,
                attempt.new_task_analyzing_count,
                attempt.new_task_flag_count,
            )
        ),
    }
    if attempt.compare_state == CompareState.COMPARED:
        context["groups"] = compare.by_message(attempt.compare_rows)
    subject = render_to_string("kickouts/email/retry_ended_subject.txt", context)
    body = render_to_string("kickouts/email/retry_ended.txt", context)
    return " ".join(subject.split()), body


def email_note(attempt: RetryAttempt, viewer) -> str:
    """What the retry page says about the email to the requester."""
    if attempt.notification:
        return attempt.notification
    if not attempt.is_followed:
        return ""
    user = attempt.requested_by
    yours = user.pk == viewer.pk
    if not user.email:
        return (
            "You have no email address here, so no email will tell you when it ends."
            if yours
            else "The requester has no email address here, so no email will be sent."
        )
    if not UserSettings.of(user).email_when_retry_ends:
        return "Email turned off in Your settings." if yours else "The requester turned emails off."
    if attempt.follow_state == FollowState.FOLLOWING:
        return f"An email goes to {user.email} when the new import ends."
    return ""


# -- the kickout queue --

# The queue page asks for a fresh listing of its period at most this often (all processes).
QUEUE_REFRESH_SECONDS = 300


@task()
def refresh_kickout_queue(days: int) -> str:
    """List EnergyCAP's bill imports of the period and store the kickouts of each new one
    that ended "Completed with kickouts" (at most `snapshots.MAX_IN_FLIGHT` in flight).

    Idempotent: an import already stored is never asked for again."""
    try:
        registered, stored = snapshots.snapshot_period(days)
    except EnergyCapError as exc:
        # Let the next page view ask again soon, not in five minutes.
        cache.delete(_refresh_key(days))
        return f"not listed: {exc.message}"
    return f"{registered} new import(s) with kickouts, {stored} snapshot(s) taken"


@task()
def take_kickout_snapshots(guids: list[str]) -> str:
    """Store the kickouts of these imports (those not stored yet)."""
    return f"{snapshots.take_snapshots(guids)} snapshot(s) taken"


def _refresh_key(days: int) -> str:
    return f"kickout-queue-refresh:{days}"


def request_queue_refresh(days: int) -> bool:
    """Enqueue a listing of the period, unless one was asked for in the last few minutes."""
    if not cache.add(_refresh_key(days), 1, timeout=QUEUE_REFRESH_SECONDS):
        return False
    transaction.on_commit(lambda: refresh_kickout_queue.enqueue(days))
    return True


def snapshot_in_background(guids: list[str]) -> None:
    """The task list found new imports with kickouts: a worker stores them."""
    if guids:
        transaction.on_commit(lambda: take_kickout_snapshots.enqueue(list(guids)))


# -- bulk retries: one import per step, never two POSTs of one bulk at once --


def bulk_step_margin() -> timedelta:
    """The longest one import's step can take: the re-check (with its retries) and the POST."""
    one_call = settings.ENERGYCAP_CONNECT_TIMEOUT + settings.ENERGYCAP_READ_TIMEOUT
    recheck = settings.ENERGYCAP_GET_ATTEMPTS * one_call + settings.ENERGYCAP_MAX_RETRY_AFTER
    return timedelta(seconds=recheck + one_call + 5)


def start_bulk(bulk_id: int) -> None:
    """Hand a bulk retry to the worker (after the bulk is committed)."""
    from .bulk_models import BulkRetry

    with transaction.atomic():
        first = send_bulk_step.enqueue(bulk_id)
        BulkRetry.objects.filter(pk=bulk_id, step_task_id="").update(step_task_id=str(first.id))


@task(takes_context=True)
def send_bulk_step(context: TaskContext, bulk_id: int) -> str:
    """Send the next import of a bulk retry, then hand over to the next step.

    Before it sends, a step queues its successor and names it on the bulk (with, until when
    and on which worker it is busy), in one transaction holding the bulk's row: only the
    named step may go on, and it waits while another worker is still busy with this bulk.
    A worker killed mid-step leaves the successor queued; each import's own retry record
    (its token derived from the bulk's) makes sure a resumed step never sends it twice.
    """
    from . import bulk as bulk_logic
    from .bulk_models import BulkRetry

    step_id = str(context.task_result.id)
    worker_ids = context.task_result.worker_ids
    worker_id = worker_ids[-1] if worker_ids else ""
    now = timezone.now()
    wait = timedelta(seconds=settings.STATUS_POLL_SECONDS)
    with transaction.atomic():
        bulk = BulkRetry.objects.select_for_update().filter(pk=bulk_id).first()
        if bulk is None or not bulk.is_running:
            return "bulk not running"
        if bulk.step_task_id != step_id:
            return "another step sends this bulk"
        # A worker runs one task at a time: if the busy step ran on this same worker, it died.
        busy = bulk.busy_until is not None and bulk.busy_until > now
        if busy and bulk.worker_id != worker_id:
            later = send_bulk_step.using(run_after=now + wait).enqueue(bulk_id)
            BulkRetry.objects.filter(pk=bulk_id).update(step_task_id=str(later.id))
            return "waiting for the step still sending"
        # The successor comes due after one polling interval: it waits while this step is
        # busy on another worker, and takes over at once on this worker after a restart.
        successor = send_bulk_step.using(run_after=now + wait).enqueue(bulk_id)
        BulkRetry.objects.filter(pk=bulk_id).update(
            step_task_id=str(successor.id),
            busy_until=now + bulk_step_margin(),
            worker_id=worker_id,
        )
    more = bulk_logic.send_next_line(bulk)
    with transaction.atomic():
        if more:
            # Go on at once rather than when the successor above falls due; that one then
            # finds another step named and ends.
            nxt = send_bulk_step.enqueue(bulk_id)
            BulkRetry.objects.filter(pk=bulk_id, step_task_id=str(successor.id)).update(
                step_task_id=str(nxt.id), busy_until=None
            )
        else:
            BulkRetry.objects.filter(pk=bulk_id).update(busy_until=None, step_task_id="")
    return "sent one import" if more else "bulk finished"
