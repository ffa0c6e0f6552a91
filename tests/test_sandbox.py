"""The built-in EnergyCAP sandbox, spoken to over real HTTP like the dashboard does.

No Django here: one sandbox process for the module, reset before every test.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from kickouts.sandbox.control import SandboxControl, SandboxControlError
from kickouts.sandbox.process import SandboxProcess, start_sandbox
from kickouts.sandbox.state import (
    ACCOUNT_IMPORT_TASK_GUID,
    API_OPEN_BATCH_IDS,
    API_USER_KICKOUT_TASK_GUID,
    CLOSED_BATCH_CODE,
    CLOSED_BATCH_ID,
    COMPLETED_TASK_GUID,
    EXPORT_TASK_GUID,
    FAILED_TASK_GUID,
    KICKOUT_TASK_GUID,
    OTHER_USER_OPEN_BATCH_CODE,
    OTHER_USER_OPEN_BATCH_ID,
    OWN_OPEN_BATCH_CODE,
    PENDING_BATCH_CODE,
    PENDING_BATCH_ID,
    RUNNING_TASK_GUID,
)

KEY = "sandbox-key"
TIMEOUT = 5
BILL_IMPORTS = {"taskTypeCode": "BillImport"}


class Api:
    """A requests.Session that sends the key, like the dashboard's client."""

    def __init__(self, base_url: str, key: str | None = KEY) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if key is not None:
            self.session.headers["ECI-ApiKey"] = key

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.get(self.base_url + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.post(self.base_url + path, **kwargs)

    def task(self, guid: str) -> dict[str, Any]:
        response = self.get(f"/api/v3/task/{guid}")
        assert response.status_code == 200, response.text
        return response.json()

    def batch(self, batch_id: int) -> dict[str, Any]:
        response = self.get(f"/api/v3/batch/{batch_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def tasks(self, **params: Any) -> list[dict[str, Any]]:
        response = self.get("/api/v3/task", params={**BILL_IMPORTS, **params})
        assert response.status_code == 200, response.text
        return response.json()

    def batches(self, **params: Any) -> list[dict[str, Any]]:
        response = self.get("/api/v3/batch", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def reimport(
        self,
        batch_settings: dict[str, Any],
        guid: str = KICKOUT_TASK_GUID,
        timeout: float = TIMEOUT,
        **extra: Any,
    ) -> requests.Response:
        """POST a kickout re-import; ``extra`` becomes top-level body fields (importNote...)."""
        return self.post(
            f"/api/v202401/import/bill/task/{guid}/kickout",
            json={"batchSettings": batch_settings, **extra},
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def sandbox_proc() -> Iterator[SandboxProcess]:
    with start_sandbox(port=0) as proc:
        yield proc


@pytest.fixture(autouse=True)
def sandbox(sandbox_proc: SandboxProcess) -> SandboxControl:
    """Fresh seed data, no faults, an empty log (overrides the Django-bound conftest one)."""
    control = SandboxControl(sandbox_proc.url)
    control.reset()
    return control


@pytest.fixture
def api(sandbox_proc: SandboxProcess) -> Api:
    return Api(sandbox_proc.url)


def message_of(response: requests.Response) -> str:
    return str(response.json()["message"])


def ok(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


# --- the key, 404s, headers ---------------------------------------------------------------


def test_a_request_without_the_api_key_is_refused_with_401(sandbox_proc):
    """No ECI-ApiKey header: 401 with a JSON message."""
    response = Api(sandbox_proc.url, key=None).get("/api/v3/me")
    assert response.status_code == 401
    assert "ECI-ApiKey" in message_of(response)


def test_a_wrong_api_key_is_refused_and_its_value_never_logged(sandbox_proc, sandbox):
    """A wrong key: 401; the log knows a key came but never what it was."""
    response = Api(sandbox_proc.url, key="stolen-key-123").get("/api/v3/task", params=BILL_IMPORTS)
    assert response.status_code == 401
    [entry] = sandbox.log("task_list")
    assert entry["hasKey"] is True and entry["status"] == 401
    assert "stolen-key-123" not in json.dumps(sandbox.log())


def test_every_answer_says_it_comes_from_a_sandbox(api):
    """Success and error answers alike carry X-EnergyCAP-Sandbox and a JSON content type."""
    for response in (api.get("/api/v3/me"), api.get("/api/v3/task/nope")):
        assert response.headers["X-EnergyCAP-Sandbox"] == "1"
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v3/task/{uuid.UUID(int=7)}",
        "/api/v3/task/not-a-guid",
        f"/api/v202401/import/bill/task/{uuid.UUID(int=7)}/kickout/summary",
        f"/api/v202401/import/bill/task/{uuid.UUID(int=7)}/kickout/detail",
        "/api/v3/batch/424242",
        "/api/v3/batch/nine",
        "/api/v3/nothing-here",
    ],
)
def test_unknown_things_are_404_with_a_message(api, path):
    """Unknown or malformed task GUIDs and batch ids, and unknown routes, answer 404."""
    response = api.get(path)
    assert response.status_code == 404
    assert message_of(response)


def test_reimport_of_an_unknown_task_is_404(api):
    """The POST on a task EnergyCAP does not know answers 404."""
    response = api.reimport({"batchMode": "new self-contained batch"}, guid=str(uuid.uuid4()))
    assert response.status_code == 404


def test_one_keep_alive_connection_serves_many_requests(sandbox_proc):
    """HTTP/1.1 keep-alive: one socket serves several answers, errors and POSTs included."""
    connection = http.client.HTTPConnection("127.0.0.1", sandbox_proc.port, timeout=TIMEOUT)
    headers = {"ECI-ApiKey": KEY, "Content-Type": "application/json"}
    requests_to_send = [
        ("GET", "/api/v3/me", None),
        ("GET", "/api/v3/task/nope", None),
        ("POST", kickout_url(KICKOUT_TASK_GUID), b'{"batchSettings": {}}'),
        ("GET", "/api/v3/me", None),
    ]
    try:
        sockets = set()
        statuses = []
        for method, path, body in requests_to_send:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            assert response.getheader("Content-Length") and not response.will_close
            sockets.add(id(connection.sock))
            statuses.append(response.status)
        assert statuses == [200, 404, 400, 200] and len(sockets) == 1
    finally:
        connection.close()


# --- task lists, paging, seed -------------------------------------------------------------


def test_bill_import_list_is_paged_newest_first_with_paging_headers(api):
    """pageSize/pageNumber slice a newest-first list and the four headers describe it."""
    first = api.get("/api/v3/task", params={**BILL_IMPORTS, "pageSize": 10})
    second = api.get("/api/v3/task", params={**BILL_IMPORTS, "pageSize": 10, "pageNumber": 2})
    total = int(first.headers["TotalNumberOfRecords"])
    assert total >= 75
    assert first.headers["PageNumber"] == "1" and second.headers["PageNumber"] == "2"
    assert first.headers["PageSize"] == "10"
    assert first.headers["TotalPages"] == str(math.ceil(total / 10))
    begins = [task["beginDate"] for task in first.json() + second.json()]
    assert len(begins) == 20 and begins == sorted(begins, reverse=True)


def test_page_size_over_1000_is_capped_and_below_1_is_refused(api):
    """pageSize 5000 becomes 1000; 0 or words are a 400."""
    capped = api.get("/api/v3/task", params={"pageSize": 5000})
    assert capped.status_code == 200 and capped.headers["PageSize"] == "1000"
    for bad in ("0", "-3", "ten"):
        assert api.get("/api/v3/batch", params={"pageSize": bad}).status_code == 400
    assert api.get("/api/v3/batch", params={"pageNumber": "0"}).status_code == 400


def test_a_page_past_the_end_is_empty_but_keeps_the_headers(api):
    """Page 99 of batches is [] with the real totals."""
    response = api.get("/api/v3/batch", params={"pageSize": 5, "pageNumber": 99})
    assert response.json() == []
    assert response.headers["TotalNumberOfRecords"] == "20"
    assert response.headers["TotalPages"] == "4"


def test_the_seed_has_every_kind_of_bill_import_a_dashboard_must_show(api):
    """70+ recent imports, 12+ with kickouts, 3 running, failures with messages, older ones."""
    tasks = api.tasks()
    statuses = [task["status"] for task in tasks]
    assert statuses.count("Completed with kickouts") >= 12
    running = [task for task in tasks if task["status"] == "Processing"]
    assert len(running) == 3 and all(task["endDate"] is None for task in running)
    assert all(task["message"] for task in tasks if task["status"] == "Failed")
    assert any(task["batch"] is None for task in tasks)
    assert len(api.tasks(filter="beginDate last 30 days")) >= 70
    assert len(api.tasks(filter="beginDate last 90 days")) > len(
        api.tasks(filter="beginDate last 30 days")
    )
    names = {task["user"]["fullName"] for task in tasks}
    assert {"API Import Service", "Tom O'Brien", "Maria Okafor"} <= names


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data(api, sandbox):
    """Reset with a seed is deterministic; a different seed draws other tasks."""
    first = [task["taskGUId"] for task in api.tasks()]
    sandbox.reset(seed=1)
    assert [task["taskGUId"] for task in api.tasks()] == first
    sandbox.reset(seed=2)
    assert [task["taskGUId"] for task in api.tasks()] != first
    assert api.task(KICKOUT_TASK_GUID)["status"] == "Completed with kickouts"


def test_other_task_types_are_left_out_of_bill_import_lists_but_found_by_guid(api):
    """An Export Bills task is not listed for taskTypeCode=BillImport, yet GET by GUID works."""
    listed = {task["taskGUId"] for task in api.tasks()}
    assert EXPORT_TASK_GUID not in listed and ACCOUNT_IMPORT_TASK_GUID not in listed
    export = api.task(EXPORT_TASK_GUID)
    assert export["taskType"]["taskTypeCode"] == "ExportBills"
    lower = api.get("/api/v3/task", params={"taskTypeCode": "billimport"}).json()
    assert len(lower) == len(listed)
    everything = api.get("/api/v3/task").json()
    assert EXPORT_TASK_GUID in {task["taskGUId"] for task in everything}


def test_task_dates_have_no_offset_and_batch_dates_do(api):
    """Tasks: UTC without offset, with milliseconds; batches: with an offset."""
    task = api.task(COMPLETED_TASK_GUID)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", task["beginDate"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", task["endDate"])
    batch = api.batch(CLOSED_BATCH_ID)
    assert batch["startDate"].endswith("+00:00") and batch["endDate"].endswith("+00:00")


# --- filters --------------------------------------------------------------------------------


def test_a_doubled_quote_in_a_filter_value_finds_tom_obrien(api):
    """'Tom O''Brien' is read back as Tom O'Brien."""
    tasks = api.tasks(filter="fullName equals 'Tom O''Brien'")
    assert tasks and {task["user"]["fullName"] for task in tasks} == {"Tom O'Brien"}
    batches = api.batches(filter="fullName like 'o''brien'")
    assert batches and all(b["createdBy"]["fullName"] == "Tom O'Brien" for b in batches)


def test_conditions_join_with_and_in_any_case(api):
    """Two conditions narrow together; AND is case-insensitive and field names too."""
    both = api.batches(filter="ISOPEN equals 'true' AnD fullname equals 'API Import Service'")
    assert sorted(b["batchId"] for b in both) == list(API_OPEN_BATCH_IDS)


def test_one_of_between_and_comparisons(api):
    """one of and between take 'a'|'b'; comparisons on numbers work."""
    found = api.batches(filter="batchId one of '901'|'907' | '909'")
    assert sorted(b["batchId"] for b in found) == [901, 907, 909]
    ranged = api.batches(filter="batchId between '903'|'905'")
    assert sorted(b["batchId"] for b in ranged) == [903, 904, 905]
    assert len(api.batches(filter="batchId greater than equal '918'")) == 3
    task = api.task(KICKOUT_TASK_GUID)
    by_id = api.tasks(filter=f"taskId equals '{task['taskId']}'")
    assert [t["taskGUId"] for t in by_id] == [KICKOUT_TASK_GUID]
    by_guid = api.tasks(filter=f"taskGUID equals '{KICKOUT_TASK_GUID.upper()}'")
    assert [t["taskGUId"] for t in by_guid] == [KICKOUT_TASK_GUID]


def test_batch_filters_on_status_open_and_kickouts(api):
    """batchStatus compares case-insensitively; isOpen and HasImportsWithKickout are booleans."""
    pending = api.batches(filter="batchStatus equals 'pending'")
    assert sorted(b["batchId"] for b in pending) == [906, 907, 908]
    assert len(api.batches(filter="isOpen equals 'true'")) == 5
    flagged = api.batches(filter="HasImportsWithKickout equals 'true'")
    assert OTHER_USER_OPEN_BATCH_ID in {b["batchId"] for b in flagged}
    coded = api.batches(filter=f"batchCode equals '{OWN_OPEN_BATCH_CODE.lower()}'")
    assert [b["batchId"] for b in coded] == [901]
    tasks = api.tasks(filter="batchCode equals 'GAS-NOV' and batchId equals '903'")
    assert KICKOUT_TASK_GUID in {t["taskGUId"] for t in tasks}


def test_date_shortcuts_and_date_values_narrow_the_period(api):
    """today/last N days/explicit dates select by beginDate."""
    now = datetime.now(UTC)
    today = api.tasks(filter="beginDate today")
    assert RUNNING_TASK_GUID in {t["taskGUId"] for t in today}
    week = api.tasks(filter="beginDate last 7 days")
    month = api.tasks(filter="beginDate last 30 days")
    assert len(today) <= len(week) < len(month) < len(api.tasks())
    since = (now - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S")
    assert len(api.tasks(filter=f"beginDate greater than equal '{since}'")) == len(week)
    yesterday = api.tasks(filter="beginDate yesterday")
    day = (now - timedelta(days=1)).date().isoformat()
    assert all(t["beginDate"].startswith(day) for t in yesterday)
    assert len(api.tasks(filter=f"beginDate equals '{day}'")) == len(yesterday)
    window = api.tasks(filter=f"beginDate between '{day}'|'{now.date().isoformat()}'")
    assert len(window) == len(yesterday) + len(today)


@pytest.mark.parametrize(
    "expression",
    [
        "color equals 'red'",
        "fullName resembles 'Tom'",
        "fullName equals 'Tom",
        "fullName equals 'Tom' or batchId equals '901'",
        "fullName equals 'Tom' and",
        "fullName equals Tom",
        "batchId equals 'nine'",
        "beginDate like '2026'",
        "beginDate equals 'last week'",
        "taskId between '1'",
        "fullName today",
        "fullName equals 'a'|'b'",
    ],
)
def test_malformed_filters_are_refused_rather_than_ignored(api, expression):
    """A filter the sandbox cannot read is a 400 'Invalid filter', never a wider list."""
    response = api.get("/api/v3/task", params={**BILL_IMPORTS, "filter": expression})
    assert response.status_code == 400
    assert message_of(response).startswith("Invalid filter:")


def test_an_unknown_batch_filter_field_is_refused(api):
    """Task-only fields are unknown to the batch list."""
    response = api.get("/api/v3/batch", params={"filter": "taskId equals '1'"})
    assert response.status_code == 400 and "taskId" in message_of(response)


# --- kickout inspection -----------------------------------------------------------------


def kickout_url(guid: str, what: str = "") -> str:
    return f"/api/v202401/import/bill/task/{guid}/kickout" + (f"/{what}" if what else "")


def test_kickout_summary_lists_the_messages_of_the_import(api):
    """The summary names the file and each distinct kickout message."""
    summary = ok(api.get(kickout_url(KICKOUT_TASK_GUID, "summary")))
    assert summary["taskGuid"] == KICKOUT_TASK_GUID
    assert re.fullmatch(r"ConEd_\d{4}-\d\d-\d\d\.xlsx", summary["fileName"])
    assert summary["kickoutMessages"] == [
        "Account not found",
        "Meter not found for account",
        "Bill overlaps an existing bill",
    ]


def test_kickout_summary_of_an_import_without_kickouts_is_empty_and_other_types_are_400(api):
    """A clean bill import has no messages; an Export Bills task is not a bill import."""
    clean = ok(api.get(kickout_url(COMPLETED_TASK_GUID, "summary")))
    assert clean["kickoutMessages"] == []
    other = api.get(kickout_url(EXPORT_TASK_GUID, "summary"))
    assert other.status_code == 400 and "not a Bill Import" in message_of(other)


def rows_by_name(detail: dict[str, Any]) -> list[dict[str, Any]]:
    names = {field["id"]: field["name"] for field in detail["fields"]}
    return [{names[cell["fieldId"]]: cell["value"] for cell in row} for row in detail["data"]]


def test_kickout_detail_column_ids_change_between_calls_and_cells_follow_them(api):
    """Column ids differ on every call, but mapped by name the rows are the same."""
    first = ok(api.get(kickout_url(KICKOUT_TASK_GUID, "detail")))
    second = ok(api.get(kickout_url(KICKOUT_TASK_GUID, "detail")))
    assert [f["name"] for f in first["fields"]][:3] == [
        "Kickout Message",
        "Row Number",
        "Account Code",
    ]
    assert [f["id"] for f in first["fields"]] != [f["id"] for f in second["fields"]]
    assert rows_by_name(first) == rows_by_name(second)
    assert len(rows_by_name(first)) == 12


def test_kickout_detail_for_one_message_returns_only_its_rows(api):
    """kickoutMessage selects rows by exact message."""
    detail = ok(
        api.get(
            kickout_url(KICKOUT_TASK_GUID, "detail"),
            params={"kickoutMessage": "Meter not found for account"},
        )
    )
    rows = rows_by_name(detail)
    assert len(rows) == 4
    assert {row["Kickout Message"] for row in rows} == {"Meter not found for account"}
    none = ok(api.get(kickout_url(KICKOUT_TASK_GUID, "detail"), params={"kickoutMessage": "meter"}))
    assert none["data"] == []


# --- the re-import: preconditions and body ------------------------------------------------


@pytest.mark.parametrize(
    ("guid", "status"),
    [
        (COMPLETED_TASK_GUID, "Completed"),
        (RUNNING_TASK_GUID, "Processing"),
        (FAILED_TASK_GUID, "Failed"),
    ],
)
def test_reimport_of_a_task_not_completed_with_kickouts_is_refused_naming_its_status(
    api, guid, status
):
    """Only a 'Completed with kickouts' bill import can be re-imported."""
    response = api.reimport({"batchMode": "new self-contained batch"}, guid=guid)
    assert response.status_code == 400
    assert f"'{status}'" in message_of(response)


def test_reimport_of_an_export_task_is_refused_as_not_a_bill_import(api):
    """A task of another type is a 400."""
    response = api.reimport({"batchMode": "new self-contained batch"}, guid=EXPORT_TASK_GUID)
    assert response.status_code == 400 and "not a Bill Import" in message_of(response)


def test_reimport_without_the_create_permission_is_401(api, sandbox):
    """EnergyCAP answers 401 when the key's user lacks Bills and Batches Create."""
    assert sandbox.set_me(create=False)["permissions"]["billsAndBatches"]["create"] is False
    response = api.reimport({"batchMode": "new self-contained batch"})
    assert response.status_code == 401 and "Create" in message_of(response)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("{not json", "not valid JSON"),
        ({"importNote": "x"}, "batchSettings is required"),
        ({"batchSettings": {}}, "batchMode is required"),
        ({"batchSettings": {"batchMode": "Smart Batch"}}, "is not one of"),
        ({"batchSettings": {"batchMode": "use pending batch", "pendingBatchId": "907"}}, "whole"),
        ({"batchSettings": {"batchMode": "new batch", "leaveExistingBatchesOpen": 1}}, "boolean"),
        ({"batchSettings": {"batchMode": "new batch", "newBatchCode": "X" * 256}}, "255"),
        ({"batchSettings": {"batchMode": "use pending batch", "newBatchCode": "X" * 256}}, "255"),
        ({"batchSettings": {"batchMode": "new batch"}, "saveAsResolved": "yes"}, "boolean"),
        ([1, 2], "JSON object"),
    ],
)
def test_malformed_reimport_bodies_are_400(api, body, words):
    """Bad JSON, missing or unknown batchMode, wrong types and long codes are refused."""
    url = api.base_url + kickout_url(KICKOUT_TASK_GUID)
    data = body if isinstance(body, str) else json.dumps(body)
    response = api.session.post(
        url, data=data, headers={"Content-Type": "application/json"}, timeout=TIMEOUT
    )
    assert response.status_code == 400
    assert words in message_of(response)
    assert len(api.tasks()) == 78  # nothing was started


# --- the five batch modes -------------------------------------------------------------------


def started_task(api: Api, response: requests.Response) -> dict[str, Any]:
    guid = ok(response)["taskGUId"]
    return api.task(guid)


def test_use_existing_batch_by_id_imports_into_that_open_batch_and_leaves_it_open(api):
    """existingOpenBatchId names the API user's open batch: used, still open."""
    response = api.reimport({"batchMode": "use existing batch", "existingOpenBatchId": 902})
    task = started_task(api, response)
    assert task["batch"] == {"batchId": 902, "batchCode": "WATER-Q4"}
    assert api.batch(902)["isOpen"] is True


def test_use_existing_batch_without_id_fails_when_the_api_user_has_two_open_batches(api):
    """Without an id the key's user needs exactly one open batch; the seed gives two."""
    response = api.reimport({"batchMode": "use existing batch"})
    assert response.status_code == 400
    assert "exactly one open batch" in message_of(response) and "2" in message_of(response)


def test_use_existing_batch_without_id_uses_the_only_open_batch(api, sandbox):
    """With one open batch left, it is the target."""
    sandbox.update_batch(902, batch_status="Closed")
    task = started_task(api, api.reimport({"batchMode": "use existing batch"}))
    assert task["batch"]["batchId"] == 901


def test_use_existing_batch_of_another_user_needs_manage(api, sandbox):
    """Maria's open batch is refused without Manage and used with it."""
    settings = {"batchMode": "use existing batch", "existingOpenBatchId": OTHER_USER_OPEN_BATCH_ID}
    refused = api.reimport(settings)
    assert refused.status_code == 400 and "Manage" in message_of(refused)
    sandbox.set_me(manage=True)
    task = started_task(api, api.reimport(settings))
    assert task["batch"]["batchId"] == OTHER_USER_OPEN_BATCH_ID


@pytest.mark.parametrize(("batch_id", "words"), [(909, "not open"), (907, "not open"), (5, "not")])
def test_use_existing_batch_refuses_closed_pending_and_unknown_batches(api, batch_id, words):
    """The named batch must exist and be open."""
    response = api.reimport({"batchMode": "use existing batch", "existingOpenBatchId": batch_id})
    assert response.status_code == 400 and words in message_of(response)


def test_new_batch_fails_when_it_would_have_to_close_more_than_one_open_batch(api):
    """leaveExistingBatchesOpen absent or false with two open batches: refused."""
    for settings in (
        {"batchMode": "new batch"},
        {"batchMode": "new batch", "leaveExistingBatchesOpen": False},
    ):
        response = api.reimport(settings)
        assert response.status_code == 400
        assert "2 open batches" in message_of(response)


def test_new_batch_closes_the_single_open_batch_and_makes_an_auto_coded_one(api, sandbox):
    """With one open batch it is closed; the new batch gets a KO-yyyymmdd-n code."""
    sandbox.update_batch(902, is_open=False)
    task = started_task(api, api.reimport({"batchMode": "new batch", "newBatchCode": ""}))
    assert re.fullmatch(r"KO-\d{8}-1", task["batch"]["batchCode"])
    assert api.batch(901)["batchStatus"] == "Closed"
    new = api.batch(task["batch"]["batchId"])
    assert new["isOpen"] is True and new["createdBy"]["userId"] == 1


def test_new_batch_leaving_existing_batches_open_keeps_them_open(api):
    """leaveExistingBatchesOpen true: a new batch with the given code, others untouched."""
    settings = {
        "batchMode": "new batch",
        "leaveExistingBatchesOpen": True,
        "newBatchCode": "RETRY-1",
    }
    task = started_task(api, api.reimport(settings))
    assert task["batch"]["batchCode"] == "RETRY-1"
    assert api.batch(901)["isOpen"] and api.batch(902)["isOpen"]
    again = api.reimport(settings)
    assert again.status_code == 400 and "already exists" in message_of(again)


def test_new_self_contained_batch_is_closed_when_the_task_ends(api, sandbox):
    """The self-contained batch is open while the import runs and closed once it ends."""
    sandbox.configure(task_seconds=0.4, next_outcomes=["Completed"])
    task = started_task(api, api.reimport({"batchMode": "new self-contained batch"}))
    batch_id = task["batch"]["batchId"]
    assert api.batch(batch_id)["isOpen"] is True
    assert api.batch(901)["isOpen"] and api.batch(902)["isOpen"]
    time.sleep(0.5)
    closed = api.batch(batch_id)
    assert closed["batchStatus"] == "Closed" and closed["billCount"] == 12


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"batchMode": "use pending batch"}, "requires pendingBatchId"),
        ({"batchMode": "use pending batch", "pendingBatchId": 901}, "not pending"),
        ({"batchMode": "use pending batch", "pendingBatchId": 4242}, "not found"),
    ],
)
def test_use_pending_batch_requires_an_existing_pending_batch(api, settings, words):
    """pendingBatchId is required and must name a pending batch."""
    response = api.reimport(settings)
    assert response.status_code == 400 and words in message_of(response)


def test_use_pending_batch_imports_into_it_and_ignores_fields_it_does_not_use(api):
    """Pending batch 907 is used and stays pending; newBatchCode and friends are ignored."""
    settings = {
        "batchMode": "use pending batch",
        "pendingBatchId": PENDING_BATCH_ID,
        "newBatchCode": "IGNORED",
        "existingOpenBatchId": 903,
        "leaveExistingBatchesOpen": False,
    }
    task = started_task(api, api.reimport(settings))
    assert task["batch"]["batchId"] == PENDING_BATCH_ID
    assert api.batch(PENDING_BATCH_ID)["batchStatus"] == "Pending"
    assert api.batches(filter="batchCode equals 'IGNORED'") == []


@pytest.mark.parametrize("code", [None, "", "   "])
def test_smart_batch_requires_a_code(api, code):
    """smart batch without a non-blank newBatchCode is a 400."""
    settings: dict[str, Any] = {"batchMode": "smart batch"}
    if code is not None:
        settings["newBatchCode"] = code
    response = api.reimport(settings)
    assert response.status_code == 400 and "newBatchCode" in message_of(response)


def test_smart_batch_with_a_closed_batch_code_makes_a_new_batch_named_code_plus_guid(api):
    """A closed ELEC-OCT means a new open batch 'ELEC-OCT-<guid>'; others stay open."""
    response = api.reimport({"batchMode": "smart batch", "newBatchCode": CLOSED_BATCH_CODE})
    task = started_task(api, response)
    code = task["batch"]["batchCode"]
    assert code.startswith(CLOSED_BATCH_CODE + "-")
    uuid.UUID(code[len(CLOSED_BATCH_CODE) + 1 :])
    assert api.batch(task["batch"]["batchId"])["isOpen"] is True
    assert api.batch(901)["isOpen"] and api.batch(902)["isOpen"]


def test_smart_batch_with_the_api_users_open_batch_code_uses_it(api):
    """ELEC-NOV is the API user's open batch: used as is."""
    response = api.reimport({"batchMode": "smart batch", "newBatchCode": OWN_OPEN_BATCH_CODE})
    assert started_task(api, response)["batch"]["batchId"] == 901


def test_smart_batch_with_another_users_open_batch_code_needs_manage(api, sandbox):
    """GAS-NOV is Maria's: the error names the rewritten mode; with Manage it is used."""
    settings = {"batchMode": "smart batch", "newBatchCode": OTHER_USER_OPEN_BATCH_CODE}
    refused = api.reimport(settings)
    assert refused.status_code == 400
    assert "use existing batch" in message_of(refused) and "Manage" in message_of(refused)
    sandbox.set_me(manage=True)
    task = started_task(api, api.reimport(settings))
    assert task["batch"]["batchId"] == OTHER_USER_OPEN_BATCH_ID


def test_smart_batch_with_a_pending_batch_code_uses_the_pending_batch(api):
    """AUDIT-HOLD is pending: used and left pending."""
    response = api.reimport({"batchMode": "smart batch", "newBatchCode": PENDING_BATCH_CODE})
    task = started_task(api, response)
    assert task["batch"] == {"batchId": 906, "batchCode": PENDING_BATCH_CODE}
    assert api.batch(906)["batchStatus"] == "Pending"


def test_smart_batch_with_a_new_code_creates_an_open_batch_and_leaves_others_open(api):
    """An unused code makes a new open batch with exactly that code."""
    response = api.reimport({"batchMode": "smart batch", "newBatchCode": "KO-FIXES"})
    task = started_task(api, response)
    assert task["batch"]["batchCode"] == "KO-FIXES"
    assert api.batch(901)["isOpen"] and api.batch(902)["isOpen"]


# --- the re-import task's life ---------------------------------------------------------------


def test_a_reimport_task_runs_then_ends_and_its_bills_reach_the_batch(api, sandbox):
    """Processing with no endDate for taskSeconds, then ended; the batch counts the bills."""
    sandbox.configure(task_seconds=0.5, next_outcomes=["Completed"])
    bills_before = api.batch(PENDING_BATCH_ID)["billCount"]
    body = {"batchMode": "use pending batch", "pendingBatchId": PENDING_BATCH_ID}
    response = api.reimport(body, importNote="Fixed the account alias", saveAsResolved=False)
    running = started_task(api, response)
    assert running["status"] == "Processing" and running["endDate"] is None
    assert running["user"]["fullName"] == "API Import Service"
    assert running["taskNote"] == "Fixed the account alias" and running["message"] is None
    assert running["settings"]["batchSettings"] == body
    assert running["taskGUId"] != KICKOUT_TASK_GUID
    assert api.batch(PENDING_BATCH_ID)["billCount"] == bills_before
    time.sleep(0.6)
    ended = api.task(running["taskGUId"])
    assert ended["status"] == "Completed" and ended["endDate"] is not None
    assert ended["currentSuccessCount"] == 12
    assert api.batch(PENDING_BATCH_ID)["billCount"] == bills_before + 12
    assert api.task(KICKOUT_TASK_GUID)["status"] == "Completed with kickouts"


def test_the_outcome_queue_decides_how_the_next_reimports_end(api, sandbox):
    """Queued outcomes are used in order: clean, fewer kickouts, failed with a message."""
    sandbox.configure(
        task_seconds=0, next_outcomes=["Completed", "Completed with kickouts", "Failed"]
    )
    settings = {"batchMode": "new self-contained batch"}
    clean, fewer, failed = (started_task(api, api.reimport(settings)) for _ in range(3))
    assert clean["status"] == "Completed"
    assert fewer["status"] == "Completed with kickouts"
    assert failed["status"] == "Failed" and failed["message"]
    source = ok(api.get(kickout_url(KICKOUT_TASK_GUID, "summary")))["kickoutMessages"]
    left = ok(api.get(kickout_url(fewer["taskGUId"], "summary")))["kickoutMessages"]
    assert left and set(left) < set(source)
    left_rows = ok(api.get(kickout_url(fewer["taskGUId"], "detail")))["data"]
    assert 0 < len(left_rows) < 12
    assert ok(api.get(kickout_url(clean["taskGUId"], "summary")))["kickoutMessages"] == []
    again = api.reimport(settings, guid=fewer["taskGUId"])
    assert again.status_code == 200  # a re-import with kickouts can be re-imported in turn


def test_without_a_queue_outcomes_follow_the_seed(api, sandbox):
    """Two runs from the same seed end their re-imports the same way, in a mix."""

    def outcomes() -> list[str]:
        sandbox.reset(task_seconds=0)
        settings = {"batchMode": "new self-contained batch"}
        return [started_task(api, api.reimport(settings))["status"] for _ in range(12)]

    first = outcomes()
    assert first == outcomes()
    assert len(set(first)) >= 2


def test_an_added_task_keeps_a_script_note_and_an_unknown_status_verbatim(api, sandbox):
    """Control-added tasks carry whatever a test needs, shown as given."""
    added = sandbox.add_task(
        status="Queued for review",
        task_note="<script>alert(1)</script>",
        end_date=None,
        user_full_name="Tom O'Brien",
    )
    task = api.task(added["taskGUId"])
    assert task["status"] == "Queued for review" and task["endDate"] is None
    assert task["taskNote"] == "<script>alert(1)</script>"
    assert task["user"]["fullName"] == "Tom O'Brien"
    kicked = sandbox.add_task(kickout_messages=["Account not found"], rows_per_message=2)
    assert api.task(kicked["taskGUId"])["status"] == "Completed with kickouts"
    response = api.reimport({"batchMode": "new self-contained batch"}, guid=kicked["taskGUId"])
    assert started_task(api, response)["batch"]


def test_the_list_shows_each_task_as_its_own_get_does_even_after_changes(api, sandbox):
    """The list shows every task as its own GET does, including what control routes change."""

    def listed() -> dict[str, dict[str, Any]]:
        return {task["taskGUId"]: task for task in api.tasks(pageSize=1000)}

    before = listed()
    for guid in list(before)[:20]:
        assert before[guid] == api.task(guid)
    ended = next(t for t in before.values() if t["endDate"] and t["batch"])
    guid, batch_id = ended["taskGUId"], ended["batch"]["batchId"]
    sandbox.update_task(guid, task_note="Checked by Ana", message="Re-read", status="Failed")
    sandbox.update_batch(batch_id, batch_code="RENAMED-1")
    after = listed()
    assert after[guid] == api.task(guid)
    assert (after[guid]["taskNote"], after[guid]["message"], after[guid]["status"]) == (
        "Checked by Ana",
        "Re-read",
        "Failed",
    )
    shown = [t for t in after.values() if t["batch"] and t["batch"]["batchId"] == batch_id]
    assert shown and all(t["batch"]["batchCode"] == "RENAMED-1" for t in shown)
    # A running task's counts move on between answers; its text is never kept.
    running = sandbox.add_task(end_date=None)
    assert listed()[running["taskGUId"]]["endDate"] is None
    sandbox.update_task(running["taskGUId"], status="Completed")
    assert listed()[running["taskGUId"]]["status"] == "Completed"


def test_added_batches_and_a_switched_api_user_change_ownership(api, sandbox):
    """The API user can be switched; a control-added batch belongs to whom it says."""
    batch = sandbox.add_batch(batch_code="DEV-OPEN", owner_user_id=3)
    assert batch["createdBy"]["fullName"] == "Dev Patel" and batch["isOpen"] is True
    me = sandbox.set_me(system_user_id=3)
    assert ok(api.get("/api/v3/me")) == me and me["fullName"] == "Dev Patel"
    settings = {"batchMode": "use existing batch", "existingOpenBatchId": batch["batchId"]}
    response = api.reimport(settings)
    assert started_task(api, response)["user"]["fullName"] == "Dev Patel"
    with pytest.raises(SandboxControlError):
        sandbox.add_batch(batch_status="Sideways")


# --- faults -------------------------------------------------------------------------------------


def test_a_503_fault_answers_once_then_the_endpoint_recovers(api, sandbox):
    """One-shot faults are consumed in order, one per request."""
    sandbox.fault("me", {"status": 503}, {"status": 500})
    first, second, third = (api.get("/api/v3/me") for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 500, 200)
    assert message_of(first)
    assert [e["status"] for e in sandbox.log("me")] == [503, 500, 200]


def test_a_429_fault_carries_retry_after(api, sandbox):
    """429 with Retry-After, as any HTTP service may answer."""
    sandbox.fault("task_list", {"status": 429, "retryAfter": 2})
    response = api.get("/api/v3/task", params=BILL_IMPORTS)
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"


def test_a_malformed_fault_answers_200_with_broken_json(api, sandbox):
    """A cut-off body with a 200 status."""
    sandbox.fault("task_get", {"malformed": True})
    response = api.get(f"/api/v3/task/{KICKOUT_TASK_GUID}")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_an_html_fault_answers_an_html_error_page(api, sandbox):
    """A proxy's HTML page instead of JSON, with a script a client must never render."""
    sandbox.fault("batch_list", {"html": True, "status": 502})
    response = api.get("/api/v3/batch")
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text and "<script>" in response.text


def test_an_echo_fault_repeats_the_request_headers_key_included(api, sandbox):
    """As some gateways do: the JSON message, or the HTML page, carries every header sent."""
    sandbox.fault("task_list", {"status": 401, "echo": True})
    sandbox.fault("me", {"html": True, "status": 502, "echo": True})
    response = api.get("/api/v3/task")
    assert response.status_code == 401
    assert f"ECI-ApiKey: {KEY}" in message_of(response)
    page = api.get("/api/v3/me")
    assert page.status_code == 502 and f"ECI-ApiKey: {KEY}" in page.text
    with pytest.raises(SandboxControlError, match="echo goes with"):
        sandbox.fault("me", {"echo": True, "drop": True})


def test_a_dropped_connection_gives_no_answer_and_is_logged_with_null_status(api, sandbox):
    """drop closes the connection before processing; the next request is served."""
    sandbox.fault("kickout_post", {"drop": True})
    with pytest.raises(requests.ConnectionError):
        api.reimport({"batchMode": "new self-contained batch"})
    [entry] = sandbox.log("kickout_post")
    assert entry["status"] is None and entry["body"]["batchSettings"]
    assert len(api.tasks()) == 78  # the re-import never happened
    assert api.get("/api/v3/me").status_code == 200


def test_a_hang_delays_the_answer_past_a_client_timeout(api, sandbox):
    """hang sleeps before answering; a short client timeout fires; later calls are fine."""
    sandbox.fault("me", {"hang": 0.6})
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        api.get("/api/v3/me", timeout=0.2)
    assert time.monotonic() - started < 0.5
    assert api.get("/api/v3/me").status_code == 200
    time.sleep(0.6)
    assert [e["status"] for e in sandbox.log("me")] == [200, 200]


def test_a_hang_after_apply_starts_the_reimport_though_the_client_timed_out(api, sandbox):
    """The server processed the POST, only the answer was late: the task exists."""
    sandbox.fault("kickout_post", {"hang": 0.6, "apply": True})
    with pytest.raises(requests.ReadTimeout):
        api.reimport({"batchMode": "new self-contained batch"}, timeout=0.2)
    tasks = api.tasks()
    assert len(tasks) == 79
    assert tasks[0]["settings"] == {"batchSettings": {"batchMode": "new self-contained batch"}}


def test_a_gateway_error_after_apply_starts_the_reimport_and_answers_502(api, sandbox):
    """The work is done, then a gateway's 502 page stands in for the answer."""
    sandbox.fault("kickout_post", {"status": 502, "html": True, "apply": True})
    response = api.reimport({"batchMode": "new self-contained batch"})
    assert response.status_code == 502 and "<html>" in response.text
    tasks = api.tasks()
    assert len(tasks) == 79
    assert tasks[0]["settings"] == {"batchSettings": {"batchMode": "new self-contained batch"}}
    assert sandbox.log("kickout_post")[-1]["status"] == 502


def test_a_drop_after_apply_starts_the_reimport_and_sends_no_answer(api, sandbox):
    """The work is done, then the connection closes: the client gets no answer at all."""
    sandbox.fault("kickout_post", {"drop": True, "apply": True})
    with pytest.raises(requests.ConnectionError):
        api.reimport({"batchMode": "new self-contained batch"})
    assert len(api.tasks()) == 79
    assert sandbox.log("kickout_post")[-1]["status"] is None


def test_apply_needs_something_that_spoils_the_answer(sandbox):
    """apply says when a fault spoils the answer: after the work. A bare 429 is a refusal."""
    with pytest.raises(SandboxControlError, match="A fault needs status"):
        sandbox.fault("kickout_post", {"apply": True})
    with pytest.raises(SandboxControlError, match="apply goes with hang, drop, status or html"):
        sandbox.fault("kickout_post", {"apply": True, "retryAfter": 5})


def test_latency_slows_every_request_until_faults_are_cleared(api, sandbox):
    """A persistent latency applies to each request of the endpoint until cleared."""
    sandbox.fault("me", latency=0.3)
    started = time.monotonic()
    api.get("/api/v3/me")
    api.get("/api/v3/me")
    assert time.monotonic() - started >= 0.6
    sandbox.clear_faults()
    started = time.monotonic()
    api.get("/api/v3/me")
    assert time.monotonic() - started < 0.25


def test_a_start_up_latency_delays_every_api_answer_and_survives_reset_and_clearing():
    """--latency is the sandbox's distance: every API answer waits, control routes do not."""
    with start_sandbox(port=0, latency=0.25) as proc:
        api, control = Api(proc.url), SandboxControl(proc.url)
        for restore in (control.reset, control.clear_faults):
            restore()
            started = time.monotonic()
            assert api.get("/api/v3/me").status_code == 200
            assert time.monotonic() - started >= 0.25
            started = time.monotonic()
            control.health()
            assert time.monotonic() - started < 0.25
        assert control.fault("*")["latency"] == 0.25


def test_wildcard_faults_hit_whichever_endpoint_comes_next(api, sandbox):
    """'*' faults apply to any API endpoint, in order."""
    sandbox.fault("*", {"status": 503})
    assert api.get("/api/v3/batch").status_code == 503
    assert api.get("/api/v3/me").status_code == 200


def test_faults_for_unknown_endpoints_or_kinds_are_refused(sandbox):
    """The control API checks what it is given."""
    with pytest.raises(SandboxControlError):
        sandbox.fault("tasks", {"status": 503})
    with pytest.raises(SandboxControlError):
        sandbox.fault("me", {"explode": True})


# --- the request log ------------------------------------------------------------------------


def test_the_request_log_records_api_calls_but_not_control_calls(api, sandbox):
    """Each API request is logged with its query, body, endpoint and answer; control is not."""
    api.get("/api/v3/task", params={**BILL_IMPORTS, "filter": "fullName like 'Tom'"})
    sandbox.add_batch(batch_code="NOT-LOGGED")
    api.reimport({"batchMode": "smart batch", "newBatchCode": "KO-LOG"}, importNote="n")
    entries = sandbox.log()
    assert [e["endpoint"] for e in entries] == ["task_list", "kickout_post"]
    listing, post = entries
    assert listing["query"] == {"taskTypeCode": "BillImport", "filter": "fullName like 'Tom'"}
    assert listing["method"] == "GET" and listing["status"] == 200 and listing["body"] is None
    assert post["body"]["importNote"] == "n" and post["path"].endswith("/kickout")
    assert post["hasKey"] is True
    page = sandbox.log_page(since=listing["seq"])
    assert [e["seq"] for e in page["entries"]] == [post["seq"]]
    assert page["next"] == post["seq"]
    assert sandbox.count("kickout_post", method="POST") == 1
    assert sandbox.count("kickout_post", method="GET") == 0


def test_reset_clears_the_log_faults_and_outcome_queue(api, sandbox):
    """After a reset nothing of the previous test is left."""
    api.get("/api/v3/me")
    sandbox.fault("me", {"status": 503})
    sandbox.configure(next_outcomes=["Failed"])
    sandbox.add_batch(batch_code="GONE")
    sandbox.reset()
    assert sandbox.log() == []
    assert api.get("/api/v3/me").status_code == 200
    assert api.batches(filter="batchCode equals 'GONE'") == []
    assert sandbox.configure()["nextOutcomes"] == []
    assert sandbox.health() == {"ok": True}


def test_the_api_users_own_kickout_task_has_a_single_message(api):
    """The second fixed kickout task: one message, three rows, in the API user's batch."""
    task = api.task(API_USER_KICKOUT_TASK_GUID)
    assert task["user"]["userId"] == 1 and task["batch"]["batchId"] == 901
    summary = ok(api.get(kickout_url(API_USER_KICKOUT_TASK_GUID, "summary")))
    assert summary["kickoutMessages"] == ["Vendor code does not match account"]
