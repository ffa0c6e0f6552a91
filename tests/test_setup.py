"""Setting up and running the dashboard: settings, the one-command start, users, admin."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.urls import reverse

from kickouts.management.commands.rundashboard import Command
from kickouts.roles import ensure_roles

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENERGYCAP_", "DJANGO_"))}
    for name in ("SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
    env.update(extra)
    return env


def _import_settings(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import dashboard.settings as s; print(s.ENERGYCAP_BASE_URL)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, "SECRET_KEY and ENERGYCAP_API_KEY must be set"),
        ({"SECRET_KEY": "s" * 50}, "ENERGYCAP_API_KEY must be set"),
        ({"ENERGYCAP_API_KEY": "k"}, "SECRET_KEY must be set"),
    ],
)
def test_production_settings_refuse_to_start_without_their_secrets(given, missing):
    """DEBUG off without SECRET_KEY or ENERGYCAP_API_KEY: a clear refusal."""
    result = _import_settings(_clean_env(DEBUG="false", **given))
    assert result.returncode != 0
    assert missing in result.stderr


def test_local_settings_default_to_the_sandbox_and_sqlite():
    """DEBUG on with nothing else set: the built-in sandbox and a SQLite file."""
    result = _import_settings(_clean_env(DEBUG="true"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "http://127.0.0.1:8765"


def test_a_misspelt_boolean_is_refused():
    """DEBUG=maybe is an error that says what is accepted."""
    result = _import_settings(_clean_env(DEBUG="maybe"))
    assert "DEBUG must be true or false" in result.stderr


def test_one_command_starts_the_sandbox_demo_users_and_the_dashboard(tmp_path):
    """`manage.py rundashboard` migrates, starts the sandbox, prints users, serves pages."""
    web, sandbox_port = _free_port(), _free_port()
    env = _clean_env(
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        ENERGYCAP_SANDBOX_PORT=str(sandbox_port),
    )
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "rundashboard", "--addrport", f"127.0.0.1:{web}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        session = requests.Session()
        while True:
            try:
                login = session.get(f"http://127.0.0.1:{web}/accounts/login/", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.3)
        assert login.status_code == 200
        token = session.cookies["csrftoken"]
        page = session.post(
            f"http://127.0.0.1:{web}/accounts/login/",
            data={"username": "clerk", "password": "kickouts-demo", "csrfmiddlewaretoken": token},
            timeout=10,
        )
        assert "Bill imports" in page.text and "Sandbox" in page.text
        health = requests.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/health", timeout=2)
        assert health.json() == {"ok": True}
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert "clerk       password kickouts-demo   (AP staff)" in output
    assert "supervisor  password kickouts-demo   (Supervisors)" in output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/health", timeout=2)


def test_the_sandbox_runs_alone_on_a_chosen_port():
    """`manage.py sandbox --port N` serves the sandbox by itself."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox", "--port", str(port)],
        cwd=ROOT,
        env=_clean_env(DEBUG="true"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                me = requests.get(
                    f"http://127.0.0.1:{port}/api/v3/me",
                    headers={"ECI-ApiKey": "sandbox-key"},
                    timeout=2,
                )
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert me.json()["systemUserCode"] == "apiimport"
    finally:
        proc.terminate()
        proc.wait(10)


def test_adduser_creates_a_user_with_a_role(db):
    """The README's command gives a user the AP staff role."""
    out = io.StringIO()
    call_command(
        "adduser",
        "maria",
        role="ap-staff",
        name="Maria Okafor",
        password="a-Long-pass-123",
        stdout=out,
    )
    maria = User.objects.get(username="maria")
    assert maria.get_full_name() == "Maria Okafor"
    assert maria.has_perm("kickouts.submit_retry")
    assert not maria.has_perm("kickouts.view_all_retries")
    assert maria.check_password("a-Long-pass-123")
    call_command("adduser", "maria", role="supervisor", stdout=out)
    assert User.objects.get(username="maria").has_perm("kickouts.view_all_retries")


def test_adduser_refuses_a_weak_password(db):
    """Django's password validators apply."""
    with pytest.raises(CommandError, match="too common|too short"):
        call_command("adduser", "weak", role="none", password="password", stdout=io.StringIO())


def test_retry_records_are_read_only_in_the_admin(admin_client, clerk, sandbox):
    """The admin lists and shows retries, but cannot add, change or delete them."""
    from kickouts.models import RetryAttempt

    attempt = RetryAttempt.objects.create(
        requested_by=clerk,
        form_token="0f4a5a0e-8f83-4a6b-9d9f-7a1c7d1f7d10",
        source_task_guid="7d1f3c2a-5b84-4e3f-9a61-2c8e4b7d9f10",
        batch_mode="new batch",
        payload={"batchSettings": {"batchMode": "new batch"}},
    )
    changelist = admin_client.get(reverse("admin:kickouts_retryattempt_changelist"))
    assert changelist.status_code == 200
    assert admin_client.get(reverse("admin:kickouts_retryattempt_add")).status_code == 403
    change_url = reverse("admin:kickouts_retryattempt_change", args=[attempt.pk])
    page = admin_client.get(change_url)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    posted = admin_client.post(change_url, {"batch_mode": "smart batch"})
    assert posted.status_code == 403
    delete_url = reverse("admin:kickouts_retryattempt_delete", args=[attempt.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    attempt.refresh_from_db()
    assert attempt.batch_mode == "new batch"


def test_starting_again_keeps_the_demo_users_signed_in(db):
    """`make run` a second time sets the demo users up again, but their password hashes stay:
    a new hash would end every session of the last run (Django checks it on each request)."""
    ensure_roles()
    Command(stdout=io.StringIO())._demo_users()
    hashes = dict(User.objects.values_list("username", "password"))
    Command(stdout=io.StringIO())._demo_users()
    assert dict(User.objects.values_list("username", "password")) == hashes
    assert User.objects.get(username="clerk").check_password("kickouts-demo")
