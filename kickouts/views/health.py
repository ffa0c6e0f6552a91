"""Health endpoints for load balancers and orchestrators (no sign-in, no secrets)."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Max, Min
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult, get_date_max

from .. import energycap
from ..energycap import EnergyCapError
from ..follow_up_models import FollowUp


@require_GET
def live(request):
    """The process answers; no database, cache or upstream call."""
    return JsonResponse({"status": "ok"})


def worker_state() -> dict:
    """Seconds the oldest task due to run has waited, and since the last follow-up.

    A task waits from when it was enqueued (or from its `run_after`, if later). An idle
    worker with an empty queue is healthy: only a task left waiting means no worker runs.
    """
    now = timezone.now()
    ready = DBTaskResult.objects.filter(status=TaskResultStatus.READY).order_by()
    # The database backend stores "no run_after" as its largest date.
    oldest = [
        ready.filter(run_after=get_date_max()).aggregate(at=Min("enqueued_at"))["at"],
        ready.filter(run_after__lte=now).aggregate(at=Min("run_after"))["at"],
    ]
    oldest = [at for at in oldest if at is not None]
    last_follow_up = FollowUp.objects.order_by().aggregate(at=Max("checked_at"))["at"]
    return {
        "oldest_waiting_seconds": round((now - min(oldest)).total_seconds(), 1) if oldest else None,
        "last_follow_up_seconds": round((now - last_follow_up).total_seconds(), 1)
        if last_follow_up
        else None,
    }


@require_GET
def ready(request):
    """Database, cache and worker fine (503 if not); EnergyCAP reachability reported apart."""
    checks = {}
    worker = None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        checks["database"] = f"error: {type(exc).__name__}"
    else:
        worker = worker_state()
        waited = worker["oldest_waiting_seconds"]
        checks["worker"] = (
            f"error: a task has waited {waited:.0f} s for a worker"
            if waited is not None and waited > settings.WORKER_STALE_SECONDS
            else "ok"
        )
    try:
        cache.set("health:ready", "1", 10)
        checks["cache"] = "ok" if cache.get("health:ready") == "1" else "error: no read-back"
    except Exception as exc:  # noqa: BLE001
        checks["cache"] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    if request.GET.get("upstream") == "1":
        try:
            energycap.client().current_user()
            checks["energycap"] = "ok"
        except EnergyCapError as exc:
            checks["energycap"] = f"error: {type(exc).__name__}"
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    if worker is not None:
        body["worker"] = worker
    return JsonResponse(body, status=200 if ready else 503)
