"""Health endpoints for load balancers: live never looks further than the process itself."""

from __future__ import annotations

import socket
import uuid
from datetime import timedelta

from django.db import connection
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from kickouts.follow_up import follow_due

from .factories import follow, make_retry


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broken_cache() -> dict:
    """A Redis cache on a port where nothing listens."""
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        }
    }


def test_live_answers_without_database_cache_or_upstream(client, sandbox):
    """/health/live/: the process answers; nothing else is asked (no database access is
    allowed in this test, and the cache points at a closed port)."""
    with override_settings(CACHES=broken_cache()):
        response = client.get(reverse("health_live"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert sandbox.log() == []


def test_ready_checks_the_database_and_the_cache_but_not_energycap(client, db, sandbox):
    """/health/ready/: database and cache answer; EnergyCAP is only asked when requested."""
    response = client.get(reverse("health_ready"))
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "worker": "ok", "cache": "ok"},
        "worker": {"oldest_waiting_seconds": None, "last_follow_up_seconds": None},
    }
    assert sandbox.log() == []


def test_ready_with_upstream_also_asks_energycap_once(client, db, sandbox):
    """?upstream=1 adds one cheap call (/api/v3/me) and reports it."""
    response = client.get(reverse("health_ready"), {"upstream": "1"})
    assert response.status_code == 200
    assert response.json()["checks"]["energycap"] == "ok"
    assert [e["endpoint"] for e in sandbox.log()] == ["me"]


def test_an_energycap_outage_is_reported_but_does_not_make_the_app_unready(client, db, sandbox):
    """The dashboard still serves clear messages when EnergyCAP is down: stay in rotation."""
    sandbox.fault("me", {"status": 401})
    response = client.get(reverse("health_ready"), {"upstream": "1"})
    assert response.status_code == 200
    assert response.json()["checks"]["energycap"] == "error: Unauthorized"


def test_ready_is_503_when_the_cache_is_unreachable(client, db):
    """Redis down: not ready, and the answer says which check failed (by type only)."""
    with override_settings(CACHES=broken_cache()):
        response = client.get(reverse("health_ready"))
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["cache"] == "error: ConnectionError"


def test_ready_is_503_when_the_database_is_unreachable(client, db, monkeypatch):
    """The database refuses connections: not ready."""
    from django.db import OperationalError

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(connection, "cursor", refuse)
        response = client.get(reverse("health_ready"))
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "error: OperationalError"


def test_health_endpoints_only_answer_get(client, db):
    """They change nothing, so they take nothing else."""
    assert client.post(reverse("health_live")).status_code == 405
    assert client.post(reverse("health_ready")).status_code == 405


def test_ready_is_unavailable_when_a_task_waited_longer_than_worker_stale_seconds(
    client, db, settings
):
    """A task left waiting past WORKER_STALE_SECONDS means no worker runs: 503 for the monitor."""
    settings.WORKER_STALE_SECONDS = 120
    result = follow_due.enqueue()
    DBTaskResult.objects.filter(id=result.id).update(
        enqueued_at=timezone.now() - timedelta(seconds=300)
    )
    response = client.get(reverse("health_ready"))
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["worker"] == "error: a task has waited 300 s for a worker"
    assert 299 <= body["worker"]["oldest_waiting_seconds"] < 310


def test_ready_counts_a_deferred_task_as_waiting_only_from_its_run_after(client, db, settings):
    """A step due later is not waiting; one due 10 s ago has waited 10 s (and that is fine)."""
    settings.WORKER_STALE_SECONDS = 120
    now = timezone.now()
    follow_due.using(run_after=now + timedelta(minutes=10)).enqueue()
    follow_due.using(run_after=now - timedelta(seconds=10)).enqueue()
    response = client.get(reverse("health_ready"))
    assert response.status_code == 200
    assert 9 <= response.json()["worker"]["oldest_waiting_seconds"] < 20


def test_an_idle_worker_with_an_empty_queue_is_healthy(client, clerk):
    """Finished tasks and an old last follow-up do not make the worker look dead."""
    result = follow_due.enqueue()
    DBTaskResult.objects.filter(id=result.id).update(
        status="SUCCESSFUL", enqueued_at=timezone.now() - timedelta(hours=2)
    )
    follow(
        make_retry(clerk, new_task_guid=str(uuid.uuid4())),
        checked_at=timezone.now() - timedelta(hours=1),
    )
    response = client.get(reverse("health_ready"))
    assert response.status_code == 200
    worker = response.json()["worker"]
    assert worker["oldest_waiting_seconds"] is None
    assert 3590 < worker["last_follow_up_seconds"] < 3700
