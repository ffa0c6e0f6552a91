"""Health endpoints for load balancers and orchestrators (no sign-in, no secrets)."""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from .. import energycap
from ..energycap import EnergyCapError


@require_GET
def live(request):
    """The process answers; no database, cache or upstream call."""
    return JsonResponse({"status": "ok"})


@require_GET
def ready(request):
    """Database and cache reachable (503 if not); EnergyCAP reachability reported apart."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        checks["database"] = f"error: {type(exc).__name__}"
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
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
