"""Background work, on Django's Tasks framework (the django-tasks backport).

Tasks run in `manage.py db_worker` processes that share the queue in the dashboard's
database. Every task finds its record, does one step, records it, and enqueues its next
step with `run_after`: a task run twice, or a worker killed halfway, changes nothing.
"""

from __future__ import annotations

import logging

from django_tasks import task

from . import energycap
from .energycap import EnergyCapError
from .models import RetryAttempt

logger = logging.getLogger(__name__)


@task()
def check_retry(retry_id: int) -> str:
    """Ask EnergyCAP once about a retry's new task and record the reading."""
    attempt = RetryAttempt.objects.filter(pk=retry_id).first()
    if attempt is None or not attempt.new_task_guid:
        return "nothing to check"
    try:
        new_task = energycap.client().get_task(attempt.new_task_guid)
    except EnergyCapError as exc:
        return f"not checked: {exc.message}"
    attempt.record_task_status(new_task)
    return attempt.new_task_status
