"""Retry records as the dashboard writes them, for tests that need some already made."""

from __future__ import annotations

import uuid

from django.utils import timezone

from kickouts.models import (
    CompareState,
    Comparison,
    FollowState,
    FollowUp,
    Outcome,
    RetryAttempt,
    RetrySource,
)


def make_retry(user, **fields) -> RetryAttempt:
    """A submitted retry of a fresh task by `user`, with its source row; any field can be
    given instead."""
    values = {
        "requested_by": user,
        "form_token": uuid.uuid4(),
        "source_task_guid": str(uuid.uuid4()),
        "batch_mode": "new self-contained batch",
        "payload": {"batchSettings": {"batchMode": "new self-contained batch"}},
        "outcome": Outcome.SUBMITTED,
    }
    values.update(fields)
    retry = RetryAttempt.objects.create(**values)
    RetrySource.objects.create(
        retry=retry,
        task_guid=retry.source_task_guid,
        task_id=retry.source_task_id,
        duplicate_sequence=retry.duplicate_sequence,
        outcome=retry.outcome,
    )
    return retry


def follow(retry: RetryAttempt, **fields) -> FollowUp:
    """The follow-up a worker would have made for `retry`: following, started at its answer,
    due now; any field can be given instead (the reading too: status, finished, …)."""
    now = timezone.now()
    values = {
        "task_guid": retry.new_task_guid,
        "state": FollowState.FOLLOWING,
        "started_at": retry.answered_at or now,
        "due_at": now,
    }
    values.update(fields)
    return FollowUp.objects.create(retry=retry, **values)


def compared(retry: RetryAttempt, **fields) -> Comparison:
    """A before and after stored for `retry`; any field can be given instead."""
    values = {"state": CompareState.COMPARED}
    values.update(fields)
    return Comparison.objects.create(retry=retry, **values)
