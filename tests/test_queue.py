"""The kickout queue: open kickouts across imports, grouped by message, handled, downloaded."""

from __future__ import annotations

import ast
import csv
import io
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
import responses
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from kickouts import migrations, snapshots
from kickouts.energycap import EnergyCap, EnergyCapError
from kickouts.models import HandledChange, ImportSnapshot, SnapshotState
from kickouts.queue_models import QueueListing
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID, DETAIL_COLUMNS

from .retry_helpers import post_retry

QUINN = "Quinn Queue"  # a user of their own, so the seed's random imports stay out of the way
ACCOUNT = "Account not found"
METER = "Meter not found for account"
UNKNOWN = "Site code is not recognised"  # no cause in kickouts/causes.py matches it


def ago(**delta) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


def add_import(sandbox, messages, rows_per_message=3, *, days_ago=1, user=QUINN, **props):
    """An ended bill import in the sandbox, "Completed with kickouts", run by `user`."""
    begin = datetime.now(UTC) - timedelta(days=days_ago)
    return sandbox.add_task(
        kickout_messages=messages,
        rows_per_message=rows_per_message,
        user_full_name=user,
        begin_date=begin.isoformat(),
        end_date=(begin + timedelta(minutes=2)).isoformat(),
        **props,
    )


@pytest.fixture
def quinns_imports(sandbox, db):
    """Three of Quinn's imports: the account message in all three, the meter one in two."""
    first = add_import(sandbox, [ACCOUNT, METER], 4, days_ago=20)
    second = add_import(sandbox, [ACCOUNT, UNKNOWN], 2, days_ago=5)
    third = add_import(sandbox, [ACCOUNT, METER], 1, days_ago=2)
    snapshots.snapshot_period(30, QUINN)
    return [first, second, third]


def groups_of(response) -> dict[str, dict]:
    return {group["message"]: group for group in response.context["groups"]}


def test_the_queue_groups_rows_by_message_across_imports_with_counts(clerk_client, quinns_imports):
    """Rows, imports, distinct accounts and vendors, oldest and newest import, per message."""
    response = clerk_client.get(reverse("queue"), {"user": QUINN})
    groups = groups_of(response)
    assert list(groups) == [ACCOUNT, METER, UNKNOWN]  # most rows first: 7, 5, 2
    account = groups[ACCOUNT]
    assert (account["rows"], account["imports"], account["accounts"]) == (7, 3, 7)
    assert account["vendors"] == 1  # the grid has a "Vendor Code" column, all CONED
    assert (groups[METER]["rows"], groups[METER]["imports"]) == (5, 2)
    oldest = ImportSnapshot.objects.get(task_guid=quinns_imports[0]["taskGUId"]).begin_date
    newest = ImportSnapshot.objects.get(task_guid=quinns_imports[2]["taskGUId"]).begin_date
    assert (account["oldest"], account["newest"]) == (oldest, newest)
    assert groups[UNKNOWN]["oldest"] == groups[UNKNOWN]["newest"]


def test_each_group_says_what_to_do_and_an_unknown_message_has_no_advice_yet(
    clerk_client, quinns_imports
):
    """The cause table's fix and re-import verdict stand beside each message."""
    page = clerk_client.get(reverse("queue"), {"user": QUINN}).content.decode()
    assert "Add an account code alias — up to five" in page
    assert "Re-import after the fix." in page
    assert "Give the meter code or serial number in the file." in page
    assert "No advice yet." in page
    assert UNKNOWN in page


def test_the_groups_are_grouped_once_per_set_of_listed_imports(clerk, clerk_client, quinns_imports):
    """A second view of the same imports reads the groups it grouped before; handling an
    import makes another set, grouped afresh, and the page shows it at once."""

    def view() -> tuple[dict[str, dict], int]:
        with CaptureQueriesContext(connection) as queries:
            response = clerk_client.get(reverse("queue"), {"user": QUINN})
        grouping = [q for q in queries.captured_queries if "GROUP BY" in q["sql"].upper()]
        return groups_of(response), len(grouping)

    first, grouped = view()
    assert (first[ACCOUNT]["rows"], grouped) == (7, 1)
    again, grouped = view()
    assert (again, grouped) == (first, 0)
    ImportSnapshot.objects.get(task_guid=quinns_imports[0]["taskGUId"]).mark_handled(
        user=clerk, reason="corrected_file", note=""
    )
    after, grouped = view()
    assert (after[ACCOUNT]["rows"], after[ACCOUNT]["imports"], grouped) == (3, 2, 1)
    assert METER in after and after[METER]["imports"] == 1


def test_the_period_filter_leaves_older_imports_out(clerk_client, quinns_imports):
    """Seven days: only the two newer imports count."""
    response = clerk_client.get(reverse("queue"), {"user": QUINN, "period": "7"})
    assert groups_of(response)[ACCOUNT]["imports"] == 2


def test_every_kickout_import_of_the_period_is_queued_without_the_task_list(
    clerk_client, sandbox, db
):
    """The period's listing finds them all, on every page EnergyCAP sends, not one page."""
    snapshots.snapshot_period(30)
    listed = snapshots.list_period(30)
    with_kickouts = {t.guid for t in listed if t.has_kickouts and not t.is_running}
    assert len(with_kickouts) >= 15
    assert set(ImportSnapshot.objects.values_list("task_guid", flat=True)) == with_kickouts
    assert not ImportSnapshot.objects.exclude(state=SnapshotState.READY).exists()


def test_an_empty_queue_says_there_is_nothing_open(clerk_client, db):
    """No import of the period has open kickouts: the page says so."""
    page = clerk_client.get(reverse("queue"), {"user": "Nobody Here"}).content.decode()
    assert "Nothing open." in page


def test_the_page_shows_how_many_imports_are_still_loading(clerk_client, sandbox, db):
    """Imports known but not yet fetched are counted as still loading, N of M."""
    tasks = snapshots.list_period(30)
    snapshots.register(tasks)
    total = ImportSnapshot.objects.count()
    first = ImportSnapshot.objects.order_by("-begin_date").first()
    snapshots.take_snapshots([first.task_guid])
    page = clerk_client.get(reverse("queue")).content.decode()
    assert f"Still loading the kickouts of {total - 1} of {total} imports" in page
    assert 'hx-trigger="every 2s"' in page


def test_the_polled_progress_reloads_the_page_once_everything_is_in(clerk_client, sandbox, db):
    """While imports load, htmx gets the progress fragment; when the period is listed and no
    import is left loading, a refresh."""
    snapshots.register(snapshots.list_period(30))
    poll = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "queue-progress"}
    loading = clerk_client.get(reverse("queue"), **poll)
    assert loading.content.decode().lstrip().startswith('<div id="queue-progress"')
    assert "Still loading" in loading.content.decode()
    snapshots.snapshot_period(30)  # the worker: the period's list, then every import's rows
    done = clerk_client.get(reverse("queue"), **poll)
    assert done["HX-Refresh"] == "true"


def test_snapshots_are_taken_once_and_pages_then_cost_energycap_nothing(
    clerk_client, sandbox, quinns_imports
):
    """Summary and rows are fetched once per import; the queue, groups and CSVs ask nothing."""
    assert sandbox.count("kickout_summary") == 3
    assert sandbox.count("kickout_detail") == 3
    snapshots.snapshot_period(30, QUINN)  # a second pass lists, but fetches nothing again
    assert sandbox.count("kickout_summary") == 3
    assert sandbox.count("kickout_detail") == 3
    before = len(sandbox.log())
    guid = quinns_imports[0]["taskGUId"]
    for url, query in [
        (reverse("queue"), {"user": QUINN}),
        (reverse("queue_group"), {"user": QUINN, "message": ACCOUNT}),
        (reverse("queue_csv"), {"user": QUINN}),
        (reverse("queue_csv"), {"user": QUINN, "message": METER}),
        (reverse("import_csv", args=[guid]), {}),
    ]:
        response = clerk_client.get(url, query)
        assert response.status_code == 200
        if response.streaming:
            b"".join(response.streaming_content)
    assert len(sandbox.log()) == before
    clerk_client.get(reverse("task_detail", args=[guid]))
    # Only the task and the retry form's needs, asked at once, in any order.
    assert sorted(e["endpoint"] for e in sandbox.log()[before:]) == ["batch_list", "me", "task_get"]


def test_the_first_load_keeps_at_most_four_requests_in_flight(sandbox, db):
    """With every kickout answer 0.3 s late, no 0.3 s window sees more than four begin."""
    latency = 0.3
    sandbox.fault("kickout_summary", latency=latency)
    sandbox.fault("kickout_detail", latency=latency)
    for _ in range(12):
        add_import(sandbox, [ACCOUNT], 1)
    snapshots.snapshot_period(30, QUINN)
    starts = sorted(
        datetime.fromisoformat(e["time"]).timestamp()
        for e in sandbox.log()
        if e["endpoint"] in ("kickout_summary", "kickout_detail")
    )
    assert len(starts) == 24
    busiest = max(
        sum(1 for other in starts if start <= other < start + latency * 0.9) for start in starts
    )
    assert 2 <= busiest <= 4


def test_a_failed_fetch_is_counted_and_tried_again_on_the_next_pass(clerk_client, sandbox, db):
    """EnergyCAP's 500 leaves the import "failed", shown on the page, and fetched next time."""
    created = add_import(sandbox, [ACCOUNT], 2)
    sandbox.fault("kickout_summary", *[{"status": 500}] * 5)
    snapshots.snapshot_period(30, QUINN)
    snapshot = ImportSnapshot.objects.get(task_guid=created["taskGUId"])
    assert snapshot.state == SnapshotState.FAILED
    assert "could not be loaded" in clerk_client.get(reverse("queue")).content.decode()
    sandbox.clear_faults()
    snapshots.snapshot_period(30, QUINN)
    snapshot.refresh_from_db()
    assert (snapshot.state, snapshot.row_count) == (SnapshotState.READY, 2)


# -- how complete the totals are, and how fresh --


def page_text(client, name: str, **query) -> str:
    """The page as a person reads it: its markup with each run of whitespace one space."""
    response = client.get(reverse(name), query)
    assert response.status_code == 200
    return " ".join(response.content.decode().split())


def test_every_view_says_the_totals_may_grow_while_the_period_is_listed(
    clerk_client, quinns_imports
):
    """Quinn's imports are already stored (the task list saw them); while the worker lists the
    period, every view of the queue and of a group says so, not only the first."""
    for _ in range(3):
        queue = page_text(clerk_client, "queue", user=QUINN)
        assert "Asking EnergyCAP for the bill imports of the last 30 days" in queue
        assert "these totals may grow" in queue and 'hx-trigger="every 2s"' in queue
    group = page_text(clerk_client, "queue_group", user=QUINN, message=ACCOUNT)
    assert "these totals may grow" in group and "7 rows in 3 imports" in group
    assert 'hx-trigger="every 2s"' in group
    assert "Not yet refreshed from EnergyCAP" in group


def test_once_the_period_is_listed_each_page_says_when(clerk_client, quinns_imports):
    """The worker's listing ends the notice; the queue and its groups say when it finished, as
    do shorter periods (a 30-day list holds the 7 days), not longer ones."""
    clerk_client.get(reverse("queue"))
    snapshots.snapshot_period(30)  # what the worker does
    finished = QueueListing.objects.get(days=30).finished_at.astimezone(UTC)
    stamp = f'<time datetime="{finished:%Y-%m-%dT%H:%M:%SZ}"'
    for name, query in [
        ("queue", {"user": QUINN}),
        ("queue_group", {"user": QUINN, "message": ACCOUNT}),
        ("queue", {"user": QUINN, "period": "7"}),
    ]:
        page = page_text(clerk_client, name, **query)
        assert "Asking EnergyCAP" not in page and "these totals may grow" not in page, query
        assert f"Queue last refreshed from EnergyCAP: {stamp}" in page, query
    longer = page_text(clerk_client, "queue", user=QUINN, period="90")
    assert "Not yet refreshed from EnergyCAP" in longer


def test_a_group_says_how_many_imports_are_still_loading(clerk_client, sandbox, db):
    """Imports known but not yet fetched are counted on a group's page too, N of M, and the
    notice polls."""
    snapshots.register(snapshots.list_period(30))
    total = ImportSnapshot.objects.count()
    first = ImportSnapshot.objects.order_by("-begin_date").first()
    snapshots.take_snapshots([first.task_guid])
    message = first.rows.values_list("message", flat=True).first()
    page = page_text(clerk_client, "queue_group", message=message)
    assert f"Still loading the kickouts of {total - 1} of {total} imports" in page
    assert 'hx-trigger="every 2s"' in page


def test_a_groups_polled_notice_reloads_the_page_once_the_listing_is_in(
    clerk_client, quinns_imports
):
    """The group's notice polls its own address; when the listing is in, htmx reloads."""
    poll = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "queue-progress"}
    query = {"user": QUINN, "message": ACCOUNT}
    waiting = clerk_client.get(reverse("queue_group"), query, **poll).content.decode()
    assert waiting.lstrip().startswith('<div id="queue-progress"')
    assert "these totals may grow" in waiting and "<html" not in waiting
    snapshots.snapshot_period(30)
    done = clerk_client.get(reverse("queue_group"), query, **poll)
    assert done["HX-Refresh"] == "true"


def test_a_listing_long_unanswered_says_the_worker_may_be_down_and_stops_polling(clerk_client, db):
    """Ten minutes after the ask, with no worker to answer, the page says so on every load
    and no longer polls for it."""
    clerk_client.get(reverse("queue"))
    QueueListing.objects.filter(days=30).update(asked_at=timezone.now() - timedelta(minutes=10))
    for _ in range(2):
        page = page_text(clerk_client, "queue")
        assert "has not come in yet" in page and "Is the background worker running?" in page
        assert 'hx-trigger="every 2s"' not in page


def test_a_listing_that_failed_says_why(clerk_client, sandbox, db):
    """EnergyCAP refused the listing: the page says the last try failed, and why."""
    clerk_client.get(reverse("queue"))
    sandbox.fault("task_list", *[{"status": 401}] * 3)
    with pytest.raises(EnergyCapError):
        snapshots.snapshot_period(30)
    page = page_text(clerk_client, "queue")
    assert "The last try failed:" in page
    assert QueueListing.objects.get(days=30).error in page


@pytest.mark.postgres
def test_processes_recording_one_listing_at_once_keep_one_record(transactional_db):
    """Eight threads, each its own database connection, record the same period at the same
    moment: no error, one row."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent inserts are PostgreSQL's; `make test` runs this on PostgreSQL")
    barrier, errors = threading.Barrier(8), []

    def record() -> None:
        try:
            barrier.wait()
            QueueListing.record(30, asked_at=timezone.now())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert QueueListing.objects.filter(days=30).count() == 1


def test_retry_selected_warns_before_the_review_when_the_fix_is_a_corrected_file(
    clerk_client, quinns_imports
):
    """A meter that cannot be resolved is fixed in the file: beside "Retry selected", before
    any review, Carla reads that the same rows will be kicked out again. An account alias is
    fixed in EnergyCAP: no warning there."""
    meter = page_text(clerk_client, "queue_group", user=QUINN, message=METER)
    assert "Retrying re-imports the same files, unchanged:" in meter
    assert "will be kicked out again" in meter
    assert "give the meter code or serial number in the file" in meter
    assert 'aria-describedby="retry-same-file"' in meter
    account = page_text(clerk_client, "queue_group", user=QUINN, message=ACCOUNT)
    assert "Retry selected" in account and "Retrying re-imports the same files" not in account


# -- the group page --


def test_a_group_lists_its_rows_across_imports_with_links_to_tasks_and_retry_forms(
    clerk_client, quinns_imports
):
    """Account, meter, vendor, dates, cost, file and import per row; retry form per import."""
    response = clerk_client.get(reverse("queue_group"), {"user": QUINN, "message": ACCOUNT})
    page = response.content.decode()
    assert response.context["page"].paginator.count == 7
    row = response.context["page"][0]
    assert row.account_code.startswith("ACCT-") and row.meter_code.startswith("MTR-")
    assert row.vendor_code == "CONED" and row.bill_start and row.total_cost is not None
    for created in quinns_imports:
        assert reverse("task_detail", args=[created["taskGUId"]]) in page
        assert reverse("retry_form", args=[created["taskGUId"]]) in page


def test_a_group_pages_its_imports(clerk_client, sandbox, db):
    """Twenty-five imports a page, beside the rows' own pages."""
    for _ in range(30):
        add_import(sandbox, [ACCOUNT], 1)
    snapshots.snapshot_period(30, QUINN)
    query = {"user": QUINN, "message": ACCOUNT}
    first = clerk_client.get(reverse("queue_group"), query)
    second = clerk_client.get(reverse("queue_group"), {**query, "imports_page": 2})
    assert first.context["imports"].paginator.count == 30
    assert len(first.context["imports"]) == 25 and len(second.context["imports"]) == 5
    assert "30 rows in 30 imports" in " ".join(first.content.decode().split())


def test_a_group_counts_its_rows_and_imports_once_for_both_pagers(clerk_client, quinns_imports):
    """One query counts the group's rows and imports; the rows' and the imports' pagers reuse
    it (no COUNT of their own)."""
    with CaptureQueriesContext(connection) as queries:
        response = clerk_client.get(reverse("queue_group"), {"user": QUINN, "message": ACCOUNT})
    assert "7 rows in 3 imports" in " ".join(response.content.decode().split())
    assert response.context["imports"].paginator.num_pages == 1
    assert len(response.context["imports"]) == 3
    counting = [q["sql"] for q in queries.captured_queries if "kickouts_kickoutrow" in q["sql"]]
    counting = [sql for sql in counting if "COUNT(" in sql.upper() and "EXISTS" not in sql]
    assert len(counting) == 1


def test_a_group_shows_each_change_of_its_imports_at_once(clerk, clerk_client, quinns_imports):
    """Marking an import handled takes it out of the group's counts, imports and rows on the
    very next view."""
    query = {"user": QUINN, "message": ACCOUNT}
    before = page_text(clerk_client, "queue_group", **query)
    assert "7 rows in 3 imports" in before
    ImportSnapshot.objects.get(task_guid=quinns_imports[0]["taskGUId"]).mark_handled(
        user=clerk, reason="corrected_file", note=""
    )
    after = page_text(clerk_client, "queue_group", **query)
    assert "3 rows in 2 imports" in after
    assert quinns_imports[0]["taskGUId"] not in after and quinns_imports[1]["taskGUId"] in after


def test_a_group_shows_each_user_only_their_own_buttons(
    clerk_client, outsider_client, quinns_imports
):
    """Carla may mark and retry; Nora, who has no role, looking at the same group right
    after, gets neither the checkboxes nor the buttons."""
    query = {"user": QUINN, "message": METER}
    carlas = clerk_client.get(reverse("queue_group"), query).content.decode()
    assert "Mark handled" in carlas and "Retry selected" in carlas and 'name="task"' in carlas
    noras = outsider_client.get(reverse("queue_group"), query).content.decode()
    assert "Mark handled" not in noras and "Retry selected" not in noras
    assert 'name="task"' not in noras and "Retry form" not in noras


def test_a_group_pages_its_rows(clerk_client, sandbox, db):
    """Twenty-five rows a page."""
    add_import(sandbox, [ACCOUNT], 35)
    snapshots.snapshot_period(30, QUINN)
    query = {"user": QUINN, "message": ACCOUNT}
    first = clerk_client.get(reverse("queue_group"), query)
    second = clerk_client.get(reverse("queue_group"), {**query, "page": 2})
    assert len(first.context["page"]) == 25 and len(second.context["page"]) == 10
    assert 'rel="next"' in first.content.decode()


# -- handled and reopened --


def test_a_clerk_marks_an_import_handled_and_it_leaves_the_queue(
    clerk, clerk_client, quinns_imports
):
    """Reason, note, who and when are kept; the handled filter shows it; history has the step."""
    guid = quinns_imports[1]["taskGUId"]
    response = clerk_client.post(
        reverse("mark_handled", args=[guid]),
        {"reason": "corrected_file", "note": "Fixed dates in the file", "next": "/kickouts/"},
    )
    assert response.status_code == 302 and response["Location"] == "/kickouts/"
    snapshot = ImportSnapshot.objects.get(task_guid=guid)
    assert snapshot.handled_reason == "corrected_file" and snapshot.handled_by == clerk
    assert snapshot.handled_note == "Fixed dates in the file" and snapshot.handled_at
    assert UNKNOWN not in groups_of(clerk_client.get(reverse("queue"), {"user": QUINN}))
    handled = clerk_client.get(reverse("queue"), {"user": QUINN, "show": "handled"})
    assert [s.task_guid for s in handled.context["handled"]] == [guid]
    change = HandledChange.objects.get()
    assert (change.from_reason, change.to_reason, change.changed_by) == (
        "",
        "corrected_file",
        clerk,
    )
    page = clerk_client.get(reverse("task_detail", args=[guid])).content.decode()
    assert "Handled: corrected file imported" in page and "Reopen" in page


def test_a_clerk_marks_several_imports_of_a_group_handled_at_once(
    clerk, clerk_client, quinns_imports
):
    """From a group: the checked imports, one reason and note, one history step each."""
    query = {"user": QUINN, "message": METER}
    group_url = reverse("queue_group") + "?" + urlencode(query)
    meter_imports = [quinns_imports[0]["taskGUId"], quinns_imports[2]["taskGUId"]]
    response = clerk_client.post(
        reverse("mark_many_handled"),
        {"task": meter_imports, "reason": "corrected_file", "note": "New file", "next": group_url},
    )
    assert response["Location"] == group_url
    handled = ImportSnapshot.objects.handled()
    assert sorted(handled.values_list("task_guid", flat=True)) == sorted(meter_imports)
    assert HandledChange.objects.filter(note="New file", changed_by=clerk).count() == 2
    assert list(groups_of(clerk_client.get(reverse("queue"), {"user": QUINN}))) == [
        ACCOUNT,
        UNKNOWN,
    ]


def test_reopening_puts_the_import_back_and_is_recorded(
    clerk, supervisor, supervisor_client, quinns_imports
):
    """A supervisor reopens a clerk's handled import; both steps stay in the history."""
    guid = quinns_imports[0]["taskGUId"]
    snapshot = ImportSnapshot.objects.get(task_guid=guid)
    snapshot.mark_handled(user=clerk, reason="duplicate_bills", note="")
    supervisor_client.post(reverse("reopen", args=[guid]))
    snapshot.refresh_from_db()
    assert not snapshot.is_handled and snapshot.handled_by is None
    steps = [(c.from_reason, c.to_reason, c.changed_by) for c in snapshot.handled_changes.all()]
    assert steps == [("duplicate_bills", "", supervisor), ("", "duplicate_bills", clerk)]
    assert METER in groups_of(supervisor_client.get(reverse("queue"), {"user": QUINN}))


def test_a_user_with_no_role_sees_the_state_but_cannot_change_it(
    clerk, outsider_client, quinns_imports
):
    """No form, no reopen button; a forged POST is refused and changes nothing."""
    guid = quinns_imports[0]["taskGUId"]
    ImportSnapshot.objects.get(task_guid=guid).mark_handled(user=clerk, reason="other")
    page = outsider_client.get(reverse("task_detail", args=[guid])).content.decode()
    assert "Handled: ignored: other" in page
    assert "Reopen" not in page and "Mark handled" not in page
    assert outsider_client.post(reverse("reopen", args=[guid])).status_code == 403
    assert (
        outsider_client.post(
            reverse("mark_handled", args=[quinns_imports[1]["taskGUId"]]), {"reason": "other"}
        ).status_code
        == 403
    )
    assert HandledChange.objects.count() == 1
    group = outsider_client.get(reverse("queue_group"), {"user": QUINN, "message": ACCOUNT})
    assert "Mark handled" not in group.content.decode()


def test_a_reimport_sent_through_the_dashboard_marks_the_import_reimported(
    clerk, clerk_client, sandbox, db
):
    """As soon as the retry is submitted, the import leaves the queue as "re-imported"."""
    response = post_retry(
        clerk_client,
        API_USER_KICKOUT_TASK_GUID,
        action="send",
        batch_mode="new batch",
        leave_existing_batches_open=True,
    )
    assert response.status_code == 302
    snapshot = ImportSnapshot.objects.get(task_guid=API_USER_KICKOUT_TASK_GUID)
    assert snapshot.handled_reason == "reimported" and snapshot.handled_by == clerk
    assert HandledChange.objects.get().to_reason == "reimported"


def test_the_task_list_shows_which_imports_are_handled(clerk, clerk_client, quinns_imports):
    """A handled import says so in its row of the task list."""
    ImportSnapshot.objects.get(task_guid=quinns_imports[2]["taskGUId"]).mark_handled(
        user=clerk, reason="reimported"
    )
    page = clerk_client.get(reverse("task_list"), {"user": QUINN}).content.decode()
    assert page.count("Handled: fixed in EnergyCAP, re-imported") == 1


def test_the_task_list_filters_by_energycap_user_through_energycaps_own_filter(
    clerk_client, sandbox, db
):
    """The fullName filter goes to EnergyCAP, so it covers every page."""
    response = clerk_client.get(reverse("task_list"), {"user": "Tom O'Brien"})
    assert "fullName equals 'Tom O''Brien'" in sandbox.log("task_list")[-1]["query"]["filter"]
    names = {task.user.full_name for task, _, _ in response.context["tasks"]}
    assert names == {"Tom O'Brien"}


def test_the_task_list_brings_its_kickout_imports_into_the_queue(clerk_client, sandbox, db):
    """Refreshing the list registers its ended imports with kickouts as "loading"."""
    created = add_import(sandbox, [ACCOUNT], 1, days_ago=0.01)
    clerk_client.get(reverse("task_list"))
    snapshot = ImportSnapshot.objects.get(task_guid=created["taskGUId"])
    assert snapshot.state == SnapshotState.LOADING and snapshot.user_full_name == QUINN


# -- CSV --


def read_csv(response) -> tuple[bytes, list[list[str]]]:
    raw = b"".join(response.streaming_content)
    return raw, list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def test_csv_opens_in_excel_with_bom_grid_columns_and_import_number(clerk_client, quinns_imports):
    """UTF-8 with a byte-order mark, the grid's own column names, plus the import's number."""
    response = clerk_client.get(reverse("queue_csv"), {"user": QUINN})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="kickout-queue-')
    raw, rows = read_csv(response)
    assert raw.startswith(b"\xef\xbb\xbf")
    assert rows[0] == ["Import", *DETAIL_COLUMNS]
    assert len(rows) == 1 + 14
    numbers = {
        str(ImportSnapshot.objects.get(task_guid=t["taskGUId"]).task_id) for t in quinns_imports
    }
    assert {row[0] for row in rows[1:]} == numbers


def test_csv_guards_against_formulas(clerk_client, sandbox, db):
    """Cells starting with = + - @ tab or carriage return are quoted so Excel shows text."""
    dangerous = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTab", "\rReturn"]
    created = add_import(sandbox, dangerous, 1, file_name="=evil.xlsx")
    snapshots.snapshot_period(30, QUINN)
    _, rows = read_csv(clerk_client.get(reverse("import_csv", args=[created["taskGUId"]])))
    messages = [row[1] for row in rows[1:]]
    assert messages == ["'" + m for m in dangerous]
    assert all(row[-1] == "'=evil.xlsx" for row in rows[1:])
    assert "Sandbox" not in rows[0]


def test_a_group_csv_has_only_that_groups_rows(clerk_client, quinns_imports):
    """The group's download holds its five rows."""
    _, rows = read_csv(clerk_client.get(reverse("queue_csv"), {"user": QUINN, "message": METER}))
    assert len(rows) == 6 and {row[1] for row in rows[1:]} == {METER}


def test_the_whole_queue_csv_holds_exactly_the_rows_of_its_groups(clerk_client, quinns_imports):
    """The whole queue's download and its groups' downloads, streamed from the stored cells,
    give the same lines, newest import first."""
    _, whole = read_csv(clerk_client.get(reverse("queue_csv"), {"user": QUINN}))
    by_group = []
    for message in (ACCOUNT, METER, UNKNOWN):
        _, rows = read_csv(
            clerk_client.get(reverse("queue_csv"), {"user": QUINN, "message": message})
        )
        assert rows[0] == whole[0]
        by_group += rows[1:]
    assert sorted(whole[1:]) == sorted(by_group)
    newest_first = [
        str(s.task_id)
        for s in ImportSnapshot.objects.filter(user_full_name=QUINN).order_by("-begin_date")
    ]
    assert list(dict.fromkeys(row[0] for row in whole[1:])) == newest_first


def test_imports_with_different_grids_share_one_csv_with_every_column(clerk_client, quinns_imports):
    """A grid with a column the others lack: one header with all of them, blanks elsewhere."""
    odd = ImportSnapshot.objects.get(task_guid=quinns_imports[1]["taskGUId"])
    odd.columns = [*DETAIL_COLUMNS, "Site Name"]
    odd.save(update_fields=["columns"])
    first = odd.rows.order_by("position").first()
    first.cells["Site Name"] = "=North plant"
    first.save(update_fields=["cells"])
    _, rows = read_csv(clerk_client.get(reverse("queue_csv"), {"user": QUINN}))
    assert rows[0] == ["Import", *DETAIL_COLUMNS, "Site Name"]
    assert len(rows) == 1 + 14 and all(len(row) == len(rows[0]) for row in rows)
    sites = [row[-1] for row in rows[1:]]
    assert sites.count("'=North plant") == 1 and sites.count("") == 13


QUEUE_MIGRATIONS = ["0010_snapshot_csv_lines", "0015_drop_queue_caches"]


@pytest.mark.parametrize("name", QUEUE_MIGRATIONS)
def test_the_queue_migrations_import_no_app_code(name):
    """A migration runs as written, long after the app's modules changed: it imports Django
    only."""
    path = Path(migrations.__file__).with_name(f"{name}.py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and all(module.split(".")[0] == "django" for module in imported), imported


def test_imports_stored_before_the_caches_went_keep_their_rows(transactional_db, sandbox):
    """Migrating across 0010 and 0015 keeps every stored import and its rows, and the
    columns of the old caches are gone."""
    from django.db.migrations.executor import MigrationExecutor

    created = add_import(sandbox, [ACCOUNT, '=cmd|" /C calc"!A0'], 2)
    snapshots.snapshot_period(30, QUINN)
    executor = MigrationExecutor(connection)
    executor.migrate([("kickouts", "0009_before_after")])
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    snapshot = ImportSnapshot.objects.get(task_guid=created["taskGUId"])
    assert snapshot.rows.count() == 4 and snapshot.state == SnapshotState.READY
    with connection.cursor() as cursor:
        described = connection.introspection.get_table_description(
            cursor, "kickouts_importsnapshot"
        )
    assert not {"csv_lines", "version"} & {column.name for column in described}


# -- the worker --


def run_worker() -> None:
    """What `manage.py db_worker` does in production, until the queue is empty (it closes
    the database connection when done, so these tests use real transactions)."""
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)


def test_the_worker_lists_the_period_itself_and_fills_the_queue(
    transactional_db, clerk_client, sandbox
):
    """The page only asks for a refresh; the worker lists EnergyCAP's imports and stores them."""
    first = clerk_client.get(reverse("queue"))
    assert "Asking EnergyCAP for the bill imports of the last 30 days" in first.content.decode()
    assert sandbox.log() == []  # the page itself asked EnergyCAP nothing
    run_worker()
    assert sandbox.count("task_list") == 1
    listed = snapshots.list_period(30)
    expected = {t.guid for t in listed if t.has_kickouts and not t.is_running}
    assert set(ImportSnapshot.objects.values_list("task_guid", flat=True)) == expected
    assert not ImportSnapshot.objects.exclude(state=SnapshotState.READY).exists()
    after = clerk_client.get(reverse("queue"))
    assert sum(g["imports"] for g in after.context["groups"]) >= len(expected)
    assert "Still loading" not in after.content.decode()
    assert "Asking EnergyCAP" not in after.content.decode()
    assert "Queue last refreshed from EnergyCAP: <time" in after.content.decode()


def test_the_queue_asks_for_a_listing_at_most_once_in_five_minutes(
    clerk_client, db, django_capture_on_commit_callbacks
):
    """Many page views, one listing task."""
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        for _ in range(3):
            clerk_client.get(reverse("queue"))
    assert len(callbacks) == 1


def test_new_imports_seen_in_the_task_list_are_stored_by_the_worker(
    transactional_db, clerk_client, sandbox
):
    """A refresh of the task list brings new imports into the queue, fetched in the background."""
    created = add_import(sandbox, [METER], 2, days_ago=0.01)
    clerk_client.get(reverse("task_list"))
    assert sandbox.count("kickout_summary") == 0
    run_worker()
    snapshot = ImportSnapshot.objects.get(task_guid=created["taskGUId"])
    assert (snapshot.state, snapshot.row_count) == (SnapshotState.READY, 2)


# -- grids with other columns (unit level, `responses` on the wire) --

OTHER_GUID = "0b5e2a7c-9d41-4e8a-b3f6-1c2d3e4f5a6b"


def grid(columns: list[str], rows: list[list[str]]) -> dict:
    """EnergyCAP's grid shape: field ids, and cells that name them."""
    ids = [40 + i for i in range(len(columns))]
    return {
        "fields": [{"id": i, "name": n} for i, n in zip(ids, columns, strict=True)],
        "data": [[{"fieldId": i, "value": v} for i, v in zip(ids, r, strict=True)] for r in rows],
    }


@responses.activate
def test_a_grid_without_a_message_column_is_read_message_by_message(db):
    """Its own column names are kept; account, meter, vendor, dates and cost still found."""
    api = EnergyCap("https://ec.test", "test-key-8d41a7", get_attempts=1)
    base = f"https://ec.test/api/v202401/import/bill/task/{OTHER_GUID}/kickout"
    columns = ["Account Number", "Serial Number", "Vendor", "Start Date", "End Date", "Amount"]
    responses.get(
        base + "/summary",
        json={"fileName": "feed.csv", "kickoutMessages": [ACCOUNT, METER], "taskGuid": OTHER_GUID},
    )
    responses.get(
        base + "/detail",
        match=[responses.matchers.query_param_matcher({"kickoutMessage": ACCOUNT})],
        json=grid(columns, [["00-12", "S1", "PSEG", "10/04/2026", "11/02/2026", "$1,234.50"]]),
    )
    responses.get(
        base + "/detail",
        match=[responses.matchers.query_param_matcher({"kickoutMessage": METER})],
        json=grid(columns, [["00-13", "", "PSEG", "2026-10-01", "", "n/a"]]),
    )
    responses.get(base + "/detail", json=grid(columns, [["00-12"] * 6, ["00-13"] * 6]))
    ImportSnapshot.objects.create(task_guid=OTHER_GUID)
    snapshot = snapshots.store(snapshots.fetch_kickouts(api, OTHER_GUID))
    assert snapshot.state == SnapshotState.READY and snapshot.columns == columns
    first, second = snapshot.rows.order_by("position")
    assert (first.message, first.account_code, first.meter_code) == (ACCOUNT, "00-12", "S1")
    assert (first.vendor_code, str(first.bill_start), str(first.total_cost)) == (
        "PSEG",
        "2026-10-04",
        "1234.50",
    )
    assert (second.message, second.bill_end, second.total_cost) == (METER, None, None)
    assert snapshot.file_name == "feed.csv" and snapshot.row_count == 2
