"""Checking a corrected file before anything is sent: each problem says what to change.

Files are made here (workbooks with openpyxl, ZIPs with zipfile); the upload limit is shown
over Django's test client and over a real HTTP server that answers before the body is sent.
"""

from __future__ import annotations

import base64
import codecs
import csv
import hashlib
import http.client
import io
import json
import random
import socket
import time
import tracemalloc
import zipfile
from datetime import date
from urllib.parse import urlsplit

import openpyxl
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.http import JsonResponse
from django.middleware.csrf import get_token
from django.test import Client
from django.urls import path

from kickouts import uploads
from kickouts.uploads import ProblemKind

HEADER = ["Account Code", "Meter Code", "Vendor Code", "Bill Start Date", "Bill End Date"]
LIMITS = uploads.Limits(max_bytes=1024 * 1024, max_expanded_bytes=4 * 1024 * 1024)
TEN_MB = 10 * 1024 * 1024
HEADER_LINE = (",".join(HEADER) + "\r\n").encode()


def bill_rows(count: int, seed: int = 1) -> list[list[str]]:
    rng = random.Random(seed)
    return [
        [
            f"ACCT-{rng.randint(100000, 999999)}",
            f"MTR-{rng.randint(10000, 99999)}",
            "CONED",
            "2026-01-01",
            "2026-01-31",
        ]
        for _ in range(count)
    ]


def csv_bytes(rows: list[list[str]], header: list[str] = HEADER, delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def xlsx_bytes(*sheets: list[list[object]]) -> bytes:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for index, rows in enumerate(sheets):
        sheet = workbook.create_sheet(f"Sheet{index + 1}")
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def check(name: str, data: bytes, limits: uploads.Limits = LIMITS) -> uploads.CheckedFile:
    return uploads.check_file(SimpleUploadedFile(name, data, "text/csv"), limits)


def only_problem(checked: uploads.CheckedFile) -> uploads.Problem:
    assert len(checked.problems) == 1, checked.problems
    return checked.problems[0]


# --- files that pass ---------------------------------------------------------------------


def test_a_clean_csv_is_counted_hashed_and_previewed():
    """Carla's corrected CSV: its name, size, sha256, rows and first rows, and no problem."""
    data = csv_bytes(bill_rows(25))
    checked = check("November fixed.csv", data)
    assert checked.ok and not checked.renamed
    assert (checked.name, checked.kind, checked.size) == ("November fixed.csv", "csv", len(data))
    assert checked.sha256 == hashlib.sha256(data).hexdigest()
    (inner,) = checked.files
    assert (inner.rows, inner.header, inner.columns) == (25, tuple(HEADER), 5)
    assert len(inner.preview) == uploads.PREVIEW_ROWS
    assert inner.preview[0] == tuple(bill_rows(1)[0])


@pytest.mark.parametrize(("name", "delimiter"), [("bills.txt", "\t"), ("bills.dat", "|")])
def test_txt_and_dat_files_are_split_by_their_own_delimiter(name, delimiter):
    """Tabs and pipes are recognised from the header line."""
    checked = check(name, csv_bytes(bill_rows(3), delimiter=delimiter))
    assert checked.ok and checked.files[0].header == tuple(HEADER)
    assert checked.files[0].rows == 3


def test_a_byte_order_mark_blank_rows_and_quoted_line_breaks_are_read_as_excel_writes_them():
    """Excel's "CSV UTF-8" starts with a BOM; a quoted cell may span lines; blank rows skip."""
    data = codecs.BOM_UTF8 + b'Account Code,Note\r\nA-1,"two\r\nlines"\r\n,\r\n\r\nA-2,x\r\n'
    checked = check("excel.csv", data)
    assert checked.ok and checked.files[0].header == ("Account Code", "Note")
    assert checked.files[0].rows == 2 and checked.files[0].preview[0] == ("A-1", "two\r\nlines")


def test_a_workbook_is_read_from_its_first_sheet_only():
    """The first sheet's rows are counted and shown, dates as dates; the second is ignored."""
    first = [HEADER + ["Total Cost"]] + [
        ["ACCT-1", "MTR-1", "CONED", date(2026, 1, 1), date(2026, 1, 31), 120.5],
        ["ACCT-2", "", "CONED", date(2026, 2, 1), date(2026, 2, 28), 99],
    ]
    checked = check("bills.xlsx", xlsx_bytes(first, [["Other"], ["x"], ["y"], ["z"]]))
    assert checked.ok, checked.problems
    (inner,) = checked.files
    assert inner.kind == "xlsx" and inner.rows == 2
    assert inner.preview[0] == ("ACCT-1", "MTR-1", "CONED", "2026-01-01", "2026-01-31", "120.5")
    assert inner.preview[1][-1] == "99"


def test_a_zip_of_a_csv_and_a_workbook_counts_the_rows_of_each():
    """Each file inside the ZIP has its rows and preview; the total decides the confirmation."""
    data = zip_bytes(
        {
            "meters.csv": csv_bytes(bill_rows(4)),
            "accounts.xlsx": xlsx_bytes([HEADER, *bill_rows(3)]),
        }
    )
    checked = check("corrected.zip", data)
    assert checked.ok, checked.problems
    assert [(f.name, f.kind, f.rows) for f in checked.files] == [
        ("meters.csv", "csv", 4),
        ("accounts.xlsx", "xlsx", 3),
    ]
    assert checked.rows == 7 and not checked.needs_row_confirmation


def test_a_wide_file_is_previewed_in_its_first_sixty_columns_with_long_cells_cut():
    """The preview stays a readable table: 60 columns, 80 characters a cell."""
    header = [f"Column {i}" for i in range(90)]
    checked = check("wide.csv", csv_bytes([["x" * 300] * 90], header))
    (inner,) = checked.files
    assert inner.columns == 90 and len(inner.header) == 60
    assert len(inner.preview[0][0]) == 80 and inner.preview[0][0].endswith("…")


# --- 5,000 rows: a confirmation, not a refusal ----------------------------------------------


def test_more_than_five_thousand_rows_asks_for_a_confirmation_and_says_why():
    """5,001 rows pass the checks but need Carla's explicit confirmation."""
    checked = check("month.csv", csv_bytes(bill_rows(5001)))
    assert checked.ok and checked.needs_row_confirmation
    assert "5,001 rows" in checked.row_confirmation_message
    assert "at most 5,000" in checked.row_confirmation_message
    assert not check("month.csv", csv_bytes(bill_rows(5000))).needs_row_confirmation


def test_the_rows_of_every_file_in_a_zip_count_towards_the_advice():
    """Two files of 3,000 rows are one import of 6,000 rows."""
    data = zip_bytes({"a.csv": csv_bytes(bill_rows(3000)), "b.csv": csv_bytes(bill_rows(3000))})
    checked = check("two.zip", data, uploads.Limits(TEN_MB, TEN_MB))
    assert checked.ok and checked.rows == 6000 and checked.needs_row_confirmation


# --- the name ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("C:\\Users\\carla\\Desktop\\bills.csv", "bills.csv"),
        ("../../etc/bills.csv", "bills.csv"),
        ("bills\x00\x1b[31m.csv", "bills[31m.csv"),
        ("invoice\u202egpj.csv", "invoicegpj.csv"),
        ('what: "now"?.csv', "what_ _now__.csv"),
        ("  .hidden.csv. ", "hidden.csv"),
        ("Cafe\u0301  list\t2.csv", "Café list 2.csv"),
        ("../..", ""),
    ],
)
def test_only_a_safe_base_name_is_kept(sent, kept):
    """Paths, control and format characters and characters Windows refuses are dropped."""
    assert uploads.safe_name(sent) == kept


def test_a_long_name_is_shortened_keeping_its_extension():
    """At most 200 characters, still ending in .csv."""
    name = uploads.safe_name("b" * 300 + ".csv")
    assert len(name) == 200 and name.endswith("bbb.csv")


def test_a_name_with_a_path_and_control_characters_is_checked_under_its_safe_name():
    """The check says the file was renamed, and every message uses the safe name."""
    checked = check("..\\..\\Windows\\bi\x07lls.csv", csv_bytes(bill_rows(1)))
    assert checked.ok and checked.renamed
    assert (checked.name, checked.original_name) == ("bills.csv", "..\\..\\Windows\\bi\x07lls.csv")


# --- problems ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("bills.pdf", b"%PDF-1.7 ...", "is a .pdf file (it is a PDF document)"),
        ("bills.xls", uploads.OLE_MAGIC + b"\x00" * 100, "saving an .xls workbook as .xlsx"),
        ("bills", b"Account Code\nA\n", "has no extension"),
        ("bills.json", b"{}", "choose a .csv, .txt, .dat, .xlsx or .zip file"),
    ],
)
def test_an_extension_energycap_does_not_import_is_refused_naming_what_the_file_is(
    name, data, words
):
    """The message names the file's real nature when its bytes tell it."""
    problem = only_problem(check(name, data))
    assert problem.kind == ProblemKind.EXTENSION and words in problem.message


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("bills.xlsx", b"Account Code,Meter\n1,2\n", "is not an Excel workbook (.xlsx)"),
        ("bills.xlsx", zip_bytes({"a.csv": b"x"}), "is not an Excel workbook (.xlsx)"),
        ("bills.zip", b"Account Code\n1\n", "is not a ZIP archive"),
        ("bills.zip", b"PK\x03\x04 broken", "is not a ZIP archive"),
        ("bills.csv", xlsx_bytes([HEADER]), "rename it to .xlsx (or .zip) as it is"),
        ("bills.csv", "Account Code\n".encode("utf-16"), "UTF-16"),
        ("bills.txt", b"Account\x00Code\n1\n", "NUL bytes"),
    ],
)
def test_content_that_does_not_match_its_extension_is_refused(name, data, words):
    """The bytes decide, never the browser's content type (every upload here says text/csv)."""
    problem = only_problem(check(name, data))
    assert problem.kind == ProblemKind.CONTENT and words in problem.message


def test_an_empty_file_is_refused():
    """Zero bytes: nothing to import."""
    problem = only_problem(check("bills.csv", b""))
    assert problem.kind == ProblemKind.EMPTY and "is empty" in problem.message


def test_a_file_over_the_limit_is_refused_without_being_read_whole():
    """Reading stops at the limit: no hash, a message naming the limit."""
    data = csv_bytes(bill_rows(30_000))
    assert len(data) > LIMITS.max_bytes
    checked = check("big.csv", data)
    problem = only_problem(checked)
    assert problem.kind == ProblemKind.TOO_LARGE and "larger than 1 MB" in problem.message
    assert checked.sha256 == "" and checked.size <= LIMITS.max_bytes + uploads.CHUNK_BYTES


def test_a_zip_that_unpacks_past_the_limit_is_refused_before_it_is_unpacked():
    """A tiny ZIP of zeros declaring 64 MB: refused from its directory, in no time."""
    data = zip_bytes({"zeros.csv": b"0" * (64 * 1024 * 1024)})
    assert len(data) < 100_000
    started = time.monotonic()
    tracemalloc.start()
    problem = only_problem(check("bomb.zip", data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert problem.kind == ProblemKind.EXPANDS_TOO_MUCH
    assert "unpacks to 64 MB, more than the 4 MB" in problem.message
    assert time.monotonic() - started < 1 and peak < 1024 * 1024


def test_a_workbook_that_unpacks_past_the_limit_is_refused_too():
    """The same bound for the XML inside an .xlsx."""
    data = xlsx_bytes([HEADER, *bill_rows(2000)])
    problem = only_problem(check("bills.xlsx", data, uploads.Limits(TEN_MB, 20_000)))
    assert problem.kind == ProblemKind.EXPANDS_TOO_MUCH


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ({"inner.zip": zip_bytes({"a.csv": b"x"})}, "EnergyCAP does not open a ZIP in a ZIP"),
        ({"scan.pdf": b"%PDF"}, "is not a CSV, TXT, DAT or XLSX file: remove it"),
        ({"bills/a.csv": b"A\n1\n"}, "put the bill files at the top of the ZIP"),
        ({"../../evil.csv": b"A\n1\n"}, "unsafe path (../../evil.csv)"),
        ({"/etc/cron.d/x.csv": b"A\n1\n"}, "unsafe path"),
        ({"C:/x.csv": b"A\n1\n"}, "unsafe path"),
        ({"a\\..\\b.csv": b"A\n1\n"}, "unsafe path"),
        ({"bi\x1bll.csv": b"A\n1\n"}, "unsafe path (bill.csv)"),
        ({}, "holds no files"),
        ({"empty.csv": b""}, "empty.csv in the ZIP is empty"),
    ],
)
def test_a_zip_may_hold_only_data_files_at_its_top(members, words):
    """Nested ZIPs, other files, folders, path tricks and empty files are refused."""
    checked = check("corrected.zip", zip_bytes(members))
    assert not checked.ok and any(words in p.message for p in checked.problems), checked.problems


def test_the_folder_macos_finder_adds_is_one_problem_not_one_per_file():
    """__MACOSX and .DS_Store are named once, with how to make the ZIP without them."""
    data = zip_bytes(
        {
            "bills.csv": csv_bytes(bill_rows(2)),
            "__MACOSX/._bills.csv": b"\x00\x05",
            "__MACOSX/._other.csv": b"\x00\x05",
            ".DS_Store": b"\x00",
        }
    )
    problem = only_problem(check("mac.zip", data))
    assert problem.kind == ProblemKind.ZIP_CONTENTS and "macOS Finder" in problem.message


def test_a_password_protected_member_is_refused_before_it_is_read():
    """The ZIP's encryption flag is enough to say so."""
    data = bytearray(zip_bytes({"bills.csv": b"A\n1\n"}, zipfile.ZIP_STORED))
    # Set the "encrypted" bit in the local header and in the central directory.
    data[data.index(b"PK\x03\x04") + 6] |= 0x1
    data[data.index(b"PK\x01\x02") + 8] |= 0x1
    problem = only_problem(check("locked.zip", bytes(data)))
    assert "protected by a password" in problem.message


def test_a_csv_that_is_not_utf8_names_the_line_and_the_byte():
    """Saved as Windows-1252 by an old Excel: line 3 holds the é."""
    data = "Account Code,Vendor\nACCT-1,ConEd\nACCT-2,Café\nACCT-3,PSEG\n".encode("cp1252")
    problem = only_problem(check("bills.csv", data))
    assert problem.kind == ProblemKind.NOT_UTF8
    assert problem.message.startswith("Line 3 of bills.csv is not UTF-8 (byte 0xE9 at position")
    assert "save the file as 'CSV UTF-8'" in problem.message


def test_a_non_utf8_line_far_into_a_file_is_found_across_chunk_boundaries():
    """The line number is right even when the file is read in many chunks."""
    rows = bill_rows(4000)
    good = csv_bytes(rows)
    bad = good + "ACCT-9,MTR-9,Ærø,2026-01-01,2026-01-31\n".encode("latin-1")
    assert len(bad) > 2 * uploads.CHUNK_BYTES
    problem = only_problem(check("bills.csv", bad))
    assert "Line 4002 of bills.csv" in problem.message


def test_a_non_utf8_file_inside_a_zip_is_named():
    """The message names the file inside the ZIP and its line."""
    data = zip_bytes({"ok.csv": csv_bytes(bill_rows(2)), "old.csv": "A\nÅ\n".encode("latin-1")})
    problem = only_problem(check("both.zip", data))
    assert problem.inner_name == "old.csv" and "Line 2 of old.csv" in problem.message


def test_a_line_the_csv_module_cannot_read_is_named():
    """A field longer than the csv module reads (an unclosed quote swallowing the file)."""
    data = b'Account Code,Note\nA-1,"never closed\n' + b"x" * 200_000 + b"\n"
    problem = only_problem(check("bills.csv", data))
    assert problem.kind == ProblemKind.UNREADABLE and "check the quotes" in problem.message


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("bills.csv", csv_bytes([]), "bills.csv has a header but no bill rows"),
        ("bills.csv", b"\n,,\n \n", "bills.csv holds no rows at all"),
        ("bills.xlsx", xlsx_bytes([HEADER]), "and that the bills are on its first sheet"),
        ("bills.xlsx", xlsx_bytes([], [HEADER, ["A"]]), "EnergyCAP reads only the first sheet"),
    ],
)
def test_a_file_without_bill_rows_is_refused(name, data, words):
    """EnergyCAP would import nothing: the message says where to look."""
    problem = only_problem(check(name, data))
    assert problem.kind == ProblemKind.NO_ROWS and words in problem.message


def test_a_damaged_workbook_is_refused_with_how_to_repair_it():
    """A workbook package whose sheet XML is broken."""
    good = xlsx_bytes([HEADER, ["A"]])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 2]
            target.writestr(info, data)
    problem = only_problem(check("bills.xlsx", out.getvalue()))
    assert problem.kind == ProblemKind.UNREADABLE and "save it again" in problem.message


# --- memory ---------------------------------------------------------------------------------


def upload_on_disk(name: str, data: bytes) -> TemporaryUploadedFile:
    """As Django keeps an upload over 2.5 MB: in a temporary file."""
    upload = TemporaryUploadedFile(name, "application/octet-stream", len(data), None)
    upload.write(data)
    upload.seek(0)
    return upload


def peak_of(call) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def ten_mb_csv() -> bytes:
    data = csv_bytes(bill_rows(200_000))
    return data[: data.rindex(b"\n", 0, TEN_MB) + 1]


def ten_mb_workbook() -> bytes:
    """About 10 MB of workbook, most of it text that does not compress (like free-text notes)."""
    rng = random.Random(7)
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("Bills")
    sheet.append(HEADER + ["Note"])
    for row in bill_rows(8500):
        sheet.append(row + [base64.b64encode(rng.randbytes(1100)).decode()])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["csv", "zip", "xlsx"])
def test_checking_a_ten_megabyte_file_needs_a_bounded_amount_of_memory(kind):
    """Text and ZIPs are streamed (well under the file's size); a workbook needs about its
    shared strings (under twice the file's size); the base64 for the body under three times."""
    limits = uploads.Limits(11 * 1024 * 1024, 100 * 1024 * 1024)
    if kind == "xlsx":
        data, bound = ten_mb_workbook(), 2.0
    elif kind == "zip":
        text = ten_mb_csv()
        half = text.rindex(b"\n", 0, len(text) // 2) + 1
        members = {"a.csv": text[:half], "b.csv": HEADER_LINE + text[half:]}
        data, bound = zip_bytes(members, zipfile.ZIP_STORED), 0.5
    else:
        data, bound = ten_mb_csv(), 0.5
    assert 8 * 1024 * 1024 < len(data) <= limits.max_bytes, len(data)
    upload = upload_on_disk(f"big.{kind}", data)
    checked, peak = peak_of(lambda: uploads.check_file(upload, limits))
    assert checked.ok, checked.problems
    assert checked.rows > 7000
    assert peak < bound * len(data), f"{peak / len(data):.2f} times the file's size"
    encoded, peak = peak_of(lambda: uploads.base64_data(upload))
    assert encoded == base64.b64encode(data).decode("ascii")
    assert peak < 3 * len(data), f"{peak / len(data):.2f} times the file's size"


def test_base64_of_a_small_file_matches_the_standard_library():
    """Chunked encoding gives exactly the one-piece encoding, for any length."""
    for size in (1, 2, 3, 196_607, 196_608, 196_609):
        data = random.Random(size).randbytes(size)
        assert uploads.base64_data(ContentFile(data, name="x.csv")) == base64.b64encode(
            data
        ).decode("ascii")


# --- the upload limit, before the body is read ------------------------------------------------


@uploads.accepts_corrected_file
def receive_corrected_file(request):
    """A stand-in for the import view: what it would see of the request."""
    if request.method == "GET":
        return JsonResponse({"token": get_token(request)})
    refusal = uploads.upload_refusal(request)
    if refusal is not None:
        return JsonResponse(
            {
                "refused": refusal.message,
                "note": request.POST.get("note"),
                "files": list(request.FILES),
            },
            status=413,
        )
    checked = uploads.check_file(request.FILES["file"])
    return JsonResponse(
        {"name": checked.name, "rows": checked.rows, "note": request.POST.get("note")}
    )


urlpatterns = [path("corrected-file/", receive_corrected_file)]


@pytest.fixture
def csrf_client(settings) -> Client:
    settings.ROOT_URLCONF = __name__
    settings.CORRECTED_FILE_MAX_BYTES = 200_000
    return Client(enforce_csrf_checks=True)


def post_file(client: Client, data: bytes) -> tuple[int, dict]:
    token = client.get("/corrected-file/").json()["token"]
    response = client.post(
        "/corrected-file/",
        {
            "csrfmiddlewaretoken": token,
            "note": "Corrected file for 48211",
            "file": SimpleUploadedFile("bills.csv", data),
        },
    )
    return response.status_code, response.json()


def test_a_file_within_the_limit_reaches_the_view_with_csrf_checked(csrf_client):
    """The handler passes the file on; the view still needs the CSRF token."""
    status, body = post_file(csrf_client, csv_bytes(bill_rows(10)))
    assert (status, body["rows"], body["note"]) == (200, 10, "Corrected file for 48211")
    forged = csrf_client.post(
        "/corrected-file/", {"note": "x", "file": SimpleUploadedFile("a.csv", b"A")}
    )
    assert forged.status_code == 403


def test_a_body_announced_over_the_limit_is_refused_and_the_other_fields_are_kept(csrf_client):
    """Content-Length says 1 MB: the file is not read at all, the note and token are."""
    status, body = post_file(csrf_client, b"x" * 1_000_000)
    assert status == 413 and body["files"] == []
    assert body["note"] == "Corrected file for 48211"
    assert body["refused"].startswith("The dashboard takes files of up to 195 KB. The upload is")
    assert "split the file into smaller files" in body["refused"]


def test_a_file_slightly_over_the_limit_is_stopped_at_the_chunk_that_crosses_it(csrf_client):
    """Within the multipart allowance the body is read, until the file itself is too large."""
    status, body = post_file(csrf_client, b"x" * 210_000)
    assert status == 413 and body["files"] == []
    assert body["refused"].startswith("The dashboard takes files of up to 195 KB. The file is")


def test_a_real_server_answers_an_oversized_upload_before_the_body_is_sent(live_server, settings):
    """Over a real socket: 50 MB announced, 256 KB sent, and the refusal comes back at once."""
    settings.ROOT_URLCONF = __name__
    host, port = urlsplit(live_server.url).hostname, urlsplit(live_server.url).port
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", "/corrected-file/")
    answer = connection.getresponse()
    token = json.loads(answer.read())["token"]
    cookie = answer.getheader("Set-Cookie").split(";")[0]
    connection.close()

    boundary = "----corrected-file-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n'
        f"{token}\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nImport 48211\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    announced = len(head) + 50 * 1024 * 1024 + len(f"\r\n--{boundary}--\r\n")
    request = (
        "POST /corrected-file/ HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Cookie: {cookie}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {announced}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(request + head + b"x" * (256 * 1024))
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - started
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), received[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["note"] == "Import 48211" and body["files"] == []
    assert "The upload is 50 MB" in body["refused"]
    assert elapsed < 5
