"""The live status panel, shared polling, refresh_retries and the retry chain."""

from __future__ import annotations

import io
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kickouts import follow_up
from kickouts.follow_up_models import FollowUp
from kickouts.models import RetryAttempt
from kickouts.roles import ensure_roles
from kickouts.sandbox.state import (
    API_USER_KICKOUT_TASK_GUID,
    COMPLETED_TASK_GUID,
    FAILED_TASK_GUID,
    RUNNING_TASK_GUID,
)

from .factories import follow, make_retry
from .retry_helpers import post_retry


def _retry_of(user, new_task_guid: str, source: str = API_USER_KICKOUT_TASK_GUID, **extra):
    """A submitted retry whose follow-up is long overdue (no worker runs): its panel asks
    EnergyCAP itself, through the shared polling."""
    attempt = make_retry(user, source_task_guid=source, new_task_guid=new_task_guid, **extra)
    follow(attempt, due_at=timezone.now() - timedelta(minutes=5))
    return attempt


def _reading(attempt) -> FollowUp:
    return FollowUp.objects.get(pk=attempt.pk)


def _panel(client, attempt, **params):
    return client.get(reverse("status_panel", args=[attempt.pk]), params, HTTP_HX_REQUEST="true")


def _submit_and_finish(client, sandbox, outcome: str, source=API_USER_KICKOUT_TASK_GUID):
    """A real retry whose new task ends `outcome` a moment later."""
    sandbox.configure(task_seconds=0.3, next_outcomes=[outcome])
    response = post_retry(client, source, action="send", batch_mode="new self-contained batch")
    assert response.status_code == 302
    time.sleep(0.5)
    # The worker's sweep, in this process: it sees the end, then reports it.
    follow_up.sweep()
    follow_up.sweep()
    return RetryAttempt.objects.latest("id")


def test_a_running_task_keeps_polling_after_each_answer(clerk, clerk_client):
    """Running: the fragment schedules its own next load, one after the other."""
    attempt = _retry_of(clerk, RUNNING_TASK_GUID)
    response = _panel(clerk_client, attempt, started=time.time())
    body = response.content.decode()
    assert response.status_code == 200
    assert 'hx-trigger="load delay:1s"' in body
    assert "Processing" in body and "still running" in body
    assert "hx-swap-oob" not in body


@pytest.mark.parametrize("outcome", ["Completed", "Completed with kickouts", "Failed"])
def test_an_ended_task_stops_polling_by_itself(clerk_client, sandbox, outcome):
    """The final fragment has no trigger and answers 286, and announces the end once."""
    attempt = _submit_and_finish(clerk_client, sandbox, outcome)
    response = _panel(clerk_client, attempt, started=time.time())
    body = response.content.decode()
    assert response.status_code == 286
    assert "hx-trigger" not in body.split("Check again")[0]
    assert f"The new import ended: {outcome}." in body
    assert 'id="status-announcer" hx-swap-oob="innerHTML"' in body
    reading = _reading(attempt)
    assert reading.status == outcome and reading.finished
    assert reading.end_date is not None and reading.read_at is not None


def test_an_unknown_final_status_is_shown_verbatim_and_ends_polling(clerk_client, sandbox):
    """Statuses are an open set: the end is told by endDate, not by the word."""
    attempt = _submit_and_finish(clerk_client, sandbox, "Imported with warnings")
    response = _panel(clerk_client, attempt, started=time.time())
    assert response.status_code == 286
    assert "Imported with warnings" in response.content.decode()
    assert 'class="badge badge-other"' in response.content.decode()


def test_kickouts_on_the_new_task_offer_a_retry_of_it(clerk_client, sandbox):
    """When the new task ends with kickouts, the panel links to retrying it."""
    attempt = _submit_and_finish(clerk_client, sandbox, "Completed with kickouts")
    body = _panel(clerk_client, attempt).content.decode()
    assert "This new import has kickouts too" in body
    assert reverse("task_detail", args=[attempt.new_task_guid]) in body


def test_upstream_errors_back_off_and_stop_after_three_in_a_row(clerk, clerk_client, sandbox):
    """Errors show 'last checked at', wait longer each time, then stop with a button."""
    attempt = _retry_of(clerk, RUNNING_TASK_GUID)
    sandbox.fault("task_get", *[{"status": 503}] * 3)
    first = _panel(clerk_client, attempt, started=time.time(), failures=0)
    body = first.content.decode()
    assert first.status_code == 200
    assert "Last checked at" in body and "HTTP 503" in body
    assert 'hx-trigger="load delay:2s"' in body and "failures=1" in body
    assert sandbox.count("task_get") == 3  # the client's own GET retries
    time.sleep(1.1)  # the next polling interval
    sandbox.fault("task_get", *[{"status": 503}] * 3)
    last = _panel(clerk_client, attempt, started=time.time(), failures=2)
    assert last.status_code == 286
    assert "Stopped checking after 3 failed attempts in a row." in last.content.decode()
    assert "Check again" in last.content.decode()


def test_polling_stops_at_the_cap_with_a_check_again_button(clerk, clerk_client, settings):
    """After the cap (30 minutes by default) the panel stops and offers to check again."""
    settings.STATUS_POLL_CAP_SECONDS = 60
    attempt = _retry_of(clerk, RUNNING_TASK_GUID)
    response = _panel(clerk_client, attempt, started=time.time() - 61)
    body = response.content.decode()
    assert response.status_code == 286
    assert "Stopped checking after 1 minutes; the import is still running." in body
    assert "Check again" in body


def test_without_javascript_the_retry_page_shows_the_status_and_a_refresh_link(clerk, clerk_client):
    """The page itself carries the current status and a plain link to refresh."""
    attempt = _retry_of(clerk, RUNNING_TASK_GUID)
    body = clerk_client.get(attempt.get_absolute_url()).content.decode()
    assert "Processing" in body
    assert f'href="{attempt.get_absolute_url()}">Refresh the status' in body
    assert 'id="status-announcer"' in body and 'aria-live="polite"' in body
    plain = clerk_client.get(reverse("status_panel", args=[attempt.pk]))
    assert plain.status_code == 302  # without htmx, the fragment URL leads to the page


def test_each_refresh_stores_what_it_saw(clerk, clerk_client):
    """The record keeps the last status seen, with the time it was seen."""
    attempt = _retry_of(clerk, RUNNING_TASK_GUID)
    _panel(clerk_client, attempt)
    reading = _reading(attempt)
    assert reading.status == "Processing"
    assert reading.finished is False
    assert reading.read_at is not None


def test_a_clerk_cannot_watch_another_clerks_retry(other_clerk, clerk_client):
    """Retry pages belong to who asked, and to supervisors."""
    attempt = _retry_of(other_clerk, RUNNING_TASK_GUID)
    assert clerk_client.get(attempt.get_absolute_url()).status_code == 404
    assert _panel(clerk_client, attempt).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_many_watchers_cause_one_upstream_request_per_interval(sandbox, django_user_model):
    """Forty concurrent panel refreshes of one task: at most one status GET per interval."""
    supervisor = django_user_model.objects.create_user("watcher", password="x")
    supervisor.groups.add(ensure_roles()["Supervisors"])
    attempt = _retry_of(supervisor, RUNNING_TASK_GUID)
    clients = []
    for _ in range(8):
        c = Client()
        c.force_login(supervisor)
        clients.append(c)
    sandbox.fault("task_get", latency=0.05)
    statuses = []

    def watch(c):
        try:
            for _ in range(5):
                statuses.append(_panel(c, attempt).status_code)
                time.sleep(0.1)
        finally:
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=watch, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    gets = [e for e in sandbox.log("task_get") if e["path"].endswith(RUNNING_TASK_GUID)]
    intervals = int(elapsed // 1.0) + 1  # STATUS_POLL_SECONDS is 1 in tests
    assert len(statuses) == 40 and set(statuses) == {200}
    assert 1 <= len(gets) <= intervals, (len(gets), elapsed)


def test_refresh_retries_brings_unfinished_retries_up_to_date(clerk):
    """The cron command stores each unfinished retry's current status."""
    done = _retry_of(clerk, COMPLETED_TASK_GUID)
    failed = _retry_of(clerk, FAILED_TASK_GUID, source=RUNNING_TASK_GUID)
    running = _retry_of(clerk, RUNNING_TASK_GUID, source=COMPLETED_TASK_GUID)
    out = io.StringIO()
    call_command("refresh_retries", stdout=out)
    done, failed, running = (_reading(a) for a in (done, failed, running))
    assert done.status == "Completed" and done.finished
    assert failed.status == "Failed" and failed.finished
    assert running.status == "Processing" and not running.finished
    assert "Checked 3 unfinished retries: 3 updated (2 now finished)" in out.getvalue()
    out = io.StringIO()
    call_command("refresh_retries", stdout=out)
    assert "Checked 1 unfinished retry" in out.getvalue()  # only the running one is left


def test_refresh_retries_reports_upstream_failures_and_exits_non_zero(clerk, sandbox):
    """A task EnergyCAP cannot answer for is reported; cron sees the failure."""
    _retry_of(clerk, RUNNING_TASK_GUID)
    sandbox.fault("task_get", {"status": 401})
    err = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("refresh_retries", stdout=io.StringIO(), stderr=err)
    assert "key is wrong" in err.getvalue()


def test_the_chain_of_retries_is_shown_both_ways(clerk_client, supervisor_client, sandbox):
    """Task → retry → new task → its retry: every page shows the whole chain."""
    first = _submit_and_finish(clerk_client, sandbox, "Completed with kickouts")
    middle_task = first.new_task_guid
    second = _submit_and_finish(supervisor_client, sandbox, "Completed", source=middle_task)
    assert second.parent == first

    middle_page = supervisor_client.get(reverse("task_detail", args=[middle_task]))
    chain = middle_page.context["lineage"]
    assert chain.ancestors == [first]
    assert [retry for _, retry in chain.descendants] == [second]
    body = middle_page.content.decode()
    assert reverse("retry_detail", args=[first.pk]) in body
    assert reverse("retry_detail", args=[second.pk]) in body

    root_page = supervisor_client.get(reverse("task_detail", args=[API_USER_KICKOUT_TASK_GUID]))
    descendants = root_page.context["lineage"].descendants
    assert [(depth, retry) for depth, retry in descendants] == [(0, first), (1, second)]

    retry_page = supervisor_client.get(second.get_absolute_url()).content.decode()
    assert reverse("retry_detail", args=[first.pk]) in retry_page
    assert API_USER_KICKOUT_TASK_GUID[:8] in retry_page
