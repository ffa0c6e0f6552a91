"""Health endpoints for load balancers: live never looks further than the process itself."""

from __future__ import annotations

import socket

from django.db import connection
from django.test import override_settings
from django.urls import reverse


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
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "cache": "ok"}}
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
