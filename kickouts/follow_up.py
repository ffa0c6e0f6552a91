"""Following every submitted retry's new task to its end, in the background.

Each followed new task is a `FollowUp` row with a `due_at`. One background task, the sweep
(`follow_due`), claims the due rows with a conditional UPDATE (the row it moved from the
`due_at` it read is its claim, as healthchecks' `sendalerts` does), asks EnergyCAP about them
at once through the client's pool, records each reading and sets the next `due_at`; then it
enqueues itself for the next due time (kickouts/sweeps.py keeps one sweep queued).

- A claim lasts two polling intervals while following (a worker killed mid-ask leaves the row
  to come due again soon: a GET asked twice is harmless) and a report's time budget while
  reporting (the before and after, and the email: a report done twice would email twice).
- The move to "ended" happens once: a conditional UPDATE from "following", whoever saw the end
  (the sweep, a page polling meanwhile, `refresh_retries`). The end is read from that reading:
  the new task is not asked about again.
- Reporting compares the kickouts (kickouts/compare.py) and emails the requester
  (kickouts/notify.py) — for a retry that is one import of a bulk, one email for the whole
  bulk once its last import ended. The email is recorded after it went out: a worker that dies
  in between leaves the report to come due again, so it is sent by another (twice only if the
  worker died in the instant between the mail server's acceptance and the record).
- Each sweep also settles "submitting" records whose process died mid-send
  (`models.expire_stale_submissions`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Min, Q
from django.utils import timezone
from django_tasks import TaskContext, task

from . import compare, energycap, notify, status, sweeps
from .bulk_models import BulkLine, BulkRetry, BulkState, LineState
from .follow_up_models import SWEPT, FollowState, FollowUp
from .models import (
    STALE_SENT,
    CompareState,
    Outcome,
    RetryAttempt,
    expire_stale_submissions,
    send_lease,
)
from .status import StatusReading

logger = logging.getLogger(__name__)

# Young follow-ups are asked about every STATUS_POLL_SECONDS; older ones less often.
FOLLOW_AGES = [
    (timedelta(minutes=10), 0),  # (age below, minimum seconds between asks; 0: the interval)
    (timedelta(hours=1), 30),
]
FOLLOW_OLD_SECONDS = 300
# Back off after failures: 2, 4, 8 … times the delay, at most this much.
FOLLOW_MAX_DELAY_SECONDS = 900
# Rows one sweep claims at most; their asks run at once through the client's pool.
CLAIM_LIMIT = 50
# A comparison EnergyCAP did not answer, or an email the mail server refused, is tried again
# this often (later each time), a few times.
REPORT_ATTEMPTS = 4
REPORT_AGAIN_AFTER = timedelta(minutes=5)


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


def ask_lease() -> timedelta:
    """How long a claim to ask lasts: two polling intervals."""
    return timedelta(seconds=2 * settings.STATUS_POLL_SECONDS)


def report_lease() -> timedelta:
    """How long a claim to report lasts: the comparison's asks (a few GETs, with their
    retries) and the email."""
    one_get = settings.ENERGYCAP_CONNECT_TIMEOUT + settings.ENERGYCAP_READ_TIMEOUT
    asks = 4 * (settings.ENERGYCAP_GET_ATTEMPTS * one_get + settings.ENERGYCAP_MAX_RETRY_AFTER)
    return timedelta(seconds=asks + settings.EMAIL_TIMEOUT + 2 * settings.STATUS_POLL_SECONDS)


# -- starting and forgetting ------------------------------------------------------------


def start(attempt: RetryAttempt, *, now: datetime | None = None) -> FollowUp | None:
    """Follow a submitted retry's new task from now on; its age counts from now.

    Called in the transaction that records the new task (a submit, a supervisor's link), so
    the record and its follow-up commit together. None when there is nothing to follow."""
    if attempt.outcome != Outcome.SUBMITTED or not attempt.new_task_guid:
        return None
    now = now or timezone.now()
    follow, created = FollowUp.objects.get_or_create(
        retry=attempt,
        defaults={
            "task_guid": attempt.new_task_guid,
            "state": FollowState.FOLLOWING,
            "started_at": now,
            "due_at": now,
        },
    )
    if created:
        sweeps.wake(follow_due, now)
    return follow


def watch_submission(attempt: RetryAttempt) -> None:
    """A submission is about to be sent: a sweep looks at it once its lease has passed, in
    case the process sending it dies before the answer is recorded."""
    sweeps.wake(follow_due, attempt.requested_at + send_lease())


def wake() -> bool:
    """Start a sweep if none is queued (or the queued one was lost); see kickouts/sweeps.py."""
    return sweeps.wake(follow_due)


def overdue(follow: FollowUp, now: datetime | None = None) -> bool:
    """A due row two polling intervals past its time: the sweep seems lost or the workers
    down."""
    if follow.state not in SWEPT or follow.due_at is None:
        return False
    late = timedelta(seconds=2 * settings.STATUS_POLL_SECONDS)
    return (now or timezone.now()) > follow.due_at + late


# -- readings -------------------------------------------------------------------------


def store_reading(follow: FollowUp, reading: StatusReading) -> bool:
    """Store a reading of the new task (an older one never overwrites a newer one); on the
    first one that shows the end, move the follow-up to reporting. True if it ended now."""
    task_ = reading.task
    if task_ is None:
        return False
    values = {
        "read_at": reading.checked_at,
        "status": task_.status[:100],
        "finished": not task_.is_running,
        "begin_date": task_.begin_date,
        "end_date": task_.end_date,
        "success_count": task_.current_success_count,
        "analyzing_count": task_.analyzing_count,
        "flag_count": task_.unresolved_flag_count,
        "batch_id": task_.batch.batch_id if task_.batch else None,
        "batch_code": task_.batch.batch_code[:255] if task_.batch else "",
        "message": task_.message,
    }
    older = Q(read_at__isnull=True) | Q(read_at__lt=reading.checked_at)
    if FollowUp.objects.filter(older, pk=follow.pk).update(**values):
        for name, value in values.items():
            setattr(follow, name, value)
    if task_.task_id is not None:
        RetryAttempt.objects.filter(pk=follow.pk, new_task_id=None).update(
            new_task_id=task_.task_id
        )
    if task_.is_running:
        return False
    return _end(follow)


def _end(follow: FollowUp, stopped_reason: str = "") -> bool:
    """Following is over (the task ended, or it ran too long): the report is due now."""
    now = timezone.now()
    with transaction.atomic():
        ended = FollowUp.objects.filter(pk=follow.pk, state=FollowState.FOLLOWING).update(
            state=FollowState.REPORTING, due_at=now, failures=0, stopped_reason=stopped_reason
        )
        if ended:
            sweeps.wake(follow_due, now)
    if ended:
        follow.state, follow.due_at = FollowState.REPORTING, now
        follow.stopped_reason = stopped_reason
    return bool(ended)


def panel_reading(attempt: RetryAttempt) -> tuple[StatusReading | None, bool]:
    """The reading a status panel shows, and whether the worker seems to be down.

    Followed and on time, or past the end: the record, no upstream request (the end is
    known; only the worker compares the kickouts, so a late report is waited for). A
    follow-up whose ask is late (or a retry without one): shared polling, whose reading is
    recorded too. Either way a sweep is started again if the queued one was lost."""
    follow = attempt.follow
    if follow is not None and not follow.is_following:
        late = overdue(follow)
        if late:
            wake()
        return status.recorded_reading(follow), late
    if follow is not None and not overdue(follow):
        return status.recorded_reading(follow), False
    reading = status.read_task_status(attempt.new_task_guid)
    if follow is not None:
        store_reading(follow, reading)
        wake()
    return reading, follow is not None


# -- the sweep ------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A follow-up a sweep claimed, and the `due_at` it was moved to, which is the claim."""

    follow: FollowUp
    lease: datetime


@dataclass(frozen=True)
class EmailClaim:
    """A bulk retry's email a sweep claimed, and its `email_due_at` lease."""

    bulk: BulkRetry
    lease: datetime


def claim_due(now: datetime, limit: int = CLAIM_LIMIT) -> list[Claim | EmailClaim]:
    """Claim the due follow-ups and bulk emails: each row is moved from the due time it was
    read with to the end of its lease; only the worker whose UPDATE changed the row has it."""
    claims: list[Claim | EmailClaim] = []
    due = FollowUp.objects.filter(state__in=SWEPT, due_at__lte=now).order_by("due_at")
    for follow in due[:limit]:
        lease = now + (ask_lease() if follow.is_following else report_lease())
        if FollowUp.objects.filter(pk=follow.pk, due_at=follow.due_at).update(due_at=lease):
            follow.due_at = lease
            claims.append(Claim(follow, lease))
    emails = BulkRetry.objects.filter(email_due_at__lte=now).order_by("email_due_at")
    for bulk in emails.select_related("requested_by")[:limit]:
        lease = now + report_lease()
        if BulkRetry.objects.filter(pk=bulk.pk, email_due_at=bulk.email_due_at).update(
            email_due_at=lease
        ):
            bulk.email_due_at = lease
            claims.append(EmailClaim(bulk, lease))
    return claims


def next_due(now: datetime | None = None) -> datetime | None:
    """When the sweep must run next: the earliest due follow-up or bulk email, or the end of
    the lease of a submission that may have been left "submitting"."""
    due = FollowUp.objects.filter(state__in=SWEPT).aggregate(at=Min("due_at"))["at"]
    email = BulkRetry.objects.aggregate(at=Min("email_due_at"))["at"]
    submitting = RetryAttempt.objects.filter(outcome=Outcome.SUBMITTING).aggregate(
        at=Min("requested_at")
    )["at"]
    lease_end = submitting + send_lease() if submitting is not None else None
    times = [at for at in (due, email, lease_end) if at is not None]
    return min(times) if times else None


@task(takes_context=True)
def follow_due(context: TaskContext) -> str:
    """The sweep, as the worker runs it (see `sweep`)."""
    return sweep(str(context.task_result.id))


def sweep(me: str | None = None) -> str:
    """Claim what is due, ask about the followed tasks at once, record, report. `me` is the
    queued sweep's id (None: a run by hand, which goes ahead whichever sweep is queued)."""
    claims = sweeps.begin(follow_due, me, claim_due, next_due)
    if claims is None:
        return "another sweep is scheduled"
    settled = _settle_stale_submissions()
    follows = [c for c in claims if isinstance(c, Claim)]
    asking = [c for c in follows if c.follow.is_following]
    reporting = [c for c in follows if not c.follow.is_following]
    emails = [c for c in claims if isinstance(c, EmailClaim)]
    if asking:
        api = energycap.client()
        answers = api.at_once(*(partial(api.get_task, c.follow.task_guid) for c in asking))
        for claim, answer in zip(asking, answers, strict=True):
            _record(claim, StatusReading.of(answer))
    for claim in reporting:
        _report(claim)
    for email in emails:
        _bulk_email(email)
    sweeps.finish(follow_due, next_due())
    return (
        f"asked {len(asking)}, reported {len(reporting)}, bulk emails {len(emails)}, "
        f"stale submissions settled {len(settled)}"
    )


def _settle_stale_submissions() -> list[int]:
    """Submissions left "submitting" by a process that died; a bulk's line follows its retry
    (an import that may have been sent is "outcome unknown", never "not sent")."""
    settled = expire_stale_submissions()
    if settled:
        BulkLine.objects.filter(retry__in=settled, retry__outcome=Outcome.UNKNOWN).update(
            state=LineState.UNKNOWN, reason=STALE_SENT
        )
    return settled


def _record(claim: Claim, reading: StatusReading) -> None:
    """One ask's reading, and the next ask's time (only while this sweep holds the claim),
    in one transaction: a page never sees the reading without its next time."""
    with transaction.atomic():
        _record_in_transaction(claim, reading)


def _record_in_transaction(claim: Claim, reading: StatusReading) -> None:
    follow = claim.follow
    now = timezone.now()
    asked: dict[str, Any] = {"checked_at": reading.checked_at}
    if reading.ok:
        asked.update(succeeded_at=reading.checked_at, failures=0, error="")
    else:
        asked.update(failures=F("failures") + 1, error=reading.error)
        logger.warning("Retry #%s: EnergyCAP did not answer: %s", follow.pk, reading.error)
    FollowUp.objects.filter(pk=follow.pk).update(**asked)
    if store_reading(follow, reading):
        return  # ended: the report is due now
    age = now - follow.started_at
    if age.total_seconds() > settings.FOLLOW_UP_MAX_SECONDS:
        hours = settings.FOLLOW_UP_MAX_SECONDS / 3600
        _end(
            follow,
            stopped_reason=(
                f"Stopped following after {hours:g} hours: the new import had not ended. "
                "Check it in EnergyCAP, or open this page to look again."
            ),
        )
        return
    failures = 0 if reading.ok else follow.failures + 1
    FollowUp.objects.filter(pk=follow.pk, state=FollowState.FOLLOWING, due_at=claim.lease).update(
        due_at=now + timedelta(seconds=follow_delay(age, failures))
    )


# -- reporting ------------------------------------------------------------------------


def _report(claim: Claim) -> None:
    """The new task ended (or following stopped): compare, email, and record both."""
    follow = claim.follow
    attempt = RetryAttempt.objects.select_related("requested_by").get(pk=follow.pk)
    attempt.follow = follow
    compared = ""
    if follow.finished:
        try:
            compared = compare.compare_retry(attempt, follow)
        except Exception:  # noqa: BLE001 - the requester is told of the end all the same
            logger.exception("Retry #%s: the kickouts could not be compared", attempt.pk)
            compared = CompareState.ERROR
    now = timezone.now()
    values: dict[str, Any] = {}
    again = compared == CompareState.ERROR and compare.worth_trying_again(attempt)
    if attempt.bulk_id is not None:
        values.update(notification=f"One email for bulk retry #{attempt.bulk_id}.")
    elif follow.notified_at is None:
        delivery = _email(attempt, follow)
        values.update(notification=delivery.note[:200])
        if delivery.failed:
            again = True
        else:
            values.update(notified_at=now)
    if again and follow.compare_attempts + 1 < REPORT_ATTEMPTS:
        values.update(
            compare_attempts=F("compare_attempts") + 1,
            due_at=now + REPORT_AGAIN_AFTER * (follow.compare_attempts + 1),
        )
    else:
        values.update(
            state=FollowState.STOPPED if follow.stopped_reason else FollowState.ENDED,
            due_at=None,
        )
    FollowUp.objects.filter(pk=follow.pk, due_at=claim.lease).update(**values)
    if attempt.bulk_id is not None:
        # One email for the whole bulk, looked at once this report is recorded (looked at
        # before, it would find this import unreported and wait for a report already made).
        bulk_email_due(attempt.bulk_id)


def _email(attempt: RetryAttempt, follow: FollowUp) -> notify.Delivery:
    """The requester's email about one retry's end."""
    if follow.stopped_reason:
        return notify.Delivery(False, False, "Not emailed: following stopped before the end.")
    subject, body = notify.retry_ended_email(attempt)
    delivery = notify.deliver(attempt.requested_by, subject, body)
    if delivery.failed:
        logger.warning("Retry #%s: the email failed: %s", attempt.pk, delivery.note)
    return delivery


def bulk_email_due(bulk_id: int) -> None:
    """Look at a bulk's email now: it stopped sending, or one of its new imports ended."""
    now = timezone.now()
    with transaction.atomic():
        if BulkRetry.objects.filter(pk=bulk_id, notified_at__isnull=True).update(email_due_at=now):
            sweeps.wake(follow_due, now)


def _bulk_email(claim: EmailClaim) -> None:
    """The bulk's one email, once it sends no more and each of its new imports was followed
    to its end and reported (a report still due is waited for: its before and after belongs
    in the email); until then the claim is dropped (the next report makes it due again)."""
    # The bulk's row stays locked from the check to the record: a report that makes the email
    # due meanwhile waits, then finds it sent (or, dropped here, due again). A worker killed
    # while sending leaves its claim to pass, as any claim.
    with transaction.atomic():
        bulk = (
            BulkRetry.objects.select_for_update()
            .select_related("requested_by")
            .filter(pk=claim.bulk.pk, email_due_at=claim.lease)
            .first()
        )
        if bulk is None:
            return  # made due again since the claim: the next sweep looks
        mine = BulkRetry.objects.filter(pk=bulk.pk)
        unreported = FollowUp.objects.filter(retry__bulk=bulk, state__in=SWEPT)
        if bulk.state == BulkState.SENDING or bulk.notified_at is not None or unreported.exists():
            mine.update(email_due_at=None)
            return
        subject, body = notify.bulk_ended_email(bulk)
        delivery = notify.deliver(bulk.requested_by, subject, body)
        now = timezone.now()
        if delivery.failed:
            logger.warning("Bulk retry #%s: the email failed: %s", bulk.pk, delivery.note)
            # Tried again a few times, minutes apart, then left with the failure recorded.
            ended = bulk.finished_at or now
            again = now + REPORT_AGAIN_AFTER
            keep_trying = again - ended < REPORT_AGAIN_AFTER * REPORT_ATTEMPTS * REPORT_ATTEMPTS
            due = again if keep_trying else None
            mine.update(notification=delivery.note[:200], email_due_at=due)
            return
        mine.update(notification=delivery.note[:200], notified_at=now, email_due_at=None)
