"""The sandbox imports files (`POST /api/v3/import/bill`), spoken to over real HTTP.

A clerk downloads an import's kickouts, corrects some rows and imports the file again: the
corrected rows are imported, the others come back with the messages they had. No Django here:
one sandbox process for the module, reset before every test.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from datetime import date
from typing import Any

import openpyxl
import pytest
import requests

from kickouts.sandbox import imports
from kickouts.sandbox.control import SandboxControl
from kickouts.sandbox.process import SandboxProcess, start_sandbox
from kickouts.sandbox.state import (
    API_USER_KICKOUT_TASK_GUID,
    CLOSED_BATCH_CODE,
    KICKOUT_MESSAGES,
    KICKOUT_TASK_GUID,
    OTHER_USER_OPEN_BATCH_ID,
    PENDING_BATCH_CODE,
    PENDING_BATCH_ID,
)

KEY = "sandbox-key"
TIMEOUT = 10
SELF_CONTAINED = {"batchMode": "new self-contained batch"}
ADVANCED = list(imports.KICKOUT_FILE_COLUMNS)
(
    ACCOUNT_NOT_FOUND,
    METER_NOT_FOUND,
    BILL_OVERLAPS,
    VENDOR_MISMATCH,
    TOTAL_MISMATCH,
    END_BEFORE_START,
) = KICKOUT_MESSAGES[:6]


@pytest.fixture(scope="module")
def sandbox_proc() -> Iterator[SandboxProcess]:
    with start_sandbox(port=0, api_key=KEY, task_seconds=0) as proc:
        yield proc


@pytest.fixture(autouse=True)
def sandbox(sandbox_proc: SandboxProcess) -> SandboxControl:
    """Fresh seed data, no faults, an empty log; imports end at once unless a test says."""
    control = SandboxControl(sandbox_proc.url)
    control.reset(task_seconds=0)
    return control


class Api:
    """Speaks to the sandbox as the dashboard's client does, key and JSON included."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers.update({"ECI-ApiKey": KEY, "Content-Type": "application/json"})

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=TIMEOUT, **kwargs)

    def import_file(
        self,
        file_name: str,
        data: bytes,
        batch_settings: dict[str, Any] | None = None,
        **extra: Any,
    ) -> requests.Response:
        body = {
            "fileName": file_name,
            "data": base64.b64encode(data).decode("ascii"),
            "batchSettings": batch_settings or SELF_CONTAINED,
            **extra,
        }
        return self.post_import(body)

    def post_import(self, body: Any) -> requests.Response:
        data = body if isinstance(body, str) else json.dumps(body)
        return self.session.post(self.base_url + "/api/v3/import/bill", data=data, timeout=TIMEOUT)

    def reimport(self, batch_settings: dict[str, Any]) -> requests.Response:
        return self.session.post(
            f"{self.base_url}/api/v202401/import/bill/task/{KICKOUT_TASK_GUID}/kickout",
            json={"batchSettings": batch_settings},
            timeout=TIMEOUT,
        )

    def task(self, guid: str) -> dict[str, Any]:
        return ok(self.get(f"/api/v3/task/{guid}"))

    def imported(self, response: requests.Response) -> dict[str, Any]:
        """The task a successful import POST started."""
        return self.task(ok(response)["taskGUId"])

    def kickouts(self, guid: str) -> list[dict[str, str]]:
        """The task's kickout rows through the API's detail grid, keyed by column name."""
        grid = ok(self.get(f"/api/v202401/import/bill/task/{guid}/kickout/detail"))
        names = {f["id"]: f["name"] for f in grid["fields"]}
        return [{names[c["fieldId"]]: c["value"] for c in row} for row in grid["data"]]

    def batch(self, batch_id: int) -> dict[str, Any]:
        return ok(self.get(f"/api/v3/batch/{batch_id}"))


@pytest.fixture
def api(sandbox_proc: SandboxProcess) -> Api:
    return Api(sandbox_proc.url)


def ok(response: requests.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def message_of(response: requests.Response) -> str:
    return str(response.json()["message"])


def rows_of(csv_text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(csv_text)))


def csv_bytes(rows: list[dict[str, str]], columns: list[str] | None = None, **options) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or ADVANCED, extrasaction="ignore", **options)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def xlsx_bytes(rows: list[list[Any]], *, first_sheet: str = "Bills") -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = first_sheet
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def row_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (row["Account Code"], row["Meter Code"], row["Bill Start Date"], row["Bill End Date"])


def meters_of(sandbox: SandboxControl, account_code: str) -> list[str]:
    return next(a["meters"] for a in sandbox.accounts() if a["accountCode"] == account_code)


def correct(row: dict[str, str], sandbox: SandboxControl) -> dict[str, str]:
    """What a clerk changes in the file for each cause, from what EnergyCAP shows them."""
    accounts = {a["accountCode"]: a for a in sandbox.accounts()}
    fixed = dict(row)
    message = row["Kickout Message"]
    if message == ACCOUNT_NOT_FOUND:
        fixed["Account Code"] = row["Account Code"].replace("-", "")
    elif message == METER_NOT_FOUND:
        fixed["Meter Code"] = accounts[row["Account Code"]]["meters"][0]
    elif message == VENDOR_MISMATCH:
        fixed["Vendor Code"] = accounts[row["Account Code"]]["vendorCode"]
    elif message == TOTAL_MISMATCH:
        fixed["Line Item Total"] = row["Total Cost"]
    elif message == END_BEFORE_START:
        fixed["Bill Start Date"], fixed["Bill End Date"] = (
            row["Bill End Date"],
            row["Bill Start Date"],
        )
    return fixed


# --- the profile list ----------------------------------------------------------------------


def test_the_profile_list_names_each_profile_by_id_code_and_name(api):
    """GET /api/v3/import/bill/profile: a few profiles, each with an id, a code and a name."""
    profiles = ok(api.get("/api/v3/import/bill/profile"))
    assert [p["profileCode"] for p in profiles] == ["STD-BILL", "EDI-810", "PORTAL"]
    assert all(isinstance(p["importProfileId"], int) and p["name"] for p in profiles)


def test_the_profile_list_needs_the_key_and_the_view_permission(api, sandbox):
    """No key: 401. A key whose user lacks View: 401 naming the permission."""
    bare = requests.get(api.base_url + "/api/v3/import/bill/profile", timeout=TIMEOUT)
    assert bare.status_code == 401
    sandbox.set_me(view=False)
    refused = api.get("/api/v3/import/bill/profile")
    assert refused.status_code == 401 and "View permission" in message_of(refused)


# --- a corrected file --------------------------------------------------------------------


def test_an_uncorrected_kickout_file_comes_back_row_for_row_with_the_same_messages(api, sandbox):
    """Importing the downloaded kickouts unchanged: every row is kicked out again, as it was."""
    source = api.kickouts(KICKOUT_TASK_GUID)
    task = api.imported(
        api.import_file("again.csv", sandbox.kickout_file(KICKOUT_TASK_GUID).encode())
    )
    assert task["status"] == "Completed with kickouts"
    assert task["currentSuccessCount"] == 0
    again = api.kickouts(task["taskGUId"])
    assert sorted((row_key(r), r["Kickout Message"]) for r in again) == sorted(
        (row_key(r), r["Kickout Message"]) for r in source
    )
    summary = ok(api.get(f"/api/v202401/import/bill/task/{task['taskGUId']}/kickout/summary"))
    assert summary["fileName"] == "again.csv"
    assert set(summary["kickoutMessages"]) == {ACCOUNT_NOT_FOUND, METER_NOT_FOUND, BILL_OVERLAPS}


def test_every_seeded_import_with_kickouts_comes_back_identical_when_imported_unchanged(
    api, sandbox
):
    """The master data behind the seed explains every seeded kickout, whatever its message."""
    tasks = ok(api.get("/api/v3/task", params={"taskTypeCode": "BillImport", "pageSize": 1000}))
    with_kickouts = [t for t in tasks if t["status"] == "Completed with kickouts"]
    assert len(with_kickouts) == 16
    seen_messages = set()
    for source in with_kickouts:
        expected = sorted(
            (row_key(r), r["Kickout Message"]) for r in api.kickouts(source["taskGUId"])
        )
        file = sandbox.kickout_file(source["taskGUId"]).encode()
        task = api.imported(api.import_file("unchanged.csv", file))
        got = sorted((row_key(r), r["Kickout Message"]) for r in api.kickouts(task["taskGUId"]))
        assert got == expected, source["taskGUId"]
        seen_messages.update(message for _, message in expected)
    assert seen_messages == set(KICKOUT_MESSAGES)


def test_the_meter_rows_a_clerk_corrects_are_imported_and_the_rest_come_back(api, sandbox):
    """Carla gives the meter code of the four "meter not found" rows; only those go in."""
    rows = rows_of(sandbox.kickout_file(KICKOUT_TASK_GUID))
    fixed = [correct(r, sandbox) if r["Kickout Message"] == METER_NOT_FOUND else r for r in rows]
    response = api.import_file(
        "November_fixed.csv",
        csv_bytes(fixed),
        {"batchMode": "use pending batch", "pendingBatchId": PENDING_BATCH_ID},
        importNote="Corrected file for import 48211",
    )
    task = api.imported(response)
    assert task["status"] == "Completed with kickouts" and task["currentSuccessCount"] == 4
    assert task["taskNote"] == "Corrected file for import 48211"
    assert task["batch"]["batchId"] == PENDING_BATCH_ID
    left = api.kickouts(task["taskGUId"])
    assert len(left) == 8
    assert METER_NOT_FOUND not in {r["Kickout Message"] for r in left}
    source = {row_key(r): r["Kickout Message"] for r in api.kickouts(KICKOUT_TASK_GUID)}
    assert all(source[row_key(r)] == r["Kickout Message"] for r in left)


def test_a_file_correcting_every_cause_is_imported_except_the_overlapping_bills(api, sandbox):
    """One row of each cause corrected by its documented fix; overlaps need another fix."""
    made = sandbox.add_task(kickout_messages=list(KICKOUT_MESSAGES), rows_per_message=2)
    rows = rows_of(sandbox.kickout_file(made["taskGUId"]))
    task = api.imported(
        api.import_file("fixed.csv", csv_bytes([correct(r, sandbox) for r in rows]))
    )
    assert task["currentSuccessCount"] == 10
    left = api.kickouts(task["taskGUId"])
    assert [r["Kickout Message"] for r in left] == [BILL_OVERLAPS, BILL_OVERLAPS]


def test_an_alias_added_in_energycap_lets_the_unchanged_row_in(api, sandbox):
    """The documented fix for "account not found" in master data: an alias on the account."""
    rows = [
        r
        for r in rows_of(sandbox.kickout_file(KICKOUT_TASK_GUID))
        if r["Kickout Message"] == ACCOUNT_NOT_FOUND
    ]
    sandbox.add_account_alias(rows[0]["Account Code"].replace("-", ""), rows[0]["Account Code"])
    task = api.imported(api.import_file("aliases.csv", csv_bytes(rows)))
    assert task["currentSuccessCount"] == 1 and len(api.kickouts(task["taskGUId"])) == 4


def test_the_same_corrected_file_imported_twice_is_kicked_out_as_overlapping_the_first(
    api, sandbox
):
    """A bill never goes in twice: the second import finds the first one's bills."""
    rows = rows_of(sandbox.kickout_file(KICKOUT_TASK_GUID))
    fixed = csv_bytes([correct(r, sandbox) for r in rows if r["Kickout Message"] != BILL_OVERLAPS])
    first = api.imported(api.import_file("fixed.csv", fixed))
    second = api.imported(api.import_file("fixed.csv", fixed))
    assert (first["status"], first["currentSuccessCount"]) == ("Completed", 9)
    assert second["currentSuccessCount"] == 0
    assert {r["Kickout Message"] for r in api.kickouts(second["taskGUId"])} == {BILL_OVERLAPS}


def test_an_import_runs_for_the_task_seconds_and_its_bills_reach_the_batch_when_it_ends(
    api, sandbox
):
    """Processing with an empty endDate, then ended; the batch counts the imported bills."""
    sandbox.configure(task_seconds=0.6)
    rows = rows_of(sandbox.kickout_file(KICKOUT_TASK_GUID))
    fixed = csv_bytes([correct(r, sandbox) for r in rows])
    bills_before = api.batch(PENDING_BATCH_ID)["billCount"]
    settings = {"batchMode": "use pending batch", "pendingBatchId": PENDING_BATCH_ID}
    running = api.imported(api.import_file("fixed.csv", fixed, settings))
    assert running["status"] == "Processing" and running["endDate"] is None
    assert (
        api.get(f"/api/v202401/import/bill/task/{running['taskGUId']}/kickout/detail").json()[
            "data"
        ]
        == []
    )
    time.sleep(0.7)
    ended = api.task(running["taskGUId"])
    assert ended["status"] == "Completed with kickouts" and ended["currentSuccessCount"] == 9
    assert api.batch(PENDING_BATCH_ID)["billCount"] == bills_before + 9


# --- each kind of file --------------------------------------------------------------------


def fixed_meter_rows(sandbox: SandboxControl) -> list[dict[str, str]]:
    rows = rows_of(sandbox.kickout_file(KICKOUT_TASK_GUID))
    return [r for r in rows if r["Kickout Message"] in (METER_NOT_FOUND, ACCOUNT_NOT_FOUND)]


@pytest.mark.parametrize(
    ("file_name", "delimiter"), [("bills.csv", ","), ("bills.txt", "\t"), ("bills.dat", "|")]
)
def test_delimited_text_files_are_read_whatever_their_delimiter(api, sandbox, file_name, delimiter):
    """CSV, TXT (tabs) and DAT (pipes): the corrected meter rows go in, the others do not."""
    rows = [
        correct(r, sandbox) if r["Kickout Message"] == METER_NOT_FOUND else r
        for r in fixed_meter_rows(sandbox)
    ]
    task = api.imported(api.import_file(file_name, csv_bytes(rows, delimiter=delimiter)))
    assert task["currentSuccessCount"] == 4
    left = api.kickouts(task["taskGUId"])
    assert {r["Kickout Message"] for r in left} == {ACCOUNT_NOT_FOUND}
    assert {r["File Name"] for r in left} == {file_name}


def test_a_workbook_is_read_from_its_first_sheet_with_real_and_text_dates(api, sandbox):
    """XLSX: real Excel dates and ISO text dates both read; the second sheet is ignored."""
    rows = [correct(r, sandbox) for r in fixed_meter_rows(sandbox)]
    sheet = [ADVANCED] + [
        [
            r["Kickout Message"],
            r["Account Code"],
            r["Meter Code"],
            r["Vendor Code"],
            date.fromisoformat(r["Bill Start Date"]),
            date.fromisoformat(r["Bill End Date"]),
            float(r["Total Cost"]),
            float(r["Line Item Total"]),
        ]
        for r in rows
    ]
    workbook = openpyxl.load_workbook(io.BytesIO(xlsx_bytes(sheet)))
    workbook.create_sheet("Notes").append(["Not bills", "at all"])
    out = io.BytesIO()
    workbook.save(out)
    task = api.imported(api.import_file("bills.xlsx", out.getvalue()))
    assert (task["status"], task["currentSuccessCount"]) == ("Completed", 9)


def test_a_workbook_with_inline_strings_is_read_too(api, sandbox):
    """A minimal hand-made workbook whose cells are inline strings, as some tools write."""
    row = correct(fixed_meter_rows(sandbox)[-1], sandbox)

    def cells(number: int, values: list[str]) -> str:
        return "".join(
            f'<c r="{chr(65 + i)}{number}" t="inlineStr"><is><t>{v}</t></is></c>'
            for i, v in enumerate(values)
        )

    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        f'<row r="1">{cells(1, ADVANCED)}</row>'
        f'<row r="2">{cells(2, [row[c] for c in ADVANCED])}</row>'
        "</sheetData></worksheet>"
    )
    workbook = (
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        '<sheets><sheet name="Bills" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )
    rels = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="worksheet" Target="worksheets/sheet1.xml"/>'
        "</Relationships>"
    )
    data = zip_bytes(
        {
            "xl/workbook.xml": workbook.encode(),
            "xl/_rels/workbook.xml.rels": rels.encode(),
            "xl/worksheets/sheet1.xml": sheet.encode(),
        }
    )
    task = api.imported(api.import_file("inline.xlsx", data))
    assert (task["status"], task["currentSuccessCount"]) == ("Completed", 1)


def test_a_zip_of_a_csv_and_a_workbook_reports_kickouts_by_the_file_they_came_from(api, sandbox):
    """Each file in the ZIP is read; a kicked-out row names its own file."""
    rows = fixed_meter_rows(sandbox)
    meter_rows = [correct(r, sandbox) for r in rows if r["Kickout Message"] == METER_NOT_FOUND]
    account_rows = [r for r in rows if r["Kickout Message"] == ACCOUNT_NOT_FOUND]
    workbook = xlsx_bytes([ADVANCED] + [[r[c] for c in ADVANCED] for r in account_rows])
    data = zip_bytes({"meters.csv": csv_bytes(meter_rows), "accounts.xlsx": workbook})
    task = api.imported(api.import_file("corrected.zip", data))
    assert task["currentSuccessCount"] == 4
    left = api.kickouts(task["taskGUId"])
    assert {(r["File Name"], r["Kickout Message"]) for r in left} == {
        ("accounts.xlsx", ACCOUNT_NOT_FOUND)
    }
    assert sorted(r["Row Number"] for r in left) == [2, 3, 4, 5, 6]


def test_a_profile_maps_the_files_own_column_names(api, sandbox):
    """The same rows under STD-BILL's column names: read with the profile, not without it."""
    profile = next(p for p in imports.PROFILES if p.code == "STD-BILL")
    fields = dict(
        zip(
            ["Account Code", "Meter Code", "Vendor Code", "Bill Start Date", "Bill End Date"],
            ["account", "meter", "vendor", "start", "end"],
            strict=True,
        )
    )
    rows = [correct(r, sandbox) for r in fixed_meter_rows(sandbox)]
    renamed = [
        {profile.columns[fields[name]]: value for name, value in r.items() if name in fields}
        | {profile.columns["total"]: r["Total Cost"]}
        for r in rows
    ]
    data = csv_bytes(renamed, list(renamed[0]))
    with_profile = api.imported(api.import_file("std.csv", data, profileCode="std-bill"))
    assert (with_profile["status"], with_profile["currentSuccessCount"]) == ("Completed", 9)
    assert with_profile["settings"]["profileCode"] == "std-bill"
    without = api.imported(api.import_file("std.csv", data))
    assert without["status"] == "Failed" and without["currentSuccessCount"] == 0
    assert "Import profile 'Advanced' does not match the columns" in without["message"]
    assert "Account Code" in without["message"]


def test_dates_in_a_second_format_are_kicked_out_as_mixed(api, sandbox):
    """The file's first date format rules; a row in another one, or in none, is kicked out."""
    rows = [correct(r, sandbox) for r in fixed_meter_rows(sandbox)]
    us = date.fromisoformat(rows[1]["Bill Start Date"])
    rows[1]["Bill Start Date"] = f"{us.month}/{us.day}/{us.year}"
    rows[2]["Bill End Date"] = "the 3rd of December"
    task = api.imported(api.import_file("mixed.csv", csv_bytes(rows)))
    left = {r["Row Number"]: r["Kickout Message"] for r in api.kickouts(task["taskGUId"])}
    assert left == {3: imports.MIXED_DATE_FORMATS, 4: imports.UNKNOWN_DATE_FORMAT}
    assert task["currentSuccessCount"] == 7


# --- files the import cannot read: the task fails -----------------------------------------


@pytest.mark.parametrize(
    ("file_name", "data", "words"),
    [
        ("bills.xlsx", b"Account Code,Total\n1,2\n", "'bills.xlsx' is not a workbook"),
        ("bills.zip", b"PK\x03\x04 but not really", "not a ZIP file"),
        ("bills.csv", "Account Code\nCaf\xe9\n".encode("latin-1"), "line 2 of 'bills.csv'"),
        ("bills.csv", (",".join(ADVANCED) + "\n").encode(), "holds no bill rows"),
        ("bills.zip", zip_bytes({"inner.zip": b"x"}), "'inner.zip' in the ZIP is not a CSV"),
    ],
    ids=["csv-as-xlsx", "not-a-zip", "latin-1", "header-only", "nested-zip"],
)
def test_a_file_the_import_cannot_read_ends_failed_saying_why(api, file_name, data, words):
    """Unreadable content fails the task with a message; nothing is imported."""
    task = api.imported(api.import_file(file_name, data))
    assert task["status"] == "Failed" and words in task["message"]
    assert task["currentSuccessCount"] == 0


def test_a_queued_failure_fails_the_next_file_import_and_imports_nothing(api, sandbox):
    """The outcome queue's "Failed" applies to file imports; the rows stay out of EnergyCAP."""
    fixed = csv_bytes([correct(r, sandbox) for r in fixed_meter_rows(sandbox)])
    sandbox.configure(next_outcomes=["Failed"])
    failed = api.imported(api.import_file("fixed.csv", fixed))
    assert failed["status"] == "Failed" and failed["message"]
    after = api.imported(api.import_file("fixed.csv", fixed))
    assert (after["status"], after["currentSuccessCount"]) == ("Completed", 9)


# --- refusals before anything starts ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"fileName": "a.csv", "data": "!!!notbase64", "batchSettings": SELF_CONTAINED}, "base64"),
        ({"fileName": "a.csv", "data": "", "batchSettings": SELF_CONTAINED}, "empty"),
        ({"fileName": "a.csv", "batchSettings": SELF_CONTAINED}, "data is required"),
        ({"fileName": "a.csv", "data": 12, "batchSettings": SELF_CONTAINED}, "must be a string"),
        ({"fileName": "a.pdf", "data": "YQ==", "batchSettings": SELF_CONTAINED}, ".xlsx, .zip"),
        ({"fileName": "noextension", "data": "YQ==", "batchSettings": SELF_CONTAINED}, "end in"),
        ({"data": "YQ==", "batchSettings": SELF_CONTAINED}, "fileName is required"),
        ({"fileName": "a.csv", "data": "YQ=="}, "batchSettings is required"),
        (
            {
                "fileName": "a.csv",
                "data": "YQ==",
                "batchSettings": SELF_CONTAINED,
                "profileCode": "X",
            },
            "Import profile 'X' was not found",
        ),
        ("{not json", "not valid JSON"),
    ],
)
def test_malformed_import_bodies_are_refused_with_400_and_start_nothing(api, body, words):
    """Bad base64, no data, a wrong extension, no batch settings, an unknown profile: 400."""
    tasks_before = len(ok(api.get("/api/v3/task", params={"pageSize": 1000})))
    response = api.post_import(body)
    assert response.status_code == 400 and words in message_of(response)
    assert len(ok(api.get("/api/v3/task", params={"pageSize": 1000}))) == tasks_before


def test_base64_split_over_lines_is_read_as_dotnet_reads_it(api, sandbox):
    """White space inside the base64 (a wrapped encoder's output) is skipped, not refused."""
    data = csv_bytes([correct(r, sandbox) for r in fixed_meter_rows(sandbox)])
    wrapped = base64.encodebytes(data).decode("ascii")
    assert "\n" in wrapped
    body = {"fileName": "w.csv", "data": wrapped, "batchSettings": SELF_CONTAINED}
    assert api.imported(api.post_import(body))["currentSuccessCount"] == 9


def test_an_import_without_json_content_type_or_create_permission_is_refused(api, sandbox):
    """415 without application/json; 401 naming the Create permission without it."""
    body = {"fileName": "a.csv", "data": "YQ==", "batchSettings": SELF_CONTAINED}
    plain = requests.post(
        api.base_url + "/api/v3/import/bill",
        data=json.dumps(body),
        headers={"ECI-ApiKey": KEY, "Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )
    assert plain.status_code == 415
    sandbox.set_me(create=False)
    refused = api.post_import(body)
    assert refused.status_code == 401 and "Create permission" in message_of(refused)


# --- the batch rules are the re-import's -----------------------------------------------------


BATCH_CASES = [
    {"batchMode": "use existing batch"},
    {"batchMode": "use existing batch", "existingOpenBatchId": 902},
    {"batchMode": "use existing batch", "existingOpenBatchId": OTHER_USER_OPEN_BATCH_ID},
    {"batchMode": "use existing batch", "existingOpenBatchId": 909},
    {"batchMode": "use existing batch", "existingOpenBatchId": 4242},
    {"batchMode": "new batch"},
    {"batchMode": "new batch", "leaveExistingBatchesOpen": True, "newBatchCode": "FIX-1"},
    {"batchMode": "new batch", "leaveExistingBatchesOpen": True, "newBatchCode": "ELEC-NOV"},
    {"batchMode": "new batch", "newBatchCode": "X" * 256},
    {"batchMode": "new self-contained batch", "newBatchCode": "FIX-2"},
    {"batchMode": "use pending batch"},
    {"batchMode": "use pending batch", "pendingBatchId": 901},
    {"batchMode": "use pending batch", "pendingBatchId": PENDING_BATCH_ID},
    {"batchMode": "use pending batch", "pendingBatchId": "907"},
    {"batchMode": "smart batch"},
    {"batchMode": "smart batch", "newBatchCode": CLOSED_BATCH_CODE},
    {"batchMode": "smart batch", "newBatchCode": "GAS-NOV"},
    {"batchMode": "smart batch", "newBatchCode": PENDING_BATCH_CODE},
    {"batchMode": "smart batch", "newBatchCode": "FIX-3"},
    {"batchMode": "Smart Batch"},
]


def outcome_of(api: Api, response: requests.Response) -> tuple[int, str]:
    """What a POST did to the batches: the refusal's message, or where the bills went."""
    if response.status_code != 200:
        return response.status_code, message_of(response)
    batch = api.task(response.json()["taskGUId"])["batch"]
    code = batch["batchCode"]
    if code.startswith(CLOSED_BATCH_CODE + "-"):
        uuid.UUID(code[len(CLOSED_BATCH_CODE) + 1 :])
        code = CLOSED_BATCH_CODE + "-<guid>"
    return 200, f"{code}, {api.batch(batch['batchId'])['batchStatus']}"


@pytest.mark.parametrize("settings", BATCH_CASES, ids=lambda s: json.dumps(s)[:60])
def test_a_file_import_follows_the_same_batch_rules_as_the_re_import(api, sandbox, settings):
    """Each batch setting gives the file import exactly the re-import's refusal or batch."""
    reimported = outcome_of(api, api.reimport(settings))
    sandbox.reset(task_seconds=0)
    data = csv_bytes([correct(r, sandbox) for r in fixed_meter_rows(sandbox)])
    imported = outcome_of(api, api.import_file("fixed.csv", data, settings))
    assert imported == reimported


def test_a_self_contained_batch_closes_when_the_file_import_ends(api, sandbox):
    """Open while the import runs, closed once it ends, with the imported bills counted."""
    sandbox.configure(task_seconds=0.5)
    data = csv_bytes([correct(r, sandbox) for r in fixed_meter_rows(sandbox)])
    task = api.imported(
        api.import_file("fixed.csv", data, {"batchMode": "new self-contained batch"})
    )
    assert api.batch(task["batch"]["batchId"])["isOpen"] is True
    time.sleep(0.6)
    closed = api.batch(task["batch"]["batchId"])
    assert closed["batchStatus"] == "Closed" and closed["billCount"] == 9


# --- faults and the request log -----------------------------------------------------------


def test_faults_inject_on_the_import_as_on_the_re_import(api, sandbox):
    """A 503 answers once and starts nothing; a hang after apply starts the import anyway."""
    data = csv_bytes([correct(r, sandbox) for r in fixed_meter_rows(sandbox)])
    sandbox.fault("import_post", {"status": 503}, {"hang": 1.5, "apply": True})
    refused = api.import_file("fixed.csv", data)
    assert refused.status_code == 503 and "sandbox fault" in message_of(refused)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.session.post(
            api.base_url + "/api/v3/import/bill",
            data=json.dumps(
                {
                    "fileName": "fixed.csv",
                    "data": base64.b64encode(data).decode(),
                    "batchSettings": SELF_CONTAINED,
                }
            ),
            timeout=(3, 0.5),
        )
    time.sleep(1.2)
    started = [
        t
        for t in ok(api.get("/api/v3/task", params={"taskTypeCode": "BillImport"}))
        if t["settings"].get("fileName") == "fixed.csv"
    ]
    assert len(started) == 1 and started[0]["currentSuccessCount"] == 9


def test_a_dropped_import_answers_nothing_and_the_profiles_fault_separately(api, sandbox):
    """drop: the connection closes with no answer; a fault on profiles leaves imports alone."""
    sandbox.fault("import_profiles", {"status": 500})
    assert api.get("/api/v3/import/bill/profile").status_code == 500
    assert api.get("/api/v3/import/bill/profile").status_code == 200
    sandbox.fault("import_post", {"drop": True})
    with pytest.raises(requests.exceptions.ConnectionError):
        api.import_file("a.csv", b"Account Code\n1\n")
    assert sandbox.log("import_post")[-1]["status"] is None


def test_the_request_log_keeps_the_files_size_not_its_base64(api, sandbox):
    """The log names the endpoint and keeps every field but the data, which becomes its size."""
    data = b"x" * 30_000
    api.import_file("big.csv", data, importNote="n")
    entry = sandbox.log("import_post")[-1]
    encoded = base64.b64encode(data).decode()
    assert entry["body"]["data"] == f"<base64 of {len(encoded)} characters>"
    assert entry["body"]["fileName"] == "big.csv" and entry["body"]["importNote"] == "n"
    assert entry["bodyBytes"] > len(encoded)
    assert encoded[:100] not in json.dumps(sandbox.log())


def test_the_kickout_file_of_an_unknown_task_is_404(sandbox):
    """The control route says which task it could not find."""
    with pytest.raises(Exception, match="404"):
        sandbox.kickout_file(str(uuid.uuid4()))


def test_the_api_users_own_kickout_task_exports_its_vendor_rows(sandbox):
    """The downloaded file starts with the message, then the Advanced format's columns."""
    text = sandbox.kickout_file(API_USER_KICKOUT_TASK_GUID)
    header, *lines = text.splitlines()
    assert header.split(",") == ADVANCED
    assert len(lines) == 3 and all(line.startswith(VENDOR_MISMATCH) for line in lines)
