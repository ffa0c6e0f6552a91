"""Sending a retry: exactly once, recorded before and after, every outcome honest."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from kickouts.models import Outcome, RetryAttempt
from kickouts.roles import ensure_roles
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID, KICKOUT_TASK_GUID

from .factories import make_retry
from .retry_helpers import form_errors, post_retry

TASK = API_USER_KICKOUT_TASK_GUID

# (story, sandbox set-up, form fields, the exact body EnergyCAP must receive)
VALID = [
    (
        "use existing batch by id",
        None,
        {"batch_mode": "use existing batch", "existing_open_batch_id": "901"},
        {"batchSettings": {"batchMode": "use existing batch", "existingOpenBatchId": 901}},
    ),
    (
        "use existing batch: the only open one",
        "close-902",
        {"batch_mode": "use existing batch"},
        {"batchSettings": {"batchMode": "use existing batch"}},
    ),
    (
        "new batch leaving others open, with a trimmed code",
        None,
        {
            "batch_mode": "new batch",
            "leave_existing_batches_open": True,
            "new_batch_code": "  KO-RETRY-1 ",
        },
        {
            "batchSettings": {
                "batchMode": "new batch",
                "leaveExistingBatchesOpen": True,
                "newBatchCode": "KO-RETRY-1",
            }
        },
    ),
    (
        "new batch closing the only open one",
        "close-902",
        {"batch_mode": "new batch"},
        {"batchSettings": {"batchMode": "new batch", "leaveExistingBatchesOpen": False}},
    ),
    (
        "new self-contained batch without a code",
        None,
        {"batch_mode": "new self-contained batch"},
        {"batchSettings": {"batchMode": "new self-contained batch"}},
    ),
    (
        "use pending batch with note, resolved audits and comment",
        None,
        {
            "batch_mode": "use pending batch",
            "pending_batch_id": "907",
            "import_note": "Fixed alias",
            "save_as_resolved": True,
            "comment": "Audits reviewed by Sam",
        },
        {
            "batchSettings": {"batchMode": "use pending batch", "pendingBatchId": 907},
            "importNote": "Fixed alias",
            "saveAsResolved": True,
            "comment": "Audits reviewed by Sam",
        },
    ),
    (
        "smart batch on a closed code",
        None,
        {"batch_mode": "smart batch", "new_batch_code": "ELEC-OCT"},
        {"batchSettings": {"batchMode": "smart batch", "newBatchCode": "ELEC-OCT"}},
    ),
]


@pytest.mark.parametrize(
    ("setup", "fields", "expected"), [c[1:] for c in VALID], ids=[c[0] for c in VALID]
)
def test_each_mode_sends_exactly_the_fields_it_uses(
    clerk, clerk_client, sandbox, setup, fields, expected
):
    """The body EnergyCAP receives holds only what the mode uses: no nulls, no ignored fields."""
    if setup == "close-902":
        sandbox.update_batch(902, batchStatus="Closed", isOpen=False)
    response = post_retry(clerk_client, TASK, action="send", **fields)
    assert response.status_code == 302, form_errors(response)
    posts = sandbox.log("kickout_post")
    assert len(posts) == 1
    assert posts[0]["body"] == expected
    assert posts[0]["status"] == 200
    attempt = RetryAttempt.objects.get()
    assert response["Location"] == attempt.get_absolute_url()
    assert attempt.outcome == Outcome.SUBMITTED
    assert attempt.payload == expected
    assert attempt.requested_by == clerk
    assert attempt.new_task_guid


def test_after_success_the_clerk_lands_on_the_retry_page(clerk_client, sandbox):
    """Post/redirect/get to /retries/<id>/, which shows the body and the new task."""
    response = post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    page = clerk_client.get(response["Location"])
    attempt = RetryAttempt.objects.get()
    body = page.content.decode()
    assert page.status_code == 200
    assert attempt.new_task_guid in body
    assert "new self-contained batch" in body
    assert "Carla Clerk" in body


def test_a_first_retry_puts_the_clerk_in_the_historys_people_list_at_once(
    clerk, clerk_client, supervisor_client, sandbox
):
    """The list is cached for a minute, but a recorded retry makes it read again."""
    assert "Carla Clerk (carla)" not in supervisor_client.get(reverse("history")).content.decode()
    post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    body = supervisor_client.get(reverse("history")).content.decode()
    assert f'<option value="{clerk.pk}">Carla Clerk (carla)</option>' in body


def test_htmx_submits_are_redirected_with_hx_redirect(clerk_client, sandbox):
    """htmx gets HX-Redirect to the retry page, not a swapped fragment."""
    response = post_retry(
        clerk_client, TASK, action="send", htmx=True, batch_mode="new self-contained batch"
    )
    assert response["HX-Redirect"] == RetryAttempt.objects.get().get_absolute_url()


def test_the_same_form_sent_twice_makes_one_post(clerk_client, sandbox):
    """A double click, a resubmitted form or the back button: one POST, one record."""
    token = str(uuid.uuid4())
    data = {"action": "send", "form_token": token, "batch_mode": "new self-contained batch"}
    url = reverse("retry_form", args=[TASK])
    first = clerk_client.post(url, data)
    second = clerk_client.post(url, data)
    assert first["Location"] == second["Location"]
    assert RetryAttempt.objects.count() == 1
    assert sandbox.count("kickout_post") == 1


def test_the_record_is_written_before_the_post(clerk_client, sandbox, settings):
    """A POST that never answers still leaves a row: it was written first."""
    settings.ENERGYCAP_READ_TIMEOUT = 1
    sandbox.fault("kickout_post", {"hang": 3, "apply": True})
    response = post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    attempt = RetryAttempt.objects.get()
    assert attempt.outcome == Outcome.UNKNOWN
    assert attempt.sent_at is not None
    assert "check the task list before retrying" in attempt.upstream_message
    assert sandbox.count("kickout_post") == 1
    page = clerk_client.get(response["Location"]).content.decode()
    assert "Outcome unknown." in page and "check the task list before retrying" in page
    assert page.count("check the task list before retrying") == 1


def test_a_dropped_connection_after_sending_is_unknown_and_never_resent(clerk_client, sandbox):
    """A broken connection may have delivered the POST: unknown, zero re-sends."""
    sandbox.fault("kickout_post", {"drop": True})
    post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    assert RetryAttempt.objects.get().outcome == Outcome.UNKNOWN
    assert sandbox.count("kickout_post") == 1


def test_a_503_on_the_post_is_recorded_and_a_new_retry_is_allowed(clerk_client, sandbox):
    """Exactly one POST, outcome rejected with the status; then a fresh retry goes through."""
    sandbox.fault("kickout_post", {"status": 503})
    post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    first = RetryAttempt.objects.get()
    assert first.outcome == Outcome.REJECTED
    assert first.upstream_status_code == 503
    assert sandbox.count("kickout_post") == 1
    again = post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    assert again.status_code == 302
    assert RetryAttempt.objects.latest("id").outcome == Outcome.SUBMITTED
    assert sandbox.count("kickout_post") == 2
    assert sandbox.count("task_get") >= 2  # the task was checked again each time


def test_energycaps_400_message_is_recorded_and_shown(clerk_client, sandbox):
    """EnergyCAP's own refusal is kept word for word."""
    sandbox.update_batch(907, batchStatus="Closed", isOpen=False)
    sandbox.add_batch(batchCode="LATE-PENDING", batchStatus="Pending")
    # The form saw 907 as pending a moment ago; EnergyCAP now refuses it.
    response = post_retry(
        clerk_client, TASK, action="send", batch_mode="use pending batch", pending_batch_id="907"
    )
    assert "not a pending batch" in str(form_errors(response))
    sandbox.fault("kickout_post", {"status": 400})
    post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    attempt = RetryAttempt.objects.get()
    assert attempt.outcome == Outcome.REJECTED and attempt.upstream_status_code == 400
    page = clerk_client.get(attempt.get_absolute_url()).content.decode()
    assert "EnergyCAP refused the re-import (HTTP 400)" in page


def test_a_key_without_the_create_permission_is_rejected_with_both_causes(clerk_client, sandbox):
    """401 from the POST: bad key or missing Bills and Batches permission."""
    sandbox.set_me(create=False)
    post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    attempt = RetryAttempt.objects.get()
    assert attempt.outcome == Outcome.REJECTED
    assert attempt.upstream_status_code == 401
    assert "key is wrong" in attempt.upstream_message
    assert "permission" in attempt.upstream_message


def test_energycap_unreachable_before_sending_is_not_sent(clerk_client, sandbox, settings):
    """The re-check cannot connect: the retry is recorded as not sent, nothing posted."""
    response = post_retry(clerk_client, TASK, batch_mode="new self-contained batch")
    assert response.context["confirming"]
    sandbox.fault("task_get", {"drop": True}, {"drop": True}, {"drop": True}, {"drop": True})
    sandbox.fault("task_get", {"drop": True}, {"drop": True})
    post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    # The view's own first GET of the task may fail too: then nothing is recorded at all,
    # and the page says EnergyCAP could not be reached.
    assert sandbox.count("kickout_post") == 0
    for attempt in RetryAttempt.objects.all():
        assert attempt.outcome == Outcome.NOT_SENT


def test_a_stale_task_status_stops_the_send(clerk_client, sandbox):
    """Right before sending the task is fetched again; a changed status sends nothing."""
    task = sandbox.add_task(status="Completed with kickouts", kickoutMessages=["Account not found"])
    guid = task["taskGUId"]
    review = post_retry(clerk_client, guid, batch_mode="new self-contained batch")
    assert review.context["confirming"]
    sandbox.update_task(guid, status="Completed")
    response = post_retry(clerk_client, guid, action="send", batch_mode="new self-contained batch")
    assert sandbox.count("kickout_post") == 0
    assert response.status_code == 409
    assert "ended “Completed”" in response.content.decode()


def test_a_second_retry_of_an_imported_task_needs_a_supervisor(
    clerk_client, supervisor_client, sandbox
):
    """Re-importing twice duplicates bills: clerks are stopped, supervisors must confirm."""
    post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    earlier = RetryAttempt.objects.get()

    refused = post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    assert "Only a supervisor" in " ".join(refused.context["form"].non_field_errors())
    assert "Carla Clerk" in refused.content.decode()
    assert earlier.new_task_guid in refused.content.decode()

    unconfirmed = post_retry(
        supervisor_client,
        TASK,
        action="send",
        batch_mode="new self-contained batch",
        duplicate_of=earlier.pk,
    )
    assert "Tick this box" in str(form_errors(unconfirmed)["confirm_duplicate"])
    assert sandbox.count("kickout_post") == 1

    confirmed = post_retry(
        supervisor_client,
        TASK,
        action="send",
        batch_mode="new self-contained batch",
        duplicate_of=earlier.pk,
        confirm_duplicate=True,
    )
    assert confirmed.status_code == 302
    repeat = RetryAttempt.objects.latest("id")
    assert repeat.confirmed_duplicate_of == earlier
    assert repeat.duplicate_sequence == 1
    assert sandbox.count("kickout_post") == 2


def test_a_confirmation_naming_an_older_retry_is_refused(supervisor_client, sandbox):
    """If another retry happened since the warning was read, confirm again."""
    post_retry(supervisor_client, TASK, action="send", batch_mode="new self-contained batch")
    earlier = RetryAttempt.objects.get()
    response = post_retry(
        supervisor_client,
        TASK,
        action="send",
        batch_mode="new self-contained batch",
        duplicate_of=earlier.pk + 1000,
        confirm_duplicate=True,
    )
    assert "made since this form was opened" in str(form_errors(response))
    assert sandbox.count("kickout_post") == 1


def test_a_stale_submission_whose_post_had_begun_turns_unknown_and_needs_a_supervisor(
    clerk, clerk_client, sandbox
):
    """A process that died during the POST leaves "submitting"; once its lease has passed it
    is "outcome unknown" (EnergyCAP may have imported), and a clerk is stopped."""
    from datetime import timedelta

    from django.utils import timezone

    an_hour_ago = timezone.now() - timedelta(hours=1)
    make_retry(
        clerk,
        source_task_guid=TASK,
        outcome=Outcome.SUBMITTING,
        requested_at=an_hour_ago,
        sent_at=an_hour_ago,
    )
    response = post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    assert "Only a supervisor" in " ".join(response.context["form"].non_field_errors())
    stale = RetryAttempt.objects.get()
    assert stale.outcome == Outcome.UNKNOWN
    assert "never re-sent" in stale.upstream_message
    assert sandbox.count("kickout_post") == 0


def test_a_stale_submission_that_never_sent_is_not_sent_and_frees_the_task(
    clerk, clerk_client, sandbox
):
    """A process that died before its POST began leaves "submitting" without a send time: its
    own record proves nothing reached EnergyCAP, so it is "not sent" and the clerk may retry."""
    from datetime import timedelta

    from django.utils import timezone

    stale = make_retry(
        clerk,
        source_task_guid=TASK,
        outcome=Outcome.SUBMITTING,
        requested_at=timezone.now() - timedelta(hours=1),
    )
    post_retry(clerk_client, TASK, action="send", batch_mode="new self-contained batch")
    stale.refresh_from_db()
    assert stale.outcome == Outcome.NOT_SENT
    assert "nothing to EnergyCAP" in stale.upstream_message or "Not sent" in stale.upstream_message
    assert RetryAttempt.objects.exclude(pk=stale.pk).get().outcome == Outcome.SUBMITTED
    assert sandbox.count("kickout_post") == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_simultaneous_submits_make_one_post(sandbox, django_user_model):
    """20 clerks click at once: one upstream POST, every other request answered cleanly."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's concurrency; `make test` runs this on PostgreSQL")
    staff = ensure_roles()["AP staff"]
    clients = []
    for n in range(20):
        user = django_user_model.objects.create_user(f"clerk{n}", password="x")
        user.groups.add(staff)
        c = Client()
        c.force_login(user)
        clients.append(c)
    sandbox.fault("kickout_post", latency=0.3)
    barrier = threading.Barrier(20)
    statuses = []

    def submit(c):
        barrier.wait()
        try:
            statuses.append(
                post_retry(
                    c, KICKOUT_TASK_GUID, action="send", batch_mode="new self-contained batch"
                ).status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sandbox.count("kickout_post") == 1
    assert len(statuses) == 20 and all(s in (200, 302) for s in statuses), statuses
    assert RetryAttempt.objects.filter(outcome=Outcome.SUBMITTED).count() == 1


def test_a_rejected_retry_offers_to_try_again_with_the_same_settings(clerk_client, sandbox):
    """The retry page links back to the form, filled with what was sent."""
    sandbox.fault("kickout_post", {"status": 400})
    post_retry(
        clerk_client,
        TASK,
        action="send",
        batch_mode="use pending batch",
        pending_batch_id="907",
        import_note="Second try",
    )
    attempt = RetryAttempt.objects.get()
    page = clerk_client.get(attempt.get_absolute_url()).content.decode()
    link = reverse("task_detail", args=[TASK]) + f"?again={attempt.pk}"
    assert link in page
    form = clerk_client.get(link).context["form"]
    assert form.initial["batch_mode"] == "use pending batch"
    assert form.initial["pending_batch_id"] == 907
    assert form.initial["import_note"] == "Second try"


def test_when_batches_cannot_be_loaded_the_entered_values_are_kept(clerk_client, sandbox):
    """EnergyCAP down while reviewing: a clear message, and the form keeps its values."""
    sandbox.fault("batch_list", *[{"status": 503}] * 3)
    response = post_retry(
        clerk_client,
        TASK,
        htmx=True,
        batch_mode="smart batch",
        new_batch_code="KEEP-ME",
        import_note="Also kept",
    )
    body = response.content.decode()
    assert "needs EnergyCAP's batches, which could not be loaded" in body
    assert 'value="KEEP-ME"' in body and "Also kept</textarea>" in body
    assert sandbox.count("kickout_post") == 0
