"""Shared task-status polling through Django's cache.

However many people watch the same task, and however many app processes serve
them, EnergyCAP gets at most one status request per polling interval: the first
watcher to take the interval's lock (`cache.add`, atomic in every backend)
fetches; everyone else reads what it stored. With Redis (`REDIS_URL`) the lock
and the answer are shared by all processes.
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
from .payloads import Task

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
