"""Retry records as the dashboard writes them, for tests that need some already made."""

from __future__ import annotations

import uuid

from kickouts.models import Outcome, RetryAttempt


def make_retry(user, **fields) -> RetryAttempt:
    """A submitted retry of a fresh task by `user`; any field can be given instead."""
    values = {
        "requested_by": user,
        "form_token": uuid.uuid4(),
        "source_task_guid": str(uuid.uuid4()),
        "batch_mode": "new self-contained batch",
        "payload": {"batchSettings": {"batchMode": "new self-contained batch"}},
        "outcome": Outcome.SUBMITTED,
    }
    values.update(fields)
    return RetryAttempt.objects.create(**values)
