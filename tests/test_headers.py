"""What reaches the browser is safe: security headers, production cookies, escaped upstream text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Every variable settings.py reads, so the test's own environment (pytest-env) cannot leak in.
SETTINGS_PREFIXES = ("ENERGYCAP_", "SECURE_", "SESSION_", "CSRF_", "STATUS_POLL", "DJANGO_")
SETTINGS_NAMES = {
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "DATABASE_CONN_MAX_AGE",
    "REDIS_URL",
    "SENTRY_DSN",
    "BEHIND_TLS_PROXY",
    "TIME_ZONE",
    "LOG_LEVEL",
}
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "production-like-7Hq2vN9xKp4LmR8sT1wY6zB3cF5gJ0dE-not-a-real-secret",
    "ENERGYCAP_BASE_URL": "https://app.energycap.com",
    "ENERGYCAP_API_KEY": "production-like-key-not-real",
    "ALLOWED_HOSTS": "kickouts.example.com",
    "DJANGO_SETTINGS_MODULE": "dashboard.settings",
}


def production_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in SETTINGS_NAMES and not name.startswith(SETTINGS_PREFIXES)
    }
    return env | PRODUCTION


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=production_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx fragment"])
def test_pages_carry_a_strict_csp_and_the_security_headers(clerk_client, htmx):
    """No unsafe-inline or unsafe-eval; objects, <base> and framing all refused."""
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    response = clerk_client.get(reverse("task_list"), **headers)
    assert response.status_code == 200
    header = response["Content-Security-Policy"]
    assert "unsafe-inline" not in header and "unsafe-eval" not in header
    csp = csp_directives(header)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_the_sign_in_page_and_error_pages_carry_the_headers_too(client, clerk_client):
    """The pages nobody thinks of: sign-in and 404."""
    for response in (client.get(reverse("login")), clerk_client.get("/no/such/page/")):
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"


def test_deploy_checks_pass_with_production_values():
    """`manage.py check --deploy` with production env values: no warning at all."""
    result = run("manage.py", "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNINGS" not in output
    assert "no issues" in output


def test_production_cookies_are_secure_and_hsts_is_on():
    """Without overrides, production settings make cookies Secure/HttpOnly and send HSTS."""
    probe = (
        "import json, dashboard.settings as s; print(json.dumps({n: getattr(s, n) for n in "
        "['SESSION_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', 'CSRF_COOKIE_SECURE', "
        "'SECURE_HSTS_SECONDS', 'SECURE_SSL_REDIRECT', 'DEBUG']}))"
    )
    result = run("-c", probe)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["SESSION_COOKIE_HTTPONLY"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_HSTS_SECONDS"] > 0
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["DEBUG"] is False


def test_upstream_markup_is_shown_as_text_on_the_list_and_the_task_page(clerk_client, sandbox):
    """A task note and message holding HTML are escaped wherever they appear."""
    task = sandbox.add_task(
        status="Completed with kickouts",
        task_note="<script>alert(1)</script>",
        message="<b>x</b>",
        kickout_messages=["Account not found"],
    )
    pages = {
        "list": clerk_client.get(reverse("task_list")),
        "list fragment": clerk_client.get(reverse("task_list"), HTTP_HX_REQUEST="true"),
        "task page": clerk_client.get(reverse("task_detail", args=[task["taskGUId"]])),
    }
    for where, response in pages.items():
        body = response.content.decode()
        assert response.status_code == 200, where
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body, where
        assert "<script>alert(1)" not in body, where
    task_page = pages["task page"].content.decode()
    assert "&lt;b&gt;x&lt;/b&gt;" in task_page
    assert "<b>x</b>" not in task_page
