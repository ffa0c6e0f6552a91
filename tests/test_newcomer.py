"""A newcomer's first hour: the day starts on Kickouts, `make run` takes a port, and one
command shows each outcome of a re-import in the sandbox (what the README says)."""

from __future__ import annotations

import ast
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from kickouts.management.commands.rundashboard import DEMO_USERS
from kickouts.management.commands.sandbox_next_reimport import answers
from kickouts.models import Outcome, RetryAttempt
from kickouts.roles import AP_STAFF, ROLE_OPTIONS, ROLES, SUPERVISORS

from .conftest import PASSWORD
from .test_reconcile import new_task_guids, send_retry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_after_sign_in_the_day_starts_on_kickouts(client, clerk, sandbox):
    """The sign-in form leads to the kickout queue, as the README says."""
    response = client.post(
        reverse("login"), {"username": clerk.get_username(), "password": PASSWORD}
    )
    assert response.status_code == 302 and response["Location"] == reverse("queue")
    assert "The day's work starts on **Kickouts**" in README


def test_the_dashboards_address_leads_to_kickouts_through_sign_in(client, clerk, sandbox):
    """Opening the dashboard's address signed out: sign in, then the kickout queue (where the
    bill imports' list once was, which now has its own address)."""
    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0] == f"{reverse('login')}?next=/"
    response = client.post(
        f"{reverse('login')}?next=/",
        {"username": clerk.get_username(), "password": PASSWORD, "next": "/"},
        follow=True,
    )
    assert response.redirect_chain == [("/", 302), (reverse("queue"), 302)]
    assert response.request["PATH_INFO"] == reverse("queue") == "/kickouts/"
    assert reverse("task_list") == "/imports/"


def make_dry_run(*args: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_takes_the_dashboards_port_and_the_sandboxs():
    """`make run DASHBOARD_PORT=… SANDBOX_PORT=…`, documented in the README."""
    run = make_dry_run("run", "DASHBOARD_PORT=8130", "SANDBOX_PORT=8131")
    assert "ENERGYCAP_SANDBOX_PORT=8131" in run and "--addrport 127.0.0.1:8130" in run
    assert "--addrport 127.0.0.1:8000" in make_dry_run("run")
    assert "sandbox --port 8131" in make_dry_run("sandbox", "SANDBOX_PORT=8131")
    assert "make run DASHBOARD_PORT=8001" in README and "SANDBOX_PORT=" in README


def test_the_readme_names_every_answer_the_command_can_spoil():
    """Each of `sandbox_next_reimport`'s answers is in the README, with its make target."""
    for answer in answers(20):
        assert f"make next-reimport ANSWER={answer}" in README, answer
    assert "manage.py sandbox_next_reimport" in README and "--before-acting" in README


@pytest.mark.parametrize("answer", ["502", "timeout", "lost"])
def test_the_next_reimport_acts_then_loses_its_answer(
    answer, clerk_client, supervisor_client, sandbox, settings
):
    """One command, one retry: EnergyCAP made the import, the dashboard says outcome unknown,
    and a supervisor finds the import among the candidates."""
    settings.ENERGYCAP_READ_TIMEOUT = 1
    out = StringIO()
    call_command("sandbox_next_reimport", answer, stdout=out)
    assert "after EnergyCAP started the import: outcome unknown" in out.getvalue()
    send_retry(clerk_client, import_note="lost answer")
    attempt = RetryAttempt.objects.get()
    assert attempt.outcome == Outcome.UNKNOWN
    [created] = new_task_guids()
    page = supervisor_client.get(attempt.get_absolute_url())
    assert [c.task.guid for c in page.context["candidates"]] == [created]
    # Only the next re-import: nothing more is queued for the one after.
    assert sandbox.fault("kickout_post")["queued"] == 0


def test_before_acting_the_answer_is_lost_and_nothing_is_imported(clerk_client, sandbox):
    """`--before-acting`: outcome unknown, and EnergyCAP's task list has no new import."""
    out = StringIO()
    call_command("sandbox_next_reimport", "502", "--before-acting", stdout=out)
    assert "before EnergyCAP did anything" in out.getvalue()
    send_retry(clerk_client, import_note="lost answer")
    assert RetryAttempt.objects.get().outcome == Outcome.UNKNOWN
    assert new_task_guids() == set()


def test_a_refused_reimport_is_rejected_and_may_be_tried_again(clerk_client, sandbox):
    """`refused`: EnergyCAP's 409, the retry rejected, nothing imported."""
    call_command("sandbox_next_reimport", "refused", stdout=StringIO())
    send_retry(clerk_client, import_note="lost answer")
    assert RetryAttempt.objects.get().outcome == Outcome.REJECTED
    assert new_task_guids() == set()


def test_the_command_never_steers_a_real_energycap(settings):
    """With ENERGYCAP_BASE_URL set, it refuses and says why."""
    settings.ENERGYCAP_USES_SANDBOX = False
    with pytest.raises(CommandError, match="only steers the built-in sandbox"):
        call_command("sandbox_next_reimport", "502")


def string_literals(path: Path) -> list[str]:
    """A module's strings, docstrings left out (they may name a role in a sentence)."""
    tree = ast.parse(path.read_text())
    documented = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in documented
    ]


def test_the_role_names_are_said_once():
    """adduser, the demo users and the views read the roles' names from kickouts/roles.py."""
    assert set(ROLES) == {AP_STAFF, SUPERVISORS}
    assert {name for name in ROLE_OPTIONS.values() if name} == set(ROLES)
    assert {group for _, _, group in DEMO_USERS if group} == set(ROLES)
    for folder in ("kickouts/management/commands", "kickouts/views"):
        for module in (ROOT / folder).glob("*.py"):
            said = [s for s in string_literals(module) if AP_STAFF in s or SUPERVISORS in s]
            assert said == [], module
