"""Readings of a new task's status: asked of EnergyCAP, shared between watchers, or read back
from its follow-up record.

A worker follows every submitted retry (kickouts/follow_up.py) and records what it sees; while
it does, the status panel reads the record and viewers cost EnergyCAP nothing. When the
follow-up is late (no worker running, or a worker stuck), the panel falls back to shared
polling through Django's cache: however many people watch the same task, and however many app
processes serve them, EnergyCAP gets at most one status request per polling interval: the
first watcher to take the interval's lock (`cache.add`, atomic in every backend) fetches;
everyone else reads what it stored. With Redis (`REDIS_URL`) the lock and the answer are shared
by all processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from . import energycap
from .energycap import EnergyCapError
from .follow_up_models import FollowUp
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

    @classmethod
    def of(cls, answer: energycap.Answer[Task]) -> StatusReading:
        """A reading from one answer of `EnergyCap.at_once`."""
        if answer.error is not None:
            return cls(None, answer.error.message, answer.error.permanent, timezone.now())
        return cls(answer.value, "", False, timezone.now())


def _keys(guid: str) -> tuple[str, str, str]:
    return f"task-status:{guid}", f"task-status-lock:{guid}", f"task-status-last:{guid}"


def fetch_task_status(guid: str) -> StatusReading:
    """Ask EnergyCAP about the task now (refresh_retries, shared polling)."""
    try:
        task = energycap.client().get_task(guid)
    except EnergyCapError as exc:
        return StatusReading(None, exc.message, exc.permanent, timezone.now())
    return StatusReading(task, "", False, timezone.now())


def read_task_status(guid: str, *, wait_seconds: float | None = None) -> StatusReading:
    """The task's status, fetched from EnergyCAP at most once per polling interval."""
    interval = settings.STATUS_POLL_SECONDS
    fresh_key, lock_key, last_key = _keys(guid)
    reading: StatusReading | None = cache.get(fresh_key)
    if reading is not None:
        return reading
    # Lock for the whole interval: even if the answer expires early, nobody
    # else fetches again before the interval is over.
    if cache.add(lock_key, 1, timeout=max(1, round(interval))):
        reading = fetch_task_status(guid)
        finished = reading.task is not None and not reading.task.is_running
        cache.set(fresh_key, reading, FINISHED_SECONDS if finished else interval)
        cache.set(last_key, reading, LAST_KNOWN_SECONDS)
        return reading
    last: StatusReading | None = cache.get(last_key)
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


def recorded_task(follow: FollowUp, *, task_id: int | None = None) -> Task:
    """The new task as its follow-up last recorded it."""
    batch = None
    if follow.batch_code or follow.batch_id is not None:
        batch = BatchRef(follow.batch_id, follow.batch_code)
    return Task(
        task_id=task_id,
        guid=follow.task_guid,
        task_type_code="BillImport",
        task_type_info="",
        begin_date=follow.begin_date,
        end_date=follow.end_date if follow.finished else None,
        user=None,
        message=follow.message,
        status=follow.status,
        task_note="",
        analyzing_count=follow.analyzing_count,
        unresolved_flag_count=follow.flag_count,
        current_success_count=follow.success_count,
        batch=batch,
    )


def recorded_reading(follow: FollowUp) -> StatusReading | None:
    """What the follow-up last recorded of the new task, read from the record alone."""
    if follow.read_at is None:
        if follow.failures and follow.checked_at:
            return StatusReading(None, follow.error, False, follow.checked_at)
        return None
    return StatusReading(recorded_task(follow), "", False, follow.read_at)
