"""The EnergyCAP client against the sandbox over real HTTP, and its parsing at the edge."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import responses

from kickouts.energycap import (
    EnergyCap,
    NotFound,
    Rejected,
    TimedOut,
    Unauthorized,
    Unavailable,
    Verdict,
    build_filter,
    quote_filter_value,
)
from kickouts.payloads import KickoutGrid, Task, parse_datetime
from kickouts.sandbox.state import (
    API_USER_KICKOUT_TASK_GUID,
    EXPORT_TASK_GUID,
    KICKOUT_TASK_GUID,
    RUNNING_TASK_GUID,
)


@pytest.fixture
def api(sandbox_process, settings) -> EnergyCap:
    return EnergyCap(
        sandbox_process.url,
        settings.ENERGYCAP_API_KEY,
        read_timeout=2.0,
        max_retry_after=3.0,
        backoff_base=0.01,
    )


def test_every_request_carries_the_key_and_json_content_type(api, sandbox):
    """GETs too carry ECI-ApiKey and Content-Type: application/json, as EnergyCAP asks."""
    api.current_user()
    entry = sandbox.log("me")[-1]
    assert entry["hasKey"] is True
    assert api.session.headers["Content-Type"] == "application/json"


def test_a_wrong_key_is_unauthorized_and_says_both_causes(sandbox_process):
    """A 401 means a bad key or a missing permission; the message names both."""
    wrong = EnergyCap(sandbox_process.url, "not-the-key")
    with pytest.raises(Unauthorized) as caught:
        wrong.current_user()
    assert "key is wrong" in caught.value.message
    assert "permission" in caught.value.message
    assert "not-the-key" not in caught.value.message


def test_listing_bill_imports_reads_the_paging_headers(api):
    """Paging follows EnergyCAP's headers."""
    page = api.list_bill_import_tasks(
        filter_clauses=[("beginDate", "last 30 days", None)], page_size=25, page_number=2
    )
    assert page.page_number == 2
    assert page.page_size == 25
    assert page.total_records == 72
    assert page.total_pages == 3
    assert len(page.items) == 25
    assert page.has_next and page.has_previous
    assert all(task.is_bill_import for task in page.items)


def test_page_size_is_capped_at_a_thousand(api, sandbox):
    """The client never asks for more than EnergyCAP's cap."""
    api.list_bill_import_tasks(page_size=5000)
    assert sandbox.log("task_list")[-1]["query"]["pageSize"] == "1000"


def test_the_period_filter_narrows_the_list(api):
    """`beginDate last 7 days` returns fewer tasks than the last 90 days."""
    week = api.list_bill_import_tasks(filter_clauses=[("beginDate", "last 7 days", None)])
    quarter = api.list_bill_import_tasks(filter_clauses=[("beginDate", "last 90 days", None)])
    assert 0 < week.total_records < quarter.total_records


def test_a_quote_in_a_filter_value_is_doubled_and_cannot_widen_the_filter(api):
    """Tom O'Brien's tasks are found by name; an injection attempt finds nothing."""
    tom = api.list_bill_import_tasks(filter_clauses=[("fullName", "equals", "Tom O'Brien")])
    assert tom.items and {t.user.full_name for t in tom.items} == {"Tom O'Brien"}
    sneaky = api.list_bill_import_tasks(
        filter_clauses=[("fullName", "equals", "x' or fullName like '")]
    )
    assert sneaky.items == []


def test_filter_expressions_quote_every_value():
    """Numbers and booleans are quoted too; one of and between use the pipe."""
    assert quote_filter_value("O'Brien") == "'O''Brien'"
    assert (
        build_filter(
            ("isOpen", "equals", True),
            ("batchId", "one of", [1, 2]),
            ("beginDate", "last 7 days", None),
        )
        == "isOpen equals 'true' and batchId one of '1'|'2' and beginDate last 7 days"
    )
    with pytest.raises(ValueError):
        build_filter(("name) or (x", "equals", "y"))
    with pytest.raises(ValueError):
        build_filter(("fullName", "drop table", "y"))


def test_getting_a_task_parses_it_into_a_typed_object(api):
    """The task comes back typed, its GUID lower-cased and dates aware."""
    task = api.get_task(KICKOUT_TASK_GUID.upper())
    assert task.guid == KICKOUT_TASK_GUID
    assert task.has_kickouts and task.can_retry_kickouts
    assert task.begin_date.tzinfo is not None
    assert task.end_date is not None


def test_a_running_task_is_told_by_its_empty_end_date(api):
    """'Still running' is decided by endDate, not by a status string."""
    task = api.get_task(RUNNING_TASK_GUID)
    assert task.is_running
    assert not task.can_retry_kickouts


def test_an_unknown_task_is_not_found(api):
    """404 becomes NotFound."""
    with pytest.raises(NotFound):
        api.get_task("00000000-0000-4000-8000-000000000000")


def test_a_malformed_guid_never_reaches_the_network(api, sandbox):
    """Anything but a GUID is refused before a URL is built."""
    with pytest.raises(NotFound):
        api.get_task("../../me")
    assert sandbox.log() == []


def test_kickout_summary_and_detail_rows_are_keyed_by_column_name(api):
    """Column ids change between calls, so rows are keyed by name."""
    summary = api.kickout_summary(KICKOUT_TASK_GUID)
    assert len(summary.kickout_messages) == 3
    first = api.kickout_detail(KICKOUT_TASK_GUID)
    second = api.kickout_detail(KICKOUT_TASK_GUID)
    assert len(first.rows) == 12
    assert first.rows == second.rows
    assert "Kickout Message" in first.columns
    only = api.kickout_detail(KICKOUT_TASK_GUID, summary.kickout_messages[0])
    assert 0 < len(only.rows) < 12
    assert {row["Kickout Message"] for row in only.rows} == {summary.kickout_messages[0]}


def test_the_summary_of_a_task_that_is_not_a_bill_import_is_rejected(api):
    """EnergyCAP refuses kickout calls for other task types."""
    with pytest.raises(Rejected):
        api.kickout_summary(EXPORT_TASK_GUID)


def test_batches_are_listed_with_a_filter_and_fetched_by_id(api):
    """Open and pending batches, and one batch by id."""
    pending = api.pending_batches()
    assert pending and all(b.is_pending for b in pending)
    open_batches = api.open_batches()
    assert open_batches and all(b.is_open for b in open_batches)
    assert api.get_batch(901).batch_code == "ELEC-NOV"
    with pytest.raises(NotFound):
        api.get_batch(999999)


def test_the_current_user_carries_the_bills_and_batches_permissions(api):
    """/api/v3/me tells whose batches are 'own' and whether Manage is held."""
    me = api.current_user()
    assert me.user_id == 1
    assert me.can_create_bills and not me.can_manage_bills


def test_a_get_answered_503_twice_is_retried_until_it_succeeds(api, sandbox):
    """503, 503, 200: three requests, one answer."""
    sandbox.fault("task_get", {"status": 503}, {"status": 503})
    assert api.get_task(KICKOUT_TASK_GUID).guid == KICKOUT_TASK_GUID
    assert [e["status"] for e in sandbox.log("task_get")] == [503, 503, 200]


def test_a_get_that_keeps_failing_gives_up_as_unavailable(api, sandbox):
    """After the configured attempts the client says EnergyCAP is unavailable."""
    sandbox.fault("task_get", {"status": 502}, {"status": 503}, {"status": 504})
    with pytest.raises(Unavailable) as caught:
        api.get_task(KICKOUT_TASK_GUID)
    assert "HTTP 504" in caught.value.message
    assert sandbox.count("task_get") == 3


def test_a_short_retry_after_is_honoured(api, sandbox):
    """429 with Retry-After: 1 waits about a second, then succeeds."""
    sandbox.fault("me", {"status": 429, "retryAfter": 1})
    started = time.monotonic()
    api.current_user()
    assert time.monotonic() - started >= 0.9
    assert sandbox.count("me") == 2


def test_a_long_retry_after_gives_up_at_once_with_a_clear_error(api, sandbox):
    """A Retry-After longer than the cap is not waited for."""
    sandbox.fault("me", {"status": 429, "retryAfter": 120})
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        api.current_user()
    assert time.monotonic() - started < 1
    assert "120 seconds" in caught.value.message
    assert sandbox.count("me") == 1


def test_a_dropped_connection_on_a_get_is_retried(api, sandbox):
    """A connection closed without an answer is a connection error: GETs try again."""
    sandbox.fault("task_get", {"drop": True})
    assert api.get_task(KICKOUT_TASK_GUID).guid == KICKOUT_TASK_GUID
    assert sandbox.count("task_get") == 2


def test_a_hanging_get_times_out_within_the_read_timeout(api, sandbox):
    """No answer within the read timeout: TimedOut, not retried, about 2 s."""
    sandbox.fault("task_get", {"hang": 4})
    started = time.monotonic()
    with pytest.raises(TimedOut):
        api.get_task(KICKOUT_TASK_GUID)
    assert time.monotonic() - started < 3.5
    assert sandbox.count("task_get") == 1


def test_malformed_json_and_an_html_error_page_become_unavailable(api, sandbox):
    """Neither broken JSON nor an HTML page leaks through."""
    sandbox.fault("task_get", {"malformed": True})
    with pytest.raises(Unavailable) as caught:
        api.get_task(KICKOUT_TASK_GUID)
    assert "could not be read as JSON" in caught.value.message
    sandbox.fault("task_get", {"html": True, "status": 502}, {"html": True, "status": 502})
    sandbox.fault("task_get", {"html": True, "status": 502})
    with pytest.raises(Unavailable) as caught:
        api.get_task(KICKOUT_TASK_GUID)
    assert "<" not in caught.value.message


def test_the_reimport_post_is_sent_once_and_answers_the_new_task(api, sandbox):
    """A successful re-import names the new task, which is running."""
    body = {"batchSettings": {"batchMode": "use pending batch", "pendingBatchId": 907}}
    answer = api.reimport_kickouts(API_USER_KICKOUT_TASK_GUID, body)
    assert answer.verdict == Verdict.ACCEPTED
    assert api.get_task(answer.new_task_guid).is_running
    posts = sandbox.log("kickout_post")
    assert len(posts) == 1 and posts[0]["body"] == body


def test_a_rejected_reimport_carries_energycaps_message(api, sandbox):
    """400 with a message: refused, and the message is kept for the clerk."""
    answer = api.reimport_kickouts(
        API_USER_KICKOUT_TASK_GUID, {"batchSettings": {"batchMode": "use pending batch"}}
    )
    assert (answer.verdict, answer.status_code) == (Verdict.REFUSED, 400)
    assert "pendingBatchId" in answer.message or "pending" in answer.message.lower()


def test_the_key_is_not_in_the_clients_repr(api, settings):
    """A traceback's locals never show the key."""
    assert settings.ENERGYCAP_API_KEY not in repr(api)


# --- Parsing at the edge (unit level, with `responses` on the wire) -----------


def test_dates_parse_with_and_without_offset_and_long_fractions():
    """EnergyCAP's examples show both forms; .NET writes 7 fractional digits."""
    assert parse_datetime("2024-03-14T09:12:31") == datetime(2024, 3, 14, 9, 12, 31, tzinfo=UTC)
    with_offset = parse_datetime("2024-03-14T09:12:31.1234567-04:00")
    assert with_offset.astimezone(UTC) == datetime(2024, 3, 14, 13, 12, 31, 123456, tzinfo=UTC)
    assert parse_datetime("2024-03-14T09:12:31Z").tzinfo is not None
    assert parse_datetime("") is None and parse_datetime(None) is None
    assert parse_datetime("not a date") is None
    eastern = parse_datetime("2024-03-14T09:12:31", "America/New_York")
    assert eastern.astimezone(UTC).hour == 13


def test_a_task_with_missing_and_null_parts_still_parses():
    """Unknown properties are ignored; null objects become None."""
    task = Task.from_json(
        {
            "taskGUId": "7D1F3C2A-5B84-4E3F-9A61-2C8E4B7D9F10",
            "taskType": None,
            "user": None,
            "batch": None,
            "status": "Queued for review",
            "somethingNew": {"x": 1},
        }
    )
    assert task.user is None and task.batch is None
    assert task.status == "Queued for review"
    assert task.status_key == "running"  # no endDate: still running
    assert not task.is_bill_import


def test_an_unknown_status_of_an_ended_task_is_kept_verbatim():
    """Statuses are an open set."""
    task = Task.from_json(
        {"taskGUId": KICKOUT_TASK_GUID, "status": "Partially Imported", "endDate": "2024-01-01"}
    )
    assert task.status == "Partially Imported" and task.status_key == "other"


def test_the_kickout_grid_tolerates_odd_cells():
    """Cells with unknown field ids are dropped, rows stay."""
    grid = KickoutGrid.from_json(
        {
            "fields": [{"id": 7, "name": "Kickout Message"}, {"id": 3, "name": "Row Number"}],
            "data": [[{"fieldId": 3, "value": 4}, {"fieldId": 99, "value": "?"}], "junk"],
        }
    )
    assert grid.rows == [{"Row Number": "4"}, {}]


@responses.activate
def test_an_error_body_message_is_shown_and_html_is_not():
    """A JSON error's message is used; an HTML body is never passed on."""
    api = EnergyCap("https://ec.test", "test-key-5e1d0c", get_attempts=1)
    url = f"https://ec.test/api/v3/task/{KICKOUT_TASK_GUID}"
    responses.get(url, json={"message": "Task is archived"}, status=400)
    with pytest.raises(Rejected) as caught:
        api.get_task(KICKOUT_TASK_GUID)
    assert caught.value.message == "Task is archived"
    responses.replace(responses.GET, url, body="<html><script>x</script></html>", status=400)
    with pytest.raises(Rejected) as caught:
        api.get_task(KICKOUT_TASK_GUID)
    assert "<" not in caught.value.message


@responses.activate
def test_a_list_that_is_not_a_list_is_unavailable():
    """An object where a list belongs is a clear error, not a crash."""
    api = EnergyCap("https://ec.test", "test-key-5e1d0c", get_attempts=1)
    responses.get("https://ec.test/api/v3/task", json={"oops": True})
    with pytest.raises(Unavailable):
        api.list_bill_import_tasks()


@responses.activate
def test_json_in_another_declared_charset_is_still_read():
    """UTF-8 is read as UTF-8, and a body in the charset its header names is read in it."""
    api = EnergyCap("https://ec.test", "test-key-5e1d0c", get_attempts=1)
    url = f"https://ec.test/api/v3/task/{KICKOUT_TASK_GUID}"
    task = {"taskGUId": KICKOUT_TASK_GUID, "taskNote": "Café crème", "status": "Completed"}
    responses.get(url, body=json.dumps(task, ensure_ascii=False).encode("utf-8"))
    assert api.get_task(KICKOUT_TASK_GUID).task_note == "Café crème"
    responses.replace(
        responses.GET,
        url,
        body=json.dumps(task, ensure_ascii=False).encode("latin-1"),
        content_type="application/json; charset=ISO-8859-1",
    )
    assert api.get_task(KICKOUT_TASK_GUID).task_note == "Café crème"


@pytest.fixture
def clean_proxy_environment(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class _RecordingProxy(BaseHTTPRequestHandler):
    """An HTTP proxy that answers every request itself, with a 404 naming what it was asked."""

    seen: list[str] = []

    def do_GET(self):
        self.seen.append(self.path)
        body = json.dumps({"message": f"the proxy saw {self.path}"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recording_proxy():
    _RecordingProxy.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _RecordingProxy.seen
    server.shutdown()
    server.server_close()


def test_a_proxy_set_in_the_environment_carries_every_request(
    clean_proxy_environment, recording_proxy, sandbox_process, settings
):
    """HTTP_PROXY, even when set after the client was made, carries every request."""
    proxy_url, seen = recording_proxy
    api = EnergyCap(sandbox_process.url, settings.ENERGYCAP_API_KEY, read_timeout=2.0)
    clean_proxy_environment.setenv("HTTP_PROXY", proxy_url)
    for _ in range(2):
        with pytest.raises(NotFound, match="the proxy saw"):
            api.get_task(KICKOUT_TASK_GUID)
    assert seen == [f"{sandbox_process.url}/api/v3/task/{KICKOUT_TASK_GUID}"] * 2


def test_no_proxy_for_energycaps_host_goes_direct(
    clean_proxy_environment, recording_proxy, sandbox_process, settings
):
    """NO_PROXY naming EnergyCAP's host: the proxy sees nothing, the sandbox answers."""
    proxy_url, seen = recording_proxy
    clean_proxy_environment.setenv("HTTP_PROXY", proxy_url)
    clean_proxy_environment.setenv("NO_PROXY", "127.0.0.1,localhost")
    api = EnergyCap(sandbox_process.url, settings.ENERGYCAP_API_KEY, read_timeout=2.0)
    assert api.get_task(KICKOUT_TASK_GUID).guid == KICKOUT_TASK_GUID.lower()
    assert seen == []


def test_a_ca_bundle_in_the_environment_is_used_to_verify_tls(clean_proxy_environment, tmp_path):
    """REQUESTS_CA_BUNDLE names the file TLS is verified with: a missing one stops the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = EnergyCap(f"https://127.0.0.1:{port}", "test-key-5e1d0c", get_attempts=1)
    missing = tmp_path / "company-ca.pem"
    clean_proxy_environment.setenv("REQUESTS_CA_BUNDLE", str(missing))
    with pytest.raises(OSError, match="company-ca.pem"):
        api.get_task(KICKOUT_TASK_GUID)
    clean_proxy_environment.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(Unavailable, match="connection refused"):
        api.get_task(KICKOUT_TASK_GUID)


def test_every_task_property_lands_in_its_own_field():
    """Each JSON property of a task lands in the field of its name."""
    task = Task.from_json(
        {
            "taskId": 11,
            "taskGUId": "AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE",
            "taskType": {"taskTypeCode": "BillImport", "taskTypeInfo": "Bill Import"},
            "beginDate": "2026-01-02T03:04:05",
            "endDate": "2026-01-02T04:05:06+01:00",
            "user": {"userId": 7, "userCode": "ana", "fullName": "Ana Ruiz"},
            "message": "done",
            "status": "Completed",
            "taskNote": "a note",
            "analyzingCount": 22,
            "unresolvedFlagCount": 33,
            "currentSuccessCount": 44,
            "batch": {"batchId": 55, "batchCode": "B-55"},
        },
        assumed_zone="America/Chicago",
    )
    assert (task.task_id, task.guid) == (11, "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
    assert (task.task_type_code, task.task_type_info) == ("BillImport", "Bill Import")
    assert task.begin_date.isoformat() == "2026-01-02T03:04:05-06:00"
    assert task.end_date.isoformat() == "2026-01-02T04:05:06+01:00"
    assert (task.user.user_id, task.user.user_code, task.user.full_name) == (7, "ana", "Ana Ruiz")
    assert (task.message, task.status, task.task_note) == ("done", "Completed", "a note")
    assert (task.analyzing_count, task.unresolved_flag_count, task.current_success_count) == (
        22,
        33,
        44,
    )
    assert (task.batch.batch_id, task.batch.batch_code) == (55, "B-55")


@responses.activate
def test_a_key_spelled_with_json_escapes_is_redacted_too():
    """\\u escapes in the JSON text do not smuggle the key past the scrubbing."""
    key = "test-key-5e1d0c"
    api = EnergyCap("https://ec.test", key, get_attempts=1)
    escaped = "".join(f"\\u{ord(c):04x}" for c in key)
    url = f"https://ec.test/api/v3/task/{KICKOUT_TASK_GUID}"
    body = '{"taskGUId": "%s", "message": "key %s", "taskNote": "Caf\\u00e9"}'
    responses.get(url, body=body % (KICKOUT_TASK_GUID, escaped), content_type="application/json")
    task = api.get_task(KICKOUT_TASK_GUID)
    assert (task.message, task.task_note) == ("key [redacted]", "Café")


@responses.activate
def test_a_key_that_is_part_of_a_property_name_leaves_the_json_readable():
    """Scrubbing works on the parsed strings: `taskGUId` stays a name, the message loses the key."""
    api = EnergyCap("https://ec.test", "GUId", get_attempts=1)
    url = f"https://ec.test/api/v3/task/{KICKOUT_TASK_GUID}"
    body = json.dumps({"taskGUId": KICKOUT_TASK_GUID, "message": "the key GUId was sent"})
    responses.get(url, body=body, content_type="application/json")
    task = api.get_task(KICKOUT_TASK_GUID)
    assert task.guid == KICKOUT_TASK_GUID and task.message == "the key [redacted] was sent"
