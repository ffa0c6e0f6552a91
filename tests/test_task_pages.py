"""The task list and the task page, over real HTTP to the sandbox."""

from __future__ import annotations

import re

import responses
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from kickouts.sandbox.state import (
    API_USER_KICKOUT_TASK_GUID,
    EXPORT_TASK_GUID,
    KICKOUT_TASK_GUID,
    RUNNING_TASK_GUID,
)

from .factories import make_retry


def test_a_signed_out_visitor_is_sent_to_sign_in(client, sandbox):
    """Every page needs a signed-in user; nothing is asked of EnergyCAP first."""
    response = client.get(reverse("task_list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert sandbox.log() == []


def test_the_task_list_shows_recent_bill_imports_newest_first(clerk_client, sandbox):
    """Fifty tasks a page, newest first, with badges, users, batches and counts."""
    response = clerk_client.get(reverse("task_list"))
    assert response.status_code == 200
    tasks = [task for task, _, _ in response.context["tasks"]]
    assert len(tasks) == 50
    begins = [t.begin_date for t in tasks]
    assert begins == sorted(begins, reverse=True)
    body = response.content.decode()
    assert 'class="badge badge-kickouts"' in body and "Completed with kickouts" in body
    assert "Sandbox" in body
    assert "Page 1 of 2" in body and "72 imports in the period" in body
    assert "<time datetime=" in body and 'Z" data-local' in body


def test_the_task_list_names_each_import_by_its_number_as_every_page_does(clerk_client, sandbox):
    """Each import is "Import 47223", the name clerks know it by; never "Task 47223"."""
    body = clerk_client.get(reverse("task_list")).content.decode()
    numbers = re.findall(r"(Import|Task) (\d{5})\b", body)
    assert numbers and {word for word, _ in numbers} == {"Import"}


def test_one_task_list_view_makes_exactly_one_upstream_request(clerk_client, sandbox):
    """No per-row requests: one list call per page view."""
    clerk_client.get(reverse("task_list"))
    assert [e["endpoint"] for e in sandbox.log()] == ["task_list"]
    query = sandbox.log("task_list")[0]["query"]
    assert query["filter"] == "beginDate last 30 days"
    assert query["taskTypeCode"] == "BillImport"


def test_the_period_and_paging_follow_upstream_pages(clerk_client, sandbox):
    """Page 2 of the last 90 days asks EnergyCAP for page 2 with that filter."""
    response = clerk_client.get(reverse("task_list"), {"period": "90", "page": "2"})
    query = sandbox.log("task_list")[0]["query"]
    assert query["pageNumber"] == "2" and query["filter"] == "beginDate last 90 days"
    assert "Page 2 of 2" in response.content.decode()


def test_only_with_kickouts_keeps_those_tasks(clerk_client):
    """The kickout filter keeps only "Completed with kickouts" tasks."""
    response = clerk_client.get(reverse("task_list"), {"kickouts": "1"})
    statuses = {task.status for task, _, _ in response.context["tasks"]}
    assert statuses == {"Completed with kickouts"}


def test_an_htmx_filter_change_gets_only_the_table(clerk_client):
    """htmx swaps the table partial, not the whole page."""
    response = clerk_client.get(reverse("task_list"), {"period": "7"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert body.strip().startswith('<div id="task-table">')
    assert "<html" not in body


def test_the_task_list_says_when_energycap_is_down(clerk_client, sandbox):
    """An upstream failure is a clear message on the page, never a 500."""
    sandbox.fault("task_list", {"status": 503}, {"status": 503}, {"status": 503})
    response = clerk_client.get(reverse("task_list"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "The bill imports could not be loaded from EnergyCAP." in body
    assert "HTTP 503" in body and "try again in a minute" in body


def test_a_refused_key_says_to_check_the_key_and_permission(clerk_client, sandbox):
    """401 tells the operator what to check."""
    sandbox.fault("task_list", {"status": 401})
    body = clerk_client.get(reverse("task_list")).content.decode()
    assert "Check the API key" in body and "Bills and Batches" in body


@responses.activate
def test_an_empty_period_says_so_and_what_to_do(clerk_client, settings):
    """No imports in the period: an empty state, not an empty table."""
    settings.ENERGYCAP_BASE_URL = "https://energycap.test"
    responses.get(
        "https://energycap.test/api/v3/task",
        json=[],
        headers={"TotalNumberOfRecords": "0", "TotalPages": "0", "PageNumber": "1"},
    )
    body = clerk_client.get(reverse("task_list"), {"period": "7"}).content.decode()
    assert "No bill imports in the last 7 days." in body
    assert "Choose a longer period" in body
    assert "<table" not in body


def test_the_task_list_shows_each_tasks_retries_in_one_query(clerk, clerk_client):
    """Retry count and latest outcome come from local records, one query per page."""
    for outcome in ("rejected", "submitted"):
        make_retry(clerk, source_task_guid=API_USER_KICKOUT_TASK_GUID, outcome=outcome)
    with CaptureQueriesContext(connection) as queries:
        response = clerk_client.get(reverse("task_list"))
    retry_queries = [q for q in queries if "kickouts_retryattempt" in q["sql"]]
    assert len(retry_queries) == 1
    summaries = {t.guid: s for t, s, _ in response.context["tasks"] if s}
    summary = summaries[API_USER_KICKOUT_TASK_GUID]
    assert summary.count == 2 and summary.latest_outcome == "submitted"
    assert "2 · Submitted" in response.content.decode()


def test_the_task_page_shows_details_kickout_messages_and_rows(clerk_client, sandbox):
    """Details, the summary's messages and the detail grid."""
    response = clerk_client.get(reverse("task_detail", args=[KICKOUT_TASK_GUID]))
    body = response.content.decode()
    assert response.status_code == 200
    assert KICKOUT_TASK_GUID in body
    assert len(response.context["summary"].kickout_messages) == 3
    assert "12 kicked-out rows" in body
    assert "Account Code" in body


def test_the_detail_grid_filters_by_kickout_message(clerk_client, sandbox):
    """Choosing a message shows its rows only, read from the stored snapshot, not EnergyCAP."""
    page = clerk_client.get(reverse("task_detail", args=[KICKOUT_TASK_GUID]))
    message = page.context["summary"].kickout_messages[0]
    response = clerk_client.get(
        reverse("task_detail", args=[KICKOUT_TASK_GUID]), {"message": message}
    )
    assert sandbox.count("kickout_detail") == 1
    assert sandbox.count("kickout_summary") == 1
    rows = response.context["grid"].rows
    assert rows and {r["Kickout Message"] for r in rows} == {message}


def test_a_malformed_guid_is_a_404_without_any_upstream_call(clerk_client, sandbox):
    """The URL refuses it before EnergyCAP is asked."""
    response = clerk_client.get("/tasks/not-a-guid/")
    assert response.status_code == 404
    assert sandbox.log() == []


def test_an_unknown_task_is_a_clear_404(clerk_client):
    """EnergyCAP's 404 becomes our own page."""
    response = clerk_client.get(
        reverse("task_detail", args=["00000000-0000-4000-8000-000000000000"])
    )
    assert response.status_code == 404
    assert "EnergyCAP has no import (or other task)" in response.content.decode()


def test_a_running_task_and_another_task_type_offer_no_retry(clerk_client):
    """Only a finished bill import with kickouts gets the form."""
    running = clerk_client.get(reverse("task_detail", args=[RUNNING_TASK_GUID])).content.decode()
    assert "still running" in running and 'name="batch_mode"' not in running
    export = clerk_client.get(reverse("task_detail", args=[EXPORT_TASK_GUID])).content.decode()
    assert "only bill imports have kickouts" in export


def test_a_clerk_sees_the_retry_form_beside_the_kickouts(clerk_client):
    """The five modes, each with its sentence, in EnergyCAP's exact words."""
    body = clerk_client.get(
        reverse("task_detail", args=[API_USER_KICKOUT_TASK_GUID])
    ).content.decode()
    for mode in (
        "use existing batch",
        "new batch",
        "new self-contained batch",
        "use pending batch",
        "smart batch",
    ):
        assert f'value="{mode}"' in body
    # The sandbox's API user has two open batches: none is offered as "the only one".
    assert '<option value="" selected>Choose an open batch</option>' in body
    assert "ELEC-PENDING (#907) — API Import Service" in body


def test_unknown_statuses_and_script_tags_from_upstream_are_shown_as_text(clerk_client, sandbox):
    """Upstream text is escaped; an unknown status is shown verbatim."""
    task = sandbox.add_task(status="Partially <b>Imported</b>", task_note="<script>x()</script>")
    body = clerk_client.get(reverse("task_detail", args=[task["taskGUId"]])).content.decode()
    assert "Partially &lt;b&gt;Imported&lt;/b&gt;" in body
    assert "&lt;script&gt;x()&lt;/script&gt;" in body
    assert "<script>x()" not in body


def test_the_clerk_chooses_how_many_tasks_a_page_shows(clerk_client, sandbox):
    """Per page 100 asks EnergyCAP for 100; an odd value (or the old 250) falls back to 50."""
    response = clerk_client.get(reverse("task_list"), {"per_page": "100", "period": "90"})
    assert sandbox.log("task_list")[-1]["query"]["pageSize"] == "100"
    assert len(response.context["tasks"]) == 78
    assert "Page 1 of 1" in response.content.decode()
    for odd in ("100000", "250"):
        clerk_client.get(reverse("task_list"), {"per_page": odd})
        assert sandbox.log("task_list")[-1]["query"]["pageSize"] == "50"


def test_the_back_button_restores_the_whole_task_list(clerk_client):
    """An htmx history-restore request gets the full page, not just the table."""
    response = clerk_client.get(
        reverse("task_list"), HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true"
    )
    assert "<html" in response.content.decode()


def test_the_task_page_says_what_to_do_about_each_kickout_message(clerk_client, sandbox):
    """Each message gets the cause's fix from kickouts/causes.py, or "no advice yet"."""
    task = sandbox.add_task(kickout_messages=["Account not found", "Something nobody documented"])
    body = clerk_client.get(reverse("task_detail", args=[task["taskGUId"]])).content.decode()
    advice = body[body.index("What to do about each message") :]
    assert "Add an account code alias" in advice and "Re-import after the fix." in advice
    assert "Something nobody documented" in advice and "No advice yet." in advice


def test_the_user_filter_suggests_the_energycap_users_of_stored_imports(clerk_client, sandbox):
    """The names offered are those of imports the dashboard stored; any name can be typed."""
    from kickouts.queue_models import ImportSnapshot

    ImportSnapshot.objects.create(task_guid=KICKOUT_TASK_GUID, user_full_name="Lena Fischer")
    body = clerk_client.get(reverse("task_list")).content.decode()
    assert 'list="energycap-users"' in body and '<option value="Lena Fischer"></option>' in body
