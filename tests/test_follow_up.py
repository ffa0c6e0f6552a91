"""The follow-up as pages and people see it: the panel reads the record, the email, Your settings.

The worker itself runs in tests/test_worker.py; here its sweep runs in the test's own process
(`follow_up.sweep()`), or its record is written as it would write it.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from datetime import timedelta

from django.core import mail
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from kickouts import follow_up
from kickouts.bulk_models import BulkLine, BulkRetry, BulkState, LineState
from kickouts.follow_up_models import FollowState, FollowUp
from kickouts.models import Outcome, RetryAttempt, UserSettings
from kickouts.sandbox.state import COMPLETED_TASK_GUID, KICKOUT_TASK_GUID, RUNNING_TASK_GUID

from .factories import follow, make_retry


def followed_retry(user, new_task_guid=RUNNING_TASK_GUID, *, retry_fields=None, **fields):
    """A retry a worker follows, last checked a moment ago and due again in a second."""
    now = timezone.now()
    retry = make_retry(
        user,
        source_task_id=47223,
        new_task_guid=new_task_guid,
        answered_at=now - timedelta(seconds=30),
        **(retry_fields or {}),
    )
    values = {
        "status": "Processing",
        "begin_date": now - timedelta(seconds=30),
        "read_at": now,
        "checked_at": now,
        "succeeded_at": now,
        "due_at": now + timedelta(seconds=1),
    }
    values.update(fields)
    follow(retry, **values)
    return retry


def done_bulk(user, **fields) -> BulkRetry:
    """A bulk retry that sends no more, as the bulk sender leaves it."""
    values = {
        "requested_by": user,
        "form_token": uuid.uuid4(),
        "batch_mode": "new self-contained batch",
        "payload": {"batchSettings": {"batchMode": "new self-contained batch"}},
        "state": BulkState.DONE,
        "finished_at": timezone.now(),
    }
    values.update(fields)
    return BulkRetry.objects.create(**values)


def panel(client, attempt):
    return client.get(
        reverse("status_panel", args=[attempt.pk]), {"started": time.time()}, HTTP_HX_REQUEST="true"
    )


def queued_sweeps():
    return DBTaskResult.objects.filter(task_path="kickouts.follow_up.follow_due", status="READY")


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
    """The worker recorded the end and reported it: the panel says so, stops polling, asks
    nobody, and its last swap brings the new import's end to the headline."""
    now = timezone.now()
    attempt = followed_retry(
        clerk,
        state=FollowState.ENDED,
        due_at=None,
        status="Completed with kickouts",
        finished=True,
        end_date=now,
        success_count=12,
        batch_code="RETRY-7",
        batch_id=7,
    )
    response = panel(clerk_client, attempt)
    body = response.content.decode()
    assert response.status_code == 286
    assert "The new import ended: Completed with kickouts." in body
    assert 'id="end-badge" hx-swap-oob="true"' in body
    assert "RETRY-7 (#7)" in body
    assert sandbox.log("task_get") == []


def test_an_ended_import_is_polled_on_until_its_kickouts_are_compared(clerk, clerk_client, sandbox):
    """Ended but not reported yet: the panel keeps polling (the before and after is coming)."""
    attempt = followed_retry(
        clerk,
        state=FollowState.REPORTING,
        status="Completed",
        finished=True,
        end_date=timezone.now(),
    )
    response = panel(clerk_client, attempt)
    assert response.status_code == 200
    assert "Comparing the kickouts before and after" in response.content.decode()


def test_an_end_seen_before_a_late_worker_compared_keeps_polling_the_record_until_it_has(
    clerk, supervisor_client, sandbox
):
    """The page saw the end while the worker was late (seen in CI under load: the panel
    stopped and the before and after never came). The panel polls on, reading the record only,
    tells a supervisor the comparison waits for the worker, and its next swap after the worker
    reported brings the before and after."""
    long_ago = timezone.now() - timedelta(minutes=5)
    attempt = followed_retry(
        clerk,
        state=FollowState.REPORTING,
        status="Completed",
        finished=True,
        end_date=long_ago,
        due_at=long_ago,
    )
    response = panel(supervisor_client, attempt)
    body = response.content.decode()
    assert response.status_code == 200
    assert "Comparing the kickouts before and after" in body
    assert "The before and after appears here once it runs again" in body
    assert sandbox.log("task_get") == []
    assert queued_sweeps().count() == 1

    follow_up.sweep()  # the worker reports (its comparison asks EnergyCAP; the page does not)
    asked = len(sandbox.log("task_get"))
    response = panel(supervisor_client, attempt)
    assert response.status_code == 286
    assert "Comparing the kickouts before and after" not in response.content.decode()
    assert FollowUp.objects.get(pk=attempt.pk).state == FollowState.ENDED
    assert len(sandbox.log("task_get")) == asked


def test_a_late_sweep_falls_back_to_shared_polling_warns_a_supervisor_and_is_started_again(
    clerk, clerk_client, supervisor_client, sandbox
):
    """A follow-up three intervals past due: the panel asks EnergyCAP itself, a supervisor is
    told the worker seems down (a clerk is not), and one sweep is queued, however many look."""
    long_ago = timezone.now() - timedelta(minutes=5)
    attempt = followed_retry(clerk, checked_at=long_ago, due_at=long_ago)
    supervisor_body = panel(supervisor_client, attempt).content.decode()
    clerk_body = panel(clerk_client, attempt).content.decode()
    assert "The background worker seems to be down" in supervisor_body
    assert "The background worker seems to be down" not in clerk_body
    assert "Processing" in clerk_body
    assert len(sandbox.log("task_get")) == 1  # shared polling: one per interval
    assert queued_sweeps().count() == 1


def test_an_outcome_unknown_retry_is_not_followed(clerk, sandbox):
    """No task GUID, nothing to follow: no follow-up, no sweep."""
    attempt = make_retry(clerk, outcome=Outcome.UNKNOWN, new_task_guid="")
    assert follow_up.start(attempt) is None
    assert not FollowUp.objects.exists()
    assert not queued_sweeps().exists()


def test_a_submitted_retry_is_followed_once_however_often_it_is_started(clerk, sandbox):
    """start twice: one follow-up, due now, and one sweep queued for it."""
    attempt = make_retry(clerk, new_task_guid=RUNNING_TASK_GUID)
    first = follow_up.start(attempt)
    again = follow_up.start(attempt)
    assert first.pk == again.pk == attempt.pk
    assert FollowUp.objects.get().state == FollowState.FOLLOWING
    assert queued_sweeps().count() == 1


def test_a_due_follow_up_is_claimed_by_one_sweep_only(clerk, sandbox):
    """Two sweeps claim at the same moment: the UPDATE from the due time read is one claim."""
    attempt = followed_retry(clerk, due_at=timezone.now() - timedelta(seconds=1))
    now = timezone.now()
    read_by_both = FollowUp.objects.get(pk=attempt.pk)
    first = follow_up.claim_due(now)
    # The second read the row before the first moved it: its UPDATE changes nothing.
    second = FollowUp.objects.filter(pk=read_by_both.pk, due_at=read_by_both.due_at).update(
        due_at=now
    )
    assert [c.follow.pk for c in first] == [attempt.pk]
    assert second == 0


def test_a_sweep_asks_records_and_schedules_the_next_ask(clerk, sandbox, settings):
    """One sweep: one GET of the new task, the reading stored, the next ask an interval on."""
    settings.STATUS_POLL_SECONDS = 3
    attempt = followed_retry(clerk, due_at=timezone.now(), read_at=None, status="")
    follow_up.sweep()
    row = FollowUp.objects.get(pk=attempt.pk)
    assert len(sandbox.log("task_get")) == 1
    assert row.status and row.read_at is not None
    assert row.state == FollowState.FOLLOWING
    assert 2 <= (row.due_at - row.checked_at).total_seconds() <= 4
    assert RetryAttempt.objects.get(pk=attempt.pk).new_task_id is not None  # its number


def test_the_requester_is_emailed_once_with_the_status_counts_batch_and_link(
    clerk, settings, sandbox
):
    """The end's report runs once: a second sweep finds nothing due, and one email went out."""
    settings.DASHBOARD_URL = "https://kickouts.example.com"
    clerk.email = "carla@example.com"
    clerk.save()
    attempt = followed_retry(
        clerk,
        state=FollowState.REPORTING,
        due_at=timezone.now(),
        status="Completed with kickouts",
        finished=True,
        end_date=timezone.now(),
        success_count=40,
        analyzing_count=0,
        flag_count=2,
        batch_code="RETRY-7",
        batch_id=7,
    )
    RetryAttempt.objects.filter(pk=attempt.pk).update(new_task_id=47301)
    follow_up.sweep()
    follow_up.sweep()
    [message] = mail.outbox
    assert message.subject == "Retry of Import 47223: Completed with kickouts"
    assert message.to == ["carla@example.com"]
    assert "New import: Import 47301" in message.body
    assert "Status: Completed with kickouts" in message.body
    assert "Bills imported · analyzing · unresolved flags: 40 · 0 · 2" in message.body
    assert "Batch: RETRY-7 (#7)" in message.body
    assert f"https://kickouts.example.com/retries/{attempt.pk}/" in message.body
    row = FollowUp.objects.get(pk=attempt.pk)
    assert row.state == FollowState.ENDED
    assert row.notification == "Emailed to carla@example.com."
    assert row.notified_at is not None


def test_a_bulks_email_waits_for_the_report_of_an_import_that_ended_in_the_same_sweep(
    clerk, sandbox
):
    """One import of a done bulk was reported (the email is due); the sweep that sends it
    also sees the other import end. The email waits for that one's before and after (seen in
    CI: it went out without the "completed with kickouts" line), and goes out once."""
    clerk.email = "carla@example.com"
    clerk.save()
    now = timezone.now()
    bulk = done_bulk(clerk, email_due_at=now)  # the first import's report made it due
    reported = make_retry(clerk, bulk=bulk, source_task_id=47223, new_task_guid=COMPLETED_TASK_GUID)
    follow(reported, state=FollowState.ENDED, due_at=None, status="Completed", finished=True)
    ending = make_retry(
        clerk,
        bulk=bulk,
        source_task_id=47224,
        source_task_guid=KICKOUT_TASK_GUID,
        new_task_guid=KICKOUT_TASK_GUID,
    )
    follow(ending)
    for position, retry in enumerate([reported, ending], start=1):
        BulkLine.objects.create(
            bulk=bulk, position=position, task_guid=retry.source_task_guid,
            task_id=retry.source_task_id, state=LineState.SENT, retry=retry,
        )  # fmt: skip

    follow_up.sweep()  # asks: the second import ended with kickouts
    assert FollowUp.objects.get(pk=ending.pk).state == FollowState.REPORTING
    assert mail.outbox == []
    for _ in range(3):
        follow_up.sweep()
    [message] = mail.outbox
    assert FollowUp.objects.get(pk=ending.pk).state == FollowState.ENDED
    ending = RetryAttempt.objects.get(pk=ending.pk)
    assert ending.compared.rows_left
    assert (
        f"- Import 47224: its new import, Import {ending.new_task_id}, completed with kickouts: "
        f"{ending.compared.rows_left} rows still kicked out"
    ) in " ".join(message.body.split())


def test_a_bulks_email_claimed_in_the_sweep_that_reports_its_last_import_goes_out_once(
    clerk, sandbox
):
    """One sweep holds both the last import's report and the bulk's email (seen in CI: two
    emails). The report makes the email due again after the claim was taken; the email goes
    out once, however many sweeps follow."""
    clerk.email = "carla@example.com"
    clerk.save()
    now = timezone.now()
    bulk = done_bulk(clerk, email_due_at=now - timedelta(seconds=1))
    reported = make_retry(clerk, bulk=bulk, source_task_id=47223, new_task_guid=COMPLETED_TASK_GUID)
    follow(reported, state=FollowState.ENDED, due_at=None, status="Completed", finished=True)
    last = make_retry(clerk, bulk=bulk, source_task_id=47224, new_task_guid=COMPLETED_TASK_GUID)
    follow(last, state=FollowState.REPORTING, status="Completed", finished=True, end_date=now)

    claims = follow_up.claim_due(timezone.now())
    assert {type(c).__name__ for c in claims} == {"Claim", "EmailClaim"}
    BulkRetry.objects.filter(pk=bulk.pk).update(email_due_at=now - timedelta(seconds=1))
    FollowUp.objects.filter(pk=last.pk).update(due_at=now)  # unclaimed again: one sweep has both
    for _ in range(4):
        follow_up.sweep()
    assert len(mail.outbox) == 1
    assert BulkRetry.objects.get(pk=bulk.pk).notified_at is not None


def test_a_clerk_without_an_email_address_gets_none_and_the_retry_page_says_so(
    clerk, clerk_client, sandbox
):
    """No address: the page tells Carla before the end, and nothing is sent after it."""
    attempt = followed_retry(clerk)
    page = clerk_client.get(reverse("retry_detail", args=[attempt.pk])).content.decode()
    assert "You have no email address here, so no email will tell you when it ends." in page
    FollowUp.objects.filter(pk=attempt.pk).update(
        state=FollowState.REPORTING, due_at=timezone.now(), finished=True, status="Completed"
    )
    follow_up.sweep()
    assert mail.outbox == []
    row = FollowUp.objects.get(pk=attempt.pk)
    assert row.notification == "Not emailed: the requester has no email address."


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
    FollowUp.objects.filter(pk=attempt.pk).update(
        state=FollowState.REPORTING, due_at=timezone.now(), finished=True, status="Completed"
    )
    follow_up.sweep()
    assert mail.outbox == []
    row = FollowUp.objects.get(pk=attempt.pk)
    assert row.notification == "Not emailed: the requester turned these emails off."


def test_refresh_retries_records_the_end_the_way_the_sweep_does(clerk, sandbox):
    """The manual command sees the end of a followed retry: its report is due, once."""
    attempt = followed_retry(clerk, new_task_guid=COMPLETED_TASK_GUID)
    call_command("refresh_retries", stdout=io.StringIO())
    row = FollowUp.objects.get(pk=attempt.pk)
    assert row.state == FollowState.REPORTING
    assert row.finished
    assert queued_sweeps().count() == 1
    call_command("refresh_retries", stdout=io.StringIO())
    assert FollowUp.objects.get(pk=attempt.pk).state == FollowState.REPORTING
    assert queued_sweeps().count() == 1


def test_the_follower_asks_less_often_as_a_retry_ages_and_after_failures(settings):
    """Every interval while young, 30 s until an hour, 5 minutes after; failures double it."""
    settings.STATUS_POLL_SECONDS = 3
    assert follow_up.follow_delay(timedelta(minutes=2), failures=0) == 3
    assert follow_up.follow_delay(timedelta(minutes=30), failures=0) == 30
    assert follow_up.follow_delay(timedelta(hours=5), failures=0) == 300
    assert follow_up.follow_delay(timedelta(minutes=2), failures=1) == 6
    assert follow_up.follow_delay(timedelta(minutes=2), failures=3) == 24
    assert follow_up.follow_delay(timedelta(hours=5), failures=4) == 900  # at most 15 minutes


def test_an_ended_task_is_asked_about_once(clerk, sandbox):
    """The ask that sees the end is the last: the report compares from that reading."""
    attempt = followed_retry(clerk, new_task_guid=COMPLETED_TASK_GUID, due_at=timezone.now())
    follow_up.sweep()
    assert FollowUp.objects.get(pk=attempt.pk).state == FollowState.REPORTING
    follow_up.sweep()
    assert FollowUp.objects.get(pk=attempt.pk).state == FollowState.ENDED
    asked = [e for e in sandbox.log("task_get") if COMPLETED_TASK_GUID in e["path"]]
    assert len(asked) == 1


def test_a_sweep_lost_with_its_worker_is_started_again_by_a_page_view(clerk, clerk_client, sandbox):
    """The queued sweep died with its worker (its row RUNNING for good): the next page view
    of an overdue follow-up queues another, once."""
    from kickouts.sweeps import Sweep

    long_ago = timezone.now() - timedelta(minutes=5)
    attempt = followed_retry(clerk, due_at=long_ago, checked_at=long_ago)
    dead = follow_up.follow_due.enqueue()
    DBTaskResult.objects.filter(id=dead.id).update(status="RUNNING")
    Sweep.objects.update_or_create(
        name="follow_due", defaults={"task_id": str(dead.id), "run_at": long_ago}
    )
    panel(clerk_client, attempt)
    panel(clerk_client, attempt)
    [queued] = queued_sweeps()
    assert Sweep.objects.get(name="follow_due").task_id == str(queued.id)


def test_page_views_while_no_worker_runs_queue_no_more_sweeps(clerk, clerk_client, sandbox):
    """The queued sweep is still waiting (the workers are down): page views do not pile up
    more sweeps behind it."""
    from kickouts.sweeps import Sweep

    long_ago = timezone.now() - timedelta(minutes=5)
    attempt = followed_retry(clerk, due_at=long_ago, checked_at=long_ago)
    follow_up.wake()
    Sweep.objects.filter(name="follow_due").update(run_at=long_ago)  # due long ago, not run
    for _ in range(3):
        panel(clerk_client, attempt)
    assert queued_sweeps().count() == 1


def test_a_retry_left_submitting_by_a_dead_process_is_settled_by_the_sweep(clerk, sandbox):
    """No page opened: once the send's lease has passed, the sweep calls a begun POST
    "outcome unknown" and an unbegun one "not sent" (each proved by its own record)."""
    from kickouts.models import send_lease

    gone = timezone.now() - send_lease() - timedelta(seconds=1)
    begun = make_retry(clerk, outcome=Outcome.SUBMITTING, requested_at=gone, sent_at=gone)
    unbegun = make_retry(clerk, outcome=Outcome.SUBMITTING, requested_at=gone)
    assert follow_up.next_due() <= timezone.now()  # the sweep is due for them
    follow_up.sweep()
    begun.refresh_from_db()
    unbegun.refresh_from_db()
    assert begun.outcome == Outcome.UNKNOWN and "never re-sent" in begun.upstream_message
    assert unbegun.outcome == Outcome.NOT_SENT
    assert sandbox.count("kickout_post") == 0
