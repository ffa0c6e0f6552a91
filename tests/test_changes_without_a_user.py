"""No server error on a page that shows who did something when no user did: the dashboard did.

Every place a page shows a user, and whether the model lets that user be missing:

* `HandledChange.changed_by` (nullable: the dashboard reopens the source of a failed re-import
  by itself): the task page's handled history.
* `ImportSnapshot.handled_by` (nullable): the task page's handled panel, the queue's handled list.
* `RetryAttempt.reconciled_by` (nullable): the retry page's decision, the history's row and CSV.
* `RetryAttempt.requested_by`, `BulkRetry.requested_by` and `ReconcileDecision.decided_by` are
  NOT NULL (and PROTECT their user): a retry, a bulk and a decision are always someone's, so
  their pages are rendered here with their user, and the last test holds the models to it.

Every template shows a user through one filter (`person`), which says "the dashboard" for none.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from kickouts import snapshots
from kickouts.bulk_models import BulkLine, BulkRetry, BulkState, LineState
from kickouts.models import (
    HandledChange,
    HandledReason,
    ImportSnapshot,
    Outcome,
    Reconciled,
    ReconcileDecision,
    RetryAttempt,
)
from kickouts.sandbox.state import FAILED_TASK_GUID, KICKOUT_TASK_GUID

from .factories import make_retry
from .test_before_after import compare_now, ended_retry


@pytest.fixture
def reopened_by_the_dashboard(clerk, sandbox) -> ImportSnapshot:
    """Carla's re-import of an import ended "Failed", so the dashboard reopened its source."""
    attempt = ended_retry(clerk, KICKOUT_TASK_GUID, FAILED_TASK_GUID, status="Failed")
    source = snapshots.ensure_snapshot(snapshots.energycap.client().get_task(KICKOUT_TASK_GUID))
    source.mark_handled(user=clerk, reason=HandledReason.REIMPORTED, note="submitted")
    compare_now(attempt)
    source.refresh_from_db()
    assert not source.is_handled and source.handled_changes.first().changed_by is None
    return source


def test_the_task_page_of_an_import_the_dashboard_reopened_opens_for_every_role(
    reopened_by_the_dashboard, clerk_client, supervisor_client, outsider_client
):
    """The issue's 500: each role sees the page, and the change says who made it."""
    url = reverse("task_detail", args=[KICKOUT_TASK_GUID])
    for client in (clerk_client, supervisor_client, outsider_client):
        response = client.get(url)
        assert response.status_code == 200
        page = " ".join(response.content.decode().split())
        assert "re-imported → open by the dashboard" in page
        assert "open → fixed in EnergyCAP, re-imported by Carla Clerk" in page


def test_an_import_the_dashboard_marked_handled_says_so_on_its_page_and_in_the_queue(
    clerk_client, clerk, sandbox
):
    """A handled state with no user: "by the dashboard" on the task page and the handled list."""
    source = snapshots.ensure_snapshot(snapshots.energycap.client().get_task(KICKOUT_TASK_GUID))
    source.mark_handled(user=None, reason=HandledReason.REIMPORTED, note="by itself")
    task_page = clerk_client.get(reverse("task_detail", args=[KICKOUT_TASK_GUID]))
    assert task_page.status_code == 200
    assert "re-imported</strong> by the dashboard" in task_page.content.decode()
    handled = clerk_client.get(reverse("queue"), {"show": "handled", "period": "90"})
    assert handled.status_code == 200
    assert '<td data-label="By">the dashboard, <time' in handled.content.decode()


@pytest.fixture
def decided_without_a_user(clerk) -> RetryAttempt:
    """An "outcome unknown" retry linked with no user recorded as deciding."""
    return make_retry(
        clerk,
        outcome=Outcome.SUBMITTED,
        new_task_guid=FAILED_TASK_GUID,
        reconciled=Reconciled.LINKED,
        reconciled_by=None,
        reconciled_at=timezone.now(),
        reconciled_note="found in the task list",
    )


def test_a_decision_without_a_user_shows_on_the_retry_page_and_in_the_history(
    decided_without_a_user, clerk_client, supervisor_client
):
    """Retry page (its owner and a supervisor), history page and history CSV: no 500."""
    url = reverse("retry_detail", args=[decided_without_a_user.pk])
    for client in (clerk_client, supervisor_client):
        page = client.get(url)
        assert page.status_code == 200
        assert "by the dashboard" in page.content.decode()
    history = supervisor_client.get(reverse("history"))
    assert history.status_code == 200
    assert "Linked to an EnergyCAP task: the dashboard," in history.content.decode()
    csv = supervisor_client.get(reverse("history_csv"))
    assert csv.status_code == 200
    assert "found in the task list" in b"".join(csv.streaming_content).decode("utf-8-sig")


def test_the_pages_of_a_bulk_a_decision_and_a_retry_chain_name_their_user(
    clerk, supervisor, clerk_client, supervisor_client, sandbox
):
    """Bulk page and list, reconcile decisions, retry chain: every user shown, no 500."""
    bulk = BulkRetry.objects.create(
        requested_by=clerk,
        form_token="00000000-0000-4000-8000-000000000001",
        batch_mode="new self-contained batch",
        payload={"batchSettings": {"batchMode": "new self-contained batch"}},
        state=BulkState.DONE,
    )
    first = make_retry(
        clerk, source_task_guid=KICKOUT_TASK_GUID, new_task_guid=FAILED_TASK_GUID, bulk=bulk
    )
    BulkLine.objects.create(
        bulk=bulk, position=1, task_guid=KICKOUT_TASK_GUID, state=LineState.SENT, retry=first
    )
    later = make_retry(clerk, source_task_guid=FAILED_TASK_GUID, outcome=Outcome.UNKNOWN)
    ReconcileDecision.objects.create(retry=later, decided_by=supervisor, decision="", note="x")
    pages = {
        reverse("bulk_detail", args=[bulk.pk]): "Carla Clerk, <time",
        reverse("bulk_list"): "<td>Carla Clerk</td>",
        reverse("retry_detail", args=[later.pk]): "Sam Supervisor:",
        reverse("task_detail", args=[FAILED_TASK_GUID]): "by Carla Clerk",
    }
    for url, shown in pages.items():
        response = supervisor_client.get(url)
        assert response.status_code == 200, url
        assert shown in response.content.decode(), url


def test_the_models_keep_a_user_where_the_pages_expect_one():
    """The docstring's list, held to the models: which users may be missing, which may not."""
    nullable = {
        (model.__name__, name): model._meta.get_field(name).null
        for model, name in (
            (HandledChange, "changed_by"),
            (ImportSnapshot, "handled_by"),
            (RetryAttempt, "reconciled_by"),
            (RetryAttempt, "requested_by"),
            (BulkRetry, "requested_by"),
            (ReconcileDecision, "decided_by"),
        )
    }
    assert nullable == {
        ("HandledChange", "changed_by"): True,
        ("ImportSnapshot", "handled_by"): True,
        ("RetryAttempt", "reconciled_by"): True,
        ("RetryAttempt", "requested_by"): False,
        ("BulkRetry", "requested_by"): False,
        ("ReconcileDecision", "decided_by"): False,
    }
