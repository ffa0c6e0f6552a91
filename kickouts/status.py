"""What a retry's status panel shows, and how a reading of the new task is recorded.

A worker follows every submitted retry (kickouts/tasks.py) and writes what it sees on the
retry record; while it does, the panel reads the record and viewers cost EnergyCAP nothing.

When the follower is late by more than three polling intervals (no worker running, or a
worker stuck), the panel falls back to shared polling through Django's cache: however many
people watch the same task, and however many app processes serve them, EnergyCAP gets at
most one status request per polling interval: the first watcher to take the interval's
lock (`cache.add`, atomic in every backend) fetches; everyone else reads what it stored.
With Redis (`REDIS_URL`) the lock and the answer are shared by all processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import energycap
from .energycap import EnergyCapError
from .models import FollowState, RetryAttempt
from .payloads import BatchRef, Task

# A finished task does not change any more; keep its answer longer.
FINISHED_SECONDS = 3600
LAST_KNOWN_SECONDS = 3600


@dataclass(frozen=True)
class StatusReading:
    """One look at a task: the task, or the error that prevented seeing it."""

    task: Task | None
    error: str
    error_permanent: bool
    checked_at: datetime

    @property
    def ok(self) -> bool:
        return self.task is not None


def _keys(guid: str) -> tuple[str, str, str]:
    return f"task-status:{guid}", f"task-status-lock:{guid}", f"task-status-last:{guid}"


def fetch_task_status(guid: str) -> StatusReading:
    """Ask EnergyCAP about the task now (the follower and refresh_retries)."""
    return _fetch(guid)


def _fetch(guid: str) -> StatusReading:
    try:
        task = energycap.client().get_task(guid)
    except EnergyCapError as exc:
        return StatusReading(None, exc.message, exc.permanent, timezone.now())
    return StatusReading(task, "", False, timezone.now())


def read_task_status(guid: str, *, wait_seconds: float | None = None) -> StatusReading:
    """The task's status, fetched from EnergyCAP at most once per polling interval."""
    interval = settings.STATUS_POLL_SECONDS
    fresh_key, lock_key, last_key = _keys(guid)
    reading = cache.get(fresh_key)
    if reading is not None:
        return reading
    # Lock for the whole interval: even if the answer expires early, nobody
    # else fetches again before the interval is over.
    if cache.add(lock_key, 1, timeout=max(1, round(interval))):
        reading = _fetch(guid)
        finished = reading.ok and not reading.task.is_running
        cache.set(fresh_key, reading, FINISHED_SECONDS if finished else interval)
        cache.set(last_key, reading, LAST_KNOWN_SECONDS)
        return reading
    last = cache.get(last_key)
    if last is not None:
        return last
    # Someone else is fetching the very first answer: wait for it.
    deadline = time.monotonic() + (
        wait_seconds if wait_seconds is not None else settings.ENERGYCAP_READ_TIMEOUT + 1
    )
    while time.monotonic() < deadline:
        time.sleep(0.05)
        reading = cache.get(fresh_key) or cache.get(last_key)
        if reading is not None:
            return reading
    return StatusReading(
        None, "EnergyCAP's answer is taking longer than expected.", False, timezone.now()
    )


# -- the record ------------------------------------------------------------------


def record_reading(attempt: RetryAttempt, reading: StatusReading, *, follower: bool) -> None:
    """Store a reading on the retry record; the follower also notes when it asked.

    The first reading that shows the new task ended moves a followed retry to "ended"
    and enqueues the requester's email, in one transaction: exactly once per retry,
    whoever saw the end (the follower, refresh_retries, or a panel polling meanwhile).
    """
    if reading.ok:
        attempt.record_task_status(reading.task, reading.checked_at)
    if follower:
        if reading.ok:
            values = {
                "follow_checked_at": reading.checked_at,
                "follow_succeeded_at": reading.checked_at,
                "follow_failures": 0,
                "follow_error": "",
            }
        else:
            values = {
                "follow_checked_at": reading.checked_at,
                "follow_failures": F("follow_failures") + 1,
                "follow_error": reading.error,
            }
        values["follow_busy_until"] = None
        RetryAttempt.objects.filter(pk=attempt.pk).update(**values)
    if reading.ok and not reading.task.is_running:
        settle_end(attempt)


def settle_end(attempt: RetryAttempt) -> bool:
    """A followed retry whose new task ended: stop following and tell the requester."""
    from .tasks import notify_requester  # the tasks module reads readings through this one

    with transaction.atomic():
        ended = RetryAttempt.objects.filter(
            pk=attempt.pk, follow_state=FollowState.FOLLOWING
        ).update(
            follow_state=FollowState.ENDED,
            follow_next_at=None,
            follower_task_id="",
            follow_lease_until=None,
            follow_busy_until=None,
        )
        if ended:
            notify_requester.enqueue(attempt.pk)
    if ended:
        attempt.follow_state = FollowState.ENDED
    return bool(ended)


def recorded_reading(attempt: RetryAttempt) -> StatusReading | None:
    """What the follower last recorded of the new task, read from the record alone."""
    if attempt.new_task_checked_at is None:
        if attempt.follow_failures and attempt.follow_checked_at:
            return StatusReading(None, attempt.follow_error, False, attempt.follow_checked_at)
        return None
    batch = None
    if attempt.new_task_batch_code or attempt.new_task_batch_id is not None:
        batch = BatchRef(attempt.new_task_batch_id, attempt.new_task_batch_code)
    task = Task(
        None,
        attempt.new_task_guid,
        "",
        "",
        attempt.new_task_begin_date,
        attempt.new_task_end_date if attempt.new_task_finished else None,
        None,
        attempt.new_task_message,
        attempt.new_task_status,
        "",
        attempt.new_task_analyzing_count,
        attempt.new_task_flag_count,
        attempt.new_task_success_count,
        batch,
    )
    return StatusReading(task, "", False, attempt.new_task_checked_at)


def follow_overdue(attempt: RetryAttempt, now: datetime | None = None) -> bool:
    """A followed, running retry whose follow-up is three polling intervals late.

    The next step was due at `follow_next_at`; two more intervals without it (three
    since the last follow-up of a young retry) and the worker seems to be down.
    """
    if attempt.follow_state != FollowState.FOLLOWING:
        return False
    due = attempt.follow_next_at or attempt.answered_at or attempt.requested_at
    late = timedelta(seconds=2 * settings.STATUS_POLL_SECONDS)
    return (now or timezone.now()) > due + late


def panel_reading(attempt: RetryAttempt) -> tuple[StatusReading | None, bool]:
    """The reading a status panel shows, and whether the worker seems to be down.

    Followed and on time (or ended): the record, no upstream request. Otherwise the
    shared polling above, whose reading is recorded too.
    """
    overdue = follow_overdue(attempt)
    if attempt.follow_state == FollowState.ENDED or (
        attempt.follow_state == FollowState.FOLLOWING and not overdue
    ):
        return recorded_reading(attempt), False
    reading = read_task_status(attempt.new_task_guid)
    record_reading(attempt, reading, follower=False)
    if overdue:
        from .tasks import rescue_follower

        rescue_follower(attempt)
    return reading, overdue
