"""The follow-up as pages and people see it: the panel reads the record, the email, Your settings.

The worker itself runs in tests/test_worker.py; here its record is written as it would write it.
"""

from __future__ import annotations

import io
import re
import time
from datetime import timedelta

from django.core import mail
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from kickouts.models import FollowState, Outcome, UserSettings
from kickouts.sandbox.state import COMPLETED_TASK_GUID, RUNNING_TASK_GUID
from kickouts.tasks import notify_requester, start_following

from .factories import make_retry


def followed_retry(user, new_task_guid=RUNNING_TASK_GUID, **fields):
    """A retry a worker follows, last checked a moment ago and due again in a second."""
    now = timezone.now()
    values = {
        "source_task_id": 47223,
        "new_task_guid": new_task_guid,
        "answered_at": now - timedelta(seconds=30),
        "new_task_status": "Processing",
        "new_task_begin_date": now - timedelta(seconds=30),
        "new_task_checked_at": now,
        "follow_state": FollowState.FOLLOWING,
        "follow_checked_at": now,
        "follow_succeeded_at": now,
        "follow_next_at": now + timedelta(seconds=1),
        "follow_lease_until": now + timedelta(seconds=60),
    }
    values.update(fields)
    return make_retry(user, **values)


def panel(client, attempt):
    return client.get(
        reverse("status_panel", args=[attempt.pk]), {"started": time.time()}, HTTP_HX_REQUEST="true"
    )


def queued(task_name: str):
    return DBTaskResult.objects.filter(task_path=f"kickouts.tasks.{task_name}", status="READY")


def test_viewers_of_a_followed_retry_cost_energycap_nothing(
    clerk, clerk_client, supervisor_client, sandbox
):
    """Ten panel polls by a clerk and a supervisor: read from the record, no upstream request."""
    attempt = followed_retry(clerk)
    for client in [clerk_client, supervisor_client] * 5:
        response = panel(client, attempt)
        assert response.status_code == 200
        body = response.content.decode()
        assert "Processing" in body
        assert "Followed in the background" in body
        assert 'hx-trigger="load delay:1s"' in body
    assert sandbox.log("task_get") == []


def test_a_followed_retry_that_ended_stops_the_panel_without_asking(clerk, clerk_client, sandbox):
    """The worker recorded the end: the panel says so, stops polling, and asks nobody."""
    now = timezone.now()
    attempt = followed_retry(
        clerk,
        follow_state=FollowState.ENDED,
        new_task_status="Completed with kickouts",
        new_task_finished=True,
        new_task_end_date=now,
        new_task_success_count=12,
        new_task_batch_code="RETRY-7",
        new_task_batch_id=7,
    )
    response = panel(clerk_client, attempt)
    body = response.content.decode()
    assert response.status_code == 286
    assert "The new import task ended: Completed with kickouts." in body
    assert "RETRY-7 (#7)" in body
    assert sandbox.log("task_get") == []


def test_a_late_follower_falls_back_to_shared_polling_and_warns_a_supervisor(
    clerk, clerk_client, supervisor_client, sandbox
):
    """No follow-up for three intervals: the panel asks EnergyCAP itself, a supervisor is
    told the worker seems down (a clerk is not), and a rescue step is queued once."""
    long_ago = timezone.now() - timedelta(minutes=5)
    attempt = followed_retry(
        clerk,
        follow_checked_at=long_ago,
        follow_next_at=long_ago,
        follow_lease_until=long_ago,
    )
    supervisor_body = panel(supervisor_client, attempt).content.decode()
    clerk_body = panel(clerk_client, attempt).content.decode()
    assert "The background worker seems to be down" in supervisor_body
    assert "The background worker seems to be down" not in clerk_body
    assert "Processing" in clerk_body
    assert len(sandbox.log("task_get")) == 1  # shared polling: one per interval
    assert queued("follow_retry").count() == 1


def test_an_outcome_unknown_retry_is_not_followed(clerk, sandbox):
    """No task GUID, nothing to follow: no step is queued and the record stays unfollowed."""
    attempt = make_retry(clerk, outcome=Outcome.UNKNOWN, new_task_guid="")
    assert start_following(attempt.pk) is False
    attempt.refresh_from_db()
    assert attempt.follow_state == FollowState.NOT_FOLLOWED
    assert not queued("follow_retry").exists()


def test_a_submitted_retry_is_followed_once_however_often_it_is_started(clerk, sandbox):
    """start_following twice: one first step, named on the record."""
    attempt = make_retry(clerk, new_task_guid=RUNNING_TASK_GUID)
    assert start_following(attempt.pk) is True
    assert start_following(attempt.pk) is False
    attempt.refresh_from_db()
    [step] = queued("follow_retry")
    assert attempt.follow_state == FollowState.FOLLOWING
    assert attempt.follower_task_id == str(step.id)


def test_the_requester_is_emailed_once_with_the_status_counts_batch_and_link(
    clerk, settings, sandbox
):
    """Two notification steps for one retry (two workers racing): one email."""
    settings.DASHBOARD_URL = "https://kickouts.example.com"
    clerk.email = "carla@example.com"
    clerk.save()
    attempt = followed_retry(
        clerk,
        follow_state=FollowState.ENDED,
        new_task_status="Completed with kickouts",
        new_task_finished=True,
        new_task_success_count=40,
        new_task_analyzing_count=0,
        new_task_flag_count=2,
        new_task_batch_code="RETRY-7",
        new_task_batch_id=7,
    )
    assert notify_requester.call(attempt.pk) == "Emailed to carla@example.com."
    assert notify_requester.call(attempt.pk) == "already notified"
    [message] = mail.outbox
    assert message.subject == "Retry of Bill Import 47223: Completed with kickouts"
    assert message.to == ["carla@example.com"]
    assert "Status: Completed with kickouts" in message.body
    assert "Bills imported · analyzing · unresolved flags: 40 · 0 · 2" in message.body
    assert "Batch: RETRY-7 (#7)" in message.body
    assert f"https://kickouts.example.com/retries/{attempt.pk}/" in message.body


def test_a_clerk_without_an_email_address_gets_none_and_the_retry_page_says_so(
    clerk, clerk_client, sandbox
):
    """No address: the page tells Carla before the end, and nothing is sent after it."""
    attempt = followed_retry(clerk)
    page = clerk_client.get(reverse("retry_detail", args=[attempt.pk])).content.decode()
    assert "You have no email address here, so no email will tell you when it ends." in page
    assert notify_requester.call(attempt.pk) == "Not emailed: the requester has no email address."
    assert mail.outbox == []


def test_a_clerk_turns_the_emails_off_on_your_settings(clerk, clerk_client, sandbox):
    """The header links to /settings/; unticking the box stops the email."""
    clerk.email = "carla@example.com"
    clerk.save()
    page = clerk_client.get(reverse("task_list")).content.decode()
    assert 'href="/settings/"' in page
    form = clerk_client.get(reverse("user_settings")).content.decode()
    assert "carla@example.com" in form
    assert re.search(r'<input type="checkbox" name="email_when_retry_ends"[^>]* checked>', form)
    response = clerk_client.post(reverse("user_settings"), {})
    assert response.status_code == 302
    assert UserSettings.objects.get(user=clerk).email_when_retry_ends is False

    attempt = followed_retry(clerk)
    page = clerk_client.get(reverse("retry_detail", args=[attempt.pk])).content.decode()
    assert "Email turned off in Your settings." in page
    assert (
        notify_requester.call(attempt.pk) == "Not emailed: the requester turned these emails off."
    )
    assert mail.outbox == []


def test_refresh_retries_records_the_end_the_way_the_follower_does(clerk, sandbox):
    """The manual command sees the end of a followed retry: ended, and one email queued."""
    attempt = followed_retry(clerk, new_task_guid=COMPLETED_TASK_GUID)
    call_command("refresh_retries", stdout=io.StringIO())
    attempt.refresh_from_db()
    assert attempt.follow_state == FollowState.ENDED
    assert attempt.new_task_finished
    assert queued("notify_requester").count() == 1
    call_command("refresh_retries", stdout=io.StringIO())
    assert queued("notify_requester").count() == 1
