"""Bad corrected files over real HTTP: the dashboard's own server, a signed-in browser's
requests (session cookie, CSRF token, multipart body), and the sandbox behind it.

Each problem a file can have is said beside the choices the clerk made, which stay; nothing
reaches EnergyCAP. A body over the limit is answered before it is read whole.
"""

from __future__ import annotations

import io
import re
import socket
import time
import zipfile
from html import unescape
from urllib.parse import urlsplit

import pytest
import requests
from django.test import Client

from kickouts.corrected_file_models import CorrectedFile
from kickouts.sandbox.state import KICKOUT_TASK_GUID

from .conftest import PASSWORD
from .corrected_helpers import csv_bytes, fix_meters, form_url, kickout_rows

pytestmark = pytest.mark.django_db(transaction=True)

TASK = KICKOUT_TASK_GUID
NOTE = "Meters corrected by Carla"


class Browser:
    """Carla's browser: signed in through the real form, posting multipart like a page."""

    def __init__(self, base_url: str, user):
        self.base_url = base_url
        self.session = requests.Session()
        page = self.session.get(f"{base_url}/accounts/login/", timeout=10)
        response = self.session.post(
            f"{base_url}/accounts/login/",
            data={
                "username": user.get_username(),
                "password": PASSWORD,
                "csrfmiddlewaretoken": _csrf_field(page.text),
            },
            timeout=10,
        )
        assert response.status_code == 200 and "Bill imports" in response.text

    def open_form(self) -> tuple[str, str]:
        """The form page: its CSRF token and one-time form token."""
        page = self.session.get(self.base_url + form_url(TASK), timeout=10)
        assert page.status_code == 200
        token = re.search(r'name="form_token" value="([0-9a-f-]{36})"', page.text)[1]
        return _csrf_field(page.text), token

    def review(self, name: str, data: bytes, **extra: str) -> requests.Response:
        csrf, token = self.open_form()
        fields = [
            ("csrfmiddlewaretoken", csrf),
            ("action", "review"),
            ("form_token", token),
            ("task", TASK),
            ("batch_mode", "use pending batch"),
            ("pending_batch_id", "907"),
            ("import_note", NOTE),
            *extra.items(),
        ]
        return self.session.post(
            self.base_url + "/corrected-file/",
            data=fields,
            files=[("file", (name, data, "text/csv"))],
            timeout=30,
        )


def _csrf_field(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)[1]


@pytest.fixture
def browser(live_server, clerk) -> Browser:
    return Browser(live_server.url, clerk)


def file_errors(html: str) -> str:
    """The messages shown beside the file input."""
    start = html.index('id="id_file"') if 'id="id_file"' in html else len(html)
    block = html[html.rindex('<div class="field">', 0, start) : start]
    return unescape(re.sub(r"<[^>]+>", " ", block))


def assert_choices_kept(html: str) -> None:
    assert f"{NOTE}</textarea>" in html
    assert re.search(r'value="use pending batch"\s+checked', html)
    assert '<option value="907" selected>' in html


def a_zip_of(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


GOOD = (
    b"Account Code,Meter Code,Bill Start Date,Bill End Date,Total Cost\n"
    b"A-1,M-1,2026-01-01,2026-01-31,10\n"
)


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("bills.pdf", b"%PDF-1.7 a scanned bill", "is a .pdf file (it is a PDF document)"),
        (
            "bills.xls",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64,
            "saving an .xls workbook as .xlsx",
        ),
        ("bills.xlsx", GOOD, "bills.xlsx is not an Excel workbook (.xlsx)"),
        ("bills.zip", GOOD, "is not a ZIP archive"),
        ("bills.csv", a_zip_of({"a.csv": GOOD}), "is a ZIP archive or an .xlsx workbook"),
        ("bills.csv", b"", "bills.csv is empty"),
        (
            "bills.zip",
            a_zip_of({"a.csv": GOOD, "note.pdf": b"%PDF"}),
            "is not a CSV, TXT, DAT or XLSX",
        ),
        ("bills.zip", a_zip_of({"inner.zip": a_zip_of({"a.csv": GOOD})}), "a ZIP inside"),
        (
            "bills.csv",
            GOOD + "Zürich,M-2,2026-01-01,2026-01-31,5\n".encode("cp1252"),
            "Line 3 of bills.csv is not UTF-8",
        ),
        ("bills.csv", b"Account Code,Meter Code\n", "has a header but no bill rows"),
    ],
    ids=[
        "pdf",
        "old-xls",
        "xlsx-not-a-workbook",
        "zip-not-a-zip",
        "csv-that-is-a-zip",
        "empty",
        "zip-with-a-pdf",
        "zip-in-a-zip",
        "csv-not-utf8",
        "no-rows",
    ],
)
def test_each_file_problem_is_said_beside_the_kept_choices_and_nothing_is_sent(
    browser, sandbox, name, data, words
):
    """Wrong extension, content that does not match it, empty, ZIP contents, not UTF-8, no
    rows: a clear message on the file, the clerk's choices kept, no POST to EnergyCAP."""
    response = browser.review(name, data)
    assert response.status_code == 200
    assert words in file_errors(response.text), file_errors(response.text)
    assert_choices_kept(response.text)
    assert sandbox.count("import_post") == 0
    assert CorrectedFile.objects.count() == 0


def test_a_zip_that_unpacks_past_the_limit_is_refused_before_it_is_unpacked(
    browser, sandbox, settings
):
    """The expansion limit (a setting) is judged from the sizes the ZIP declares."""
    settings.CORRECTED_FILE_MAX_EXPANDED_BYTES = 1024 * 1024
    bomb = a_zip_of({"huge.csv": GOOD + b"A-2,M-2,2026-01-01,2026-01-31,1\n" * 40_000})
    assert len(bomb) < 100_000
    response = browser.review("bills.zip", bomb)
    assert "unpacks to 1.2 MB, more than the 1 MB the dashboard checks" in file_errors(
        response.text
    )
    assert_choices_kept(response.text)
    assert sandbox.count("import_post") == 0


def test_more_than_five_thousand_rows_asks_for_the_confirmation_over_http(browser, sandbox):
    """Not refused: the form asks to confirm (EnergyCAP's advice), the choices kept."""
    line = b"A-1,M-1,2026-01-01,2026-01-31,10\n"
    response = browser.review("month.csv", GOOD + line * 5000)
    page = unescape(response.text)
    assert "holds 5,001 rows; EnergyCAP advises at most 5,000 per import" in page
    assert 'name="confirm_rows"' in page
    assert_choices_kept(response.text)
    assert sandbox.count("import_post") == 0


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("C:\\Users\\carla\\Desktop\\fixed.csv", "fixed.csv"),
        ("../../etc/fixed.csv", "fixed.csv"),
        ("fixed\u202ecsv.exe.csv", "fixedcsv.exe.csv"),
        ("fix\x07ed\x1b.csv", "fixed.csv"),
    ],
    ids=["windows-path", "climbing-path", "right-to-left-override", "control-characters"],
)
def test_a_name_with_a_path_or_control_characters_is_sent_under_its_safe_base_name(
    browser, sandbox, sent, kept
):
    """Only the safe base name is kept, shown on the review, stored and sent as fileName."""
    data = csv_bytes(fix_meters(kickout_rows(sandbox, TASK), sandbox))
    response = browser.review(sent, data)
    assert "Check before sending" in response.text, file_errors(response.text)
    assert f"<strong>{kept}</strong>" in response.text
    stored = CorrectedFile.objects.get()
    assert stored.name == kept and "/" not in stored.file.name.removeprefix("corrected-files/")[8:]
    assert ".." not in stored.file.name


def test_a_body_over_the_limit_is_answered_before_it_is_read_whole(
    live_server, clerk, sandbox, settings
):
    """50 MB announced, 256 KB sent: the form comes back at once with the limit beside the
    file, and the choices made before the file are kept; nothing is stored or sent."""
    settings.CORRECTED_FILE_MAX_BYTES = 1024 * 1024
    browser = Browser(live_server.url, clerk)
    csrf, token = browser.open_form()
    host, port = urlsplit(live_server.url).hostname, urlsplit(live_server.url).port
    cookies = "; ".join(f"{c.name}={c.value}" for c in browser.session.cookies)
    boundary = "----corrected-file-boundary"

    def part(name: str, value: str) -> str:
        return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'

    head = (
        part("csrfmiddlewaretoken", csrf)
        + part("action", "review")
        + part("form_token", token)
        + part("task", TASK)
        + part("batch_mode", "use pending batch")
        + part("pending_batch_id", "907")
        + part("import_note", NOTE)
        + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    announced = len(head) + 50 * 1024 * 1024 + len(f"\r\n--{boundary}--\r\n")
    request = (
        "POST /corrected-file/ HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Cookie: {cookies}\r\n"
        f"Referer: {live_server.url}/corrected-file/\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {announced}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=20) as sock:
        started = time.monotonic()
        sock.sendall(request + head + b"x" * (256 * 1024))
        received = b""
        while b"</html>" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - started
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 200"), received[:300]
    html = rest.decode("utf-8", errors="replace")
    assert "The dashboard takes files of up to 1 MB. The upload is 50 MB" in unescape(html)
    assert_choices_kept(html)
    assert elapsed < 10
    assert CorrectedFile.objects.count() == 0
    assert sandbox.count("import_post") == 0


def test_a_forged_post_without_the_csrf_token_is_refused(clerk, sandbox):
    """The upload handler's view still checks CSRF."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(clerk)
    response = client.post(
        "/corrected-file/",
        {"action": "review", "task": TASK, "file": io.BytesIO(GOOD)},
    )
    assert response.status_code == 403
    assert sandbox.count("import_post") == 0
