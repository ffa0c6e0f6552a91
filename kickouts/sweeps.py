"""One queued sweep per kind of due work, on Django's Tasks framework.

Work that repeats (following a new task, sending a bulk's next import) is a row with a
`due_at`; one background task, the sweep, claims the due rows and enqueues itself again for
the next due time. This module keeps that to one queued sweep per kind, however many
processes ask for one: a `Sweep` row names the queued sweep and when it runs, and is only
changed under its row lock.

A sweep, as it starts, names its successor in the same transaction in which it claims its
rows (the database backend enqueues with an INSERT, so both commit together): a worker killed
at any later moment leaves that successor queued. Killed between being taken from the queue
and that transaction, a sweep is lost; the next `wake` (a send, a link, a page view of an
overdue follow-up) sees that the sweep it names is not waiting any more and starts another.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks.base import Task
from django_tasks.exceptions import TaskResultDoesNotExist

# A sweep is a task that takes its own context (the id naming it) and answers a summary.
SweepTask = Task[Any, str]
Claimed = TypeVar("Claimed")


class Sweep(models.Model):
    """The queued sweep of one kind of work (`name`), and when it is due."""

    name = models.CharField(max_length=40, primary_key=True)
    task_id = models.CharField(max_length=64, blank=True)
    run_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} sweep at {self.run_at}"


def grace() -> timedelta:
    """How late a named sweep may start before it counts as lost."""
    return timedelta(seconds=2 * settings.STATUS_POLL_SECONDS)


def _locked(name: str) -> Sweep:
    Sweep.objects.get_or_create(name=name)
    return Sweep.objects.select_for_update().get(name=name)


def _is_lost(task: SweepTask, row: Sweep, now: datetime) -> bool:
    """The named sweep is neither waiting in the queue nor due recently."""
    if not row.task_id or row.run_at is None:
        return True
    if row.run_at + grace() > now:
        return False
    try:
        status = task.get_result(row.task_id).status
    except TaskResultDoesNotExist:
        return True
    # Still waiting: the workers are late or down, and another sweep would not help.
    return status != TaskResultStatus.READY


def _enqueue(task: SweepTask, row: Sweep, at: datetime) -> None:
    queued = task.using(run_after=at).enqueue()
    row.task_id, row.run_at = str(queued.id), at
    row.save(update_fields=["task_id", "run_at"])


def wake(task: SweepTask, at: datetime | None = None) -> bool:
    """Make sure a sweep of `task` runs at `at` (now) or before; True if one was enqueued.

    Call it inside the transaction that makes a row due, so the two commit together."""
    now = timezone.now()
    at = max(at or now, now)
    with transaction.atomic():
        row = _locked(task.name)
        if row.run_at is not None and not _is_lost(task, row, now) and row.run_at <= at:
            return False
        _enqueue(task, row, at)
        return True


def begin(  # noqa: UP047 - the TypeVar is shared with the claim functions' callers
    task: SweepTask,
    me: str | None,
    claim: Callable[[datetime], list[Claimed]],
    next_due: Callable[[datetime], datetime | None],
) -> list[Claimed] | None:
    """The start of a sweep: unless another sweep is named, claim the due rows and name the
    successor, in one transaction. Returns what `claim(now)` claimed (None when another
    sweep is named: this one ends).
    `me` is the running sweep's task id; None for a run by hand, which always goes ahead.

    `next_due(now)` is the earliest time a row is due once the claims are made (None when
    nothing is left to do); the successor runs then, or one polling interval from now when
    this sweep claimed rows, so that rows it leaves half done are taken up soon after its
    lease if it dies."""
    now = timezone.now()
    with transaction.atomic():
        row = _locked(task.name)
        named = row.task_id and row.task_id != me and not _is_lost(task, row, now)
        if me is not None and named:
            return None
        claimed = claim(now)
        due = next_due(now)
        if claimed:
            soon = now + timedelta(seconds=settings.STATUS_POLL_SECONDS)
            due = soon if due is None else min(due, soon)
        if due is None:
            row.task_id, row.run_at = "", None
            row.save(update_fields=["task_id", "run_at"])
        else:
            _enqueue(task, row, max(due, now))
    return claimed


def finish(task: SweepTask, next_due: datetime | None) -> None:
    """The end of a sweep: the next one runs by the earliest due time."""
    if next_due is not None:
        wake(task, next_due)
