"""Settling "outcome unknown" from EnergyCAP's task list: candidates, link, "nothing was
imported", reversal, and who may decide, with the sandbox over real HTTP."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import call_command
from django.urls import reverse

from kickouts import energycap, follow_up
from kickouts.follow_up_models import FollowState, FollowUp
from kickouts.models import (
    CompareState,
    Comparison,
    Outcome,
    Reconciled,
    ReconcileDecision,
    RetryAttempt,
)
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID

from . import test_worker

# The real worker's fixtures (tests/test_worker.py), for the test that runs one.
start_worker = test_worker.start_worker
mail_dir = test_worker.mail_dir

TASK = API_USER_KICKOUT_TASK_GUID
SELF_CONTAINED = "new self-contained batch"


def send_retry(client, **fields):
    url = reverse("retry_form", args=[TASK])
    data = {"action": "send", "form_token": str(uuid.uuid4()), "batch_mode": SELF_CONTAINED}
    return client.post(url, {**data, **fields}, HTTP_HX_REQUEST="true")


def text(response) -> str:
    return " ".join(response.content.decode().split())


def new_task_guids() -> set[str]:
    """Bill imports noted "lost answer": those a re-import POST created in the sandbox."""
    page = energycap.client().list_bill_import_tasks(
        filter_clauses=[("beginDate", "today", None)], page_size=1000
    )
    return {t.guid for t in page.items if t.task_note == "lost answer"}


@pytest.fixture
def lost(clerk_client, sandbox, settings) -> RetryAttempt:
    """Carla's retry: EnergyCAP created the import, then the answer never came."""
    settings.ENERGYCAP_READ_TIMEOUT = 1
    sandbox.fault("kickout_post", {"hang": 3, "apply": True})
    send_retry(clerk_client, import_note="lost answer")
    attempt = RetryAttempt.objects.get()
    assert attempt.outcome == Outcome.UNKNOWN
    return attempt


@pytest.fixture
def refused_unknown(clerk_client, sandbox) -> RetryAttempt:
    """Carla's retry answered by a 500 before EnergyCAP did anything."""
    sandbox.fault("kickout_post", {"status": 500})
    send_retry(clerk_client, import_note="lost answer")
    attempt = RetryAttempt.objects.get()
    assert attempt.outcome == Outcome.UNKNOWN
    return attempt


def created_task() -> str:
    [guid] = new_task_guids()
    return guid


def decide(client, attempt, action, **fields):
    return client.post(reverse("reconcile_retry", args=[attempt.pk]), {"action": action, **fields})


def test_a_lost_answer_lists_the_import_it_created_as_likely_and_a_clerk_cannot_decide(
    lost, clerk_client, sandbox
):
    """The task list, filtered by the key's user and the window, shows the new import."""
    guid = created_task()
    page = clerk_client.get(lost.get_absolute_url())
    [candidate] = page.context["candidates"]
    assert candidate.task.guid == guid and candidate.likely
    body = text(page)
    assert 'class="badge likely">likely</span>' in body
    assert "lost answer" in body  # the candidate's note
    assert "This is the re-import" not in body and "Nothing was imported</button>" not in body
    assert "A supervisor decides which of these, if any, is the re-import." in body
    # Asked with EnergyCAP's own filters: begun in the window, by the key's user.
    filter_text = sandbox.log("task_list")[-1]["query"]["filter"]
    assert filter_text.startswith("beginDate between '") and " and fullName equals '" in filter_text


def test_nothing_created_lists_no_candidate(refused_unknown, supervisor_client, sandbox):
    """A 500 before any work: the window holds no import by the key's user."""
    assert new_task_guids() == set()
    page = supervisor_client.get(refused_unknown.get_absolute_url())
    assert page.context["candidates"] == []
    assert "EnergyCAP lists no bill import begun by the key's user in that time." in text(page)
    assert "Nothing was imported</button>" in text(page)


def test_a_clerk_cannot_link_or_rule_out(lost, clerk_client, sandbox):
    """Clerks see the candidates; a decision from them is refused (403) and changes nothing."""
    guid = created_task()
    assert decide(clerk_client, lost, "link", task_guid=guid).status_code == 403
    assert decide(clerk_client, lost, "none_started").status_code == 403
    lost.refresh_from_db()
    assert lost.outcome == Outcome.UNKNOWN and not lost.reconciled
    assert not ReconcileDecision.objects.exists()


def test_a_supervisor_links_the_import_which_is_then_followed_and_compared(
    lost, supervisor, supervisor_client, clerk, sandbox, django_capture_on_commit_callbacks
):
    """Linked: submitted with that task, followed, compared at its end, shown everywhere."""
    guid = created_task()
    with django_capture_on_commit_callbacks(execute=True):
        response = decide(supervisor_client, lost, "link", task_guid=guid, note="Task list checked")
    assert response.status_code == 302
    lost.refresh_from_db()
    assert (lost.outcome, lost.new_task_guid, lost.reconciled) == (
        Outcome.SUBMITTED,
        guid,
        Reconciled.LINKED,
    )
    assert lost.reconciled_by == supervisor and lost.reconciled_note == "Task list checked"
    assert lost.follow_up.state == FollowState.FOLLOWING
    [decision] = ReconcileDecision.objects.all()
    assert (decision.decision, decision.task_guid) == (Reconciled.LINKED, guid)

    # The sweep's own code sees the end; its report compares.
    sandbox.update_task(guid, status="Completed")
    call_command("refresh_retries", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert FollowUp.objects.get(pk=lost.pk).state == FollowState.REPORTING
    follow_up.sweep()
    assert FollowUp.objects.get(pk=lost.pk).state == FollowState.ENDED
    comparison = Comparison.objects.get(pk=lost.pk)
    assert comparison.state == CompareState.COMPARED and comparison.fixed_label == "3 of 3"

    page = text(supervisor_client.get(lost.get_absolute_url()))
    assert "Linked to an EnergyCAP task</strong> by Sam Supervisor" in page
    assert "Task list checked" in page
    history = text(supervisor_client.get(reverse("history")))
    assert "Linked to an EnergyCAP task: Sam Supervisor" in history and "3 of 3" in history


def test_nothing_imported_frees_the_task_for_a_retry_without_the_duplicate_confirmation(
    lost, supervisor_client, clerk_client, sandbox
):
    """Before: "Only a supervisor" may retry. After "nothing was imported": Carla may."""
    assert "Only a supervisor" in text(send_retry(clerk_client))
    assert (
        decide(supervisor_client, lost, "none_started", note="Not in EnergyCAP").status_code == 302
    )
    lost.refresh_from_db()
    assert (lost.outcome, lost.reconciled) == (Outcome.NONE_IMPORTED, Reconciled.NONE_STARTED)
    page = text(clerk_client.get(lost.get_absolute_url()))
    assert "Nothing was imported</strong> by Sam Supervisor" in page
    assert "Not in EnergyCAP" in page

    sandbox.clear_faults()
    send_retry(clerk_client)
    again = RetryAttempt.objects.exclude(pk=lost.pk).filter(outcome=Outcome.SUBMITTED).get()
    assert again.confirmed_duplicate_of is None and again.duplicate_sequence == 0


def test_a_supervisor_reverses_a_decision_and_both_stay_in_its_history(
    lost, supervisor_client, clerk_client, sandbox, django_capture_on_commit_callbacks
):
    """Linked, followed to its end and compared, then reversed: unknown again, and no trace of
    the link's follow-up or its before and after is left; both decisions are listed."""
    guid = created_task()
    with django_capture_on_commit_callbacks(execute=True):
        decide(supervisor_client, lost, "link", task_guid=guid)
    sandbox.update_task(guid, status="Completed")
    call_command("refresh_retries", stdout=open("/dev/null", "w"))  # noqa: SIM115
    follow_up.sweep()
    assert Comparison.objects.filter(pk=lost.pk).exists()
    decide(supervisor_client, lost, "reverse", note="Wrong task")
    lost.refresh_from_db()
    assert (lost.outcome, lost.reconciled, lost.new_task_guid) == (Outcome.UNKNOWN, "", "")
    assert lost.new_task_id is None
    assert not FollowUp.objects.filter(pk=lost.pk).exists()
    assert not Comparison.objects.filter(pk=lost.pk).exists()
    page = text(supervisor_client.get(lost.get_absolute_url()))
    assert "Before and after" not in page and "New import</h2>" not in page
    assert list(ReconcileDecision.objects.values_list("decision", flat=True)) == [
        "",
        Reconciled.LINKED,
    ]
    page = text(clerk_client.get(lost.get_absolute_url()))
    assert "Decisions (2)" in page and "reversed — Wrong task" in page
    # Undecided again: the candidate is listed again.
    assert "This is the re-import" not in page  # Carla still cannot decide


def test_a_reversal_is_refused_once_a_new_retry_took_the_freed_place(
    refused_unknown, supervisor_client, clerk_client, sandbox
):
    """ "Nothing was imported", a new retry of the task, then a reversal: refused, said why."""
    decide(supervisor_client, refused_unknown, "none_started")
    send_retry(clerk_client)
    response = decide(supervisor_client, refused_unknown, "reverse")
    refused_unknown.refresh_from_db()
    assert refused_unknown.outcome == Outcome.NONE_IMPORTED
    followed = supervisor_client.get(response["Location"])
    assert "cannot be reversed" in text(followed)


@pytest.mark.django_db(transaction=True)
def test_a_retry_linked_25_hours_after_its_post_is_followed_compared_and_emailed(
    clerk, supervisor_client, sandbox, start_worker, mail_dir
):
    """A Friday-evening retry settled on Monday: its follow-up's age counts from the link, so
    a real worker follows it, compares its end and emails Carla."""
    from datetime import timedelta

    from django.utils import timezone

    from .factories import make_retry
    from .test_worker import sent_emails, wait_for

    clerk.email = "carla@example.com"
    clerk.save()
    friday = timezone.now() - timedelta(hours=25)
    lost = make_retry(
        clerk,
        source_task_guid=TASK,
        outcome=Outcome.UNKNOWN,
        requested_at=friday,
        sent_at=friday,
        answered_at=friday,
    )
    # The re-import EnergyCAP did start on Friday, by the key's user, and still running.
    guid = sandbox.add_task(begin_date=friday.isoformat(), end_date=None, task_note="Friday")[
        "taskGUId"
    ].lower()
    decide(supervisor_client, lost, "link", task_guid=guid, note="Found it on Monday")
    assert RetryAttempt.objects.get(pk=lost.pk).reconciled == Reconciled.LINKED
    worker = start_worker()
    wait_for(
        lambda: FollowUp.objects.filter(pk=lost.pk, succeeded_at__isnull=False).exists(),
        "a follow-up of the linked task",
        [worker],
    )
    assert FollowUp.objects.get(pk=lost.pk).state == FollowState.FOLLOWING  # not "too old"
    sandbox.update_task(guid, status="Completed")
    wait_for(lambda: sent_emails(mail_dir), "the email", [worker])
    assert Comparison.objects.get(pk=lost.pk).fixed_label == "3 of 3"
    [message] = sent_emails(mail_dir)
    assert message["To"] == "carla@example.com"
    assert FollowUp.objects.get(pk=lost.pk).state == FollowState.ENDED
