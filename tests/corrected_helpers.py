"""Helpers for tests of the corrected-file import: files as a clerk makes them from the kickouts
EnergyCAP shows, and the form's steps posted as a browser posts them."""

from __future__ import annotations

import csv
import io
import re
import uuid
import zipfile
from html import unescape
from typing import Any

import openpyxl
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from kickouts.sandbox import imports
from kickouts.sandbox.control import SandboxControl
from kickouts.sandbox.state import KICKOUT_MESSAGES

ADVANCED = list(imports.KICKOUT_FILE_COLUMNS)
ACCOUNT_NOT_FOUND, METER_NOT_FOUND, BILL_OVERLAPS = KICKOUT_MESSAGES[:3]
SELF_CONTAINED = "new self-contained batch"


def form_url(*guids: str) -> str:
    return reverse("corrected_file_form") + "?" + "&".join(f"task={g}" for g in guids)


def kickout_rows(sandbox: SandboxControl, guid: str) -> list[dict[str, str]]:
    """The import's kickouts as the file a clerk downloads from EnergyCAP."""
    return list(csv.DictReader(io.StringIO(sandbox.kickout_file(guid))))


def fix_meters(rows: list[dict[str, str]], sandbox: SandboxControl) -> list[dict[str, str]]:
    """Carla gives each "meter not found" row one of its account's meters; the rest stay."""
    meters = {a["accountCode"]: a["meters"] for a in sandbox.accounts()}
    fixed = []
    for row in rows:
        row = dict(row)
        if row["Kickout Message"] == METER_NOT_FOUND:
            row["Meter Code"] = meters[row["Account Code"]][0]
        fixed.append(row)
    return fixed


def csv_bytes(rows: list[dict[str, str]], columns=None, delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=columns or ADVANCED, extrasaction="ignore", delimiter=delimiter
    )
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def xlsx_bytes(rows: list[dict[str, str]], columns=None) -> bytes:
    columns = columns or ADVANCED
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Bills"
    sheet.append(columns)
    for row in rows:
        sheet.append([row.get(column, "") for column in columns])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def fields(**values: Any) -> dict[str, str]:
    """Form values as a browser posts them: ticked boxes "on", unticked ones left out."""
    posted = {}
    for name, value in values.items():
        if value is True:
            posted[name] = "on"
        elif value is False or value is None:
            continue
        else:
            posted[name] = str(value)
    return posted


def review(client, guids, name: str | None, data: bytes | None, *, token=None, **values):
    """The form's Review with a file (or without one: the kept file); returns the response."""
    posted: dict[str, Any] = {
        "action": "review",
        "task": list(guids),
        "form_token": str(token or uuid.uuid4()),
        "batch_mode": SELF_CONTAINED,
        **fields(**values),
    }
    if name is not None:
        posted["file"] = SimpleUploadedFile(name, data, "text/csv")
    return client.post(reverse("corrected_file_form"), posted)


def send(client, guids, token, **values):
    """Send, as the review's form posts it (no file: the kept one is sent)."""
    posted = {
        "action": "send",
        "task": list(guids),
        "form_token": str(token),
        "batch_mode": SELF_CONTAINED,
        **fields(**values),
    }
    return client.post(reverse("corrected_file_form"), posted)


def review_and_send(client, guids, name: str, data: bytes, **values):
    """Review the file, then send it; the send's response."""
    token = uuid.uuid4()
    reviewed = review(client, guids, name, data, token=token, **values)
    assert reviewed.status_code == 200
    assert reviewed.context.get("confirming"), form_errors(reviewed)
    return send(client, guids, token, **values)


def form_errors(response) -> dict[str, list[str]]:
    form = response.context.get("form") if response.context else None
    if form is None:
        return {}
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


def press(client, response, button: str):
    """Post the review's own form as the browser would, pressing `button` ("send", "edit"):
    exactly the hidden fields the page holds."""
    html = response.content.decode()
    form = html[html.index('<pre class="payload">') :]
    form = form[form.index("<form") : form.index("</form>")]
    posted: dict[str, list[str]] = {"action": [button]}
    for tag in re.findall(r"<input[^>]*>", form):
        name = re.search(r'name="([^"]*)"', tag)
        if name is None:
            continue
        value = re.search(r'value="([^"]*)"', tag)
        posted.setdefault(name[1], []).append(unescape(value[1]) if value else "")
    return client.post(reverse("corrected_file_form"), posted)
