"""File imports in the sandbox: ``POST /api/v3/import/bill``, its profiles and master data.

A file import decodes the file (CSV, TXT, DAT, XLSX, or a ZIP of them), maps its columns by
an import profile or by the Advanced format's column names (those of the kickout grids:
``Account Code``, ``Meter Code``, ``Vendor Code``, ``Bill Start Date``, ``Bill End Date``,
``Total Cost``, and the optional ``Line Item Total``), and checks each row against the
sandbox's master data: vendors, accounts with their aliases and meters, and the bills already
in EnergyCAP. A row that passes is imported (and becomes an existing bill: the same row
imported again overlaps it); a row that does not is kicked out with the message the seed's
imports use for that cause, so a corrected row is imported and an uncorrected one comes back.

The master data is derived from the kickouts of the imports the sandbox knows (seeded, added
by control, re-imported), so that each of those rows, imported again unchanged, is kicked out
with its own message (a row's first failing check decides, in this order):

==================================  ===========================================================
message                             master data behind it, and the correction that imports it
==================================  ===========================================================
Bill end date is before start date  the row's own dates (the seed writes them so): swap them
Account not found                   no account has the code; the real account's code is the
                                    code without dashes (``ACCT-123456`` -> ``ACCT123456``,
                                    else with a leading zero): give it, or add an alias
Vendor code does not match account  the account belongs to another vendor: give that vendor
Meter not found for account         the account has two other meters: give one of them
Total cost does not equal line ...  the file's ``Line Item Total`` differs: correct either
Bill overlaps an existing bill      a bill of the account and meter exists for those dates
==================================  ===========================================================

Where two known rows disagree about one account (a contrived collision of random codes), the
first row learned wins. Rows whose message the sandbox does not know are learned nothing from.
Files bring two causes of their own: dates in more than one format within one file, and a date
in no known format (both match the "dates in mixed formats" cause).

How an import ends, the sandbox's choices where EnergyCAP does not say:

- ``Completed`` when every row was imported; ``Completed with kickouts`` when any row was
  kicked out, even when none was imported (the import itself worked and its kickouts can be
  read, corrected and imported again, which a ``Failed`` import's cannot);
- ``Failed`` with a message, nothing imported, when the file cannot be read, holds no bill
  rows, or lacks the columns of its profile; and when the outcome queue's next entry is
  ``Failed`` (other queued outcomes are left for re-imports: a file's rows decide its end);
- the rows are checked when the import starts and take effect then (a second import of the
  same file, started while the first runs, finds the first one's bills).

Synchronous refusals (400 with a ``message``, as the re-import refuses): a body that is not a
``BillImportRequest`` (the re-import's ``batchSettings`` rules, with the same messages), a
``fileName`` without one of the extensions csv, dat, txt, xlsx, zip, ``data`` missing, empty
or not base64, an unknown ``profileCode`` (a guess: EnergyCAP documents no answer for it).
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import posixpath
import re
import weakref
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

from . import batch_modes
from .state import (
    BILL_IMPORT,
    COMPLETED,
    COMPLETED_WITH_KICKOUTS,
    FAILED,
    KICKOUT_MESSAGES,
    TASK_TYPES,
    VENDORS,
    Batch,
    KickoutRow,
    SandboxState,
    Task,
    TaskOutcome,
)

(
    ACCOUNT_NOT_FOUND,
    METER_NOT_FOUND,
    BILL_OVERLAPS,
    VENDOR_MISMATCH,
    TOTAL_MISMATCH,
    END_BEFORE_START,
) = KICKOUT_MESSAGES[:6]
MIXED_DATE_FORMATS = "Dates in mixed formats within the file"
UNKNOWN_DATE_FORMAT = "Bill date is not in a known date format"
TOTAL_NOT_A_NUMBER = "Total cost is not a number"

IMPORT_EXTENSIONS = ("csv", "dat", "txt", "xlsx", "zip")
DATA_EXTENSIONS = ("csv", "dat", "txt", "xlsx")
MAX_ALIASES = 5  # EnergyCAP: up to five aliases per account and per vendor
ADVANCED = "Advanced"

# The fields a file's columns map to; the first four are required.
REQUIRED_FIELDS = ("account", "start", "end", "total")
OPTIONAL_FIELDS = ("meter", "vendor", "line_total")


@dataclass(frozen=True)
class Profile:
    profile_id: int
    code: str
    name: str
    columns: dict[str, str]  # field -> the column's name in the file

    def json(self) -> dict[str, Any]:
        return {"importProfileId": self.profile_id, "profileCode": self.code, "name": self.name}


ADVANCED_FORMAT = Profile(
    0,
    "",
    ADVANCED,
    {
        "account": "Account Code",
        "meter": "Meter Code",
        "vendor": "Vendor Code",
        "start": "Bill Start Date",
        "end": "Bill End Date",
        "total": "Total Cost",
        "line_total": "Line Item Total",
    },
)
PROFILES = (
    Profile(
        11,
        "STD-BILL",
        "Standard Bill Import",
        {
            "account": "Account Number",
            "meter": "Meter Number",
            "vendor": "Vendor",
            "start": "Service Start",
            "end": "Service End",
            "total": "Amount Due",
            "line_total": "Charges Total",
        },
    ),
    Profile(
        12,
        "EDI-810",
        "EDI 810 feed",
        {
            "account": "ACCT_NO",
            "meter": "METER_NO",
            "vendor": "VENDOR_ID",
            "start": "FROM_DT",
            "end": "TO_DT",
            "total": "TOTAL_AMT",
        },
    ),
    Profile(
        13,
        "PORTAL",
        "Utility portal download",
        {
            "account": "Account",
            "meter": "Meter",
            "start": "Period Start",
            "end": "Period End",
            "total": "Total",
        },
    ),
)
# The kickout file a clerk downloads and corrects: the message first, as EnergyCAP's
# spreadsheet has it, then the Advanced format's columns.
KICKOUT_FILE_COLUMNS = (
    "Kickout Message",
    "Account Code",
    "Meter Code",
    "Vendor Code",
    "Bill Start Date",
    "Bill End Date",
    "Total Cost",
    "Line Item Total",
)


class ImportRequestError(ValueError):
    """The import cannot be started as asked; the API answers 400 with this message."""


class ImportFailed(Exception):
    """The import started but fails as a whole; its task ends ``Failed`` with this message."""


@dataclass(frozen=True)
class FileImportRequest:
    file_name: str
    data: bytes
    profile: Profile
    kickout_request: batch_modes.KickoutImportRequest
    settings: dict[str, Any]  # what the task shows: the body without its data


def profile_list() -> list[dict[str, Any]]:
    return [profile.json() for profile in PROFILES]


def parse_import_request(body: Any) -> FileImportRequest:
    """Check a ``BillImportRequest`` as the API does before anything starts."""
    try:
        kickout_request = batch_modes.parse_kickout_request(body)
    except batch_modes.KickoutRequestError as error:
        raise ImportRequestError(str(error)) from None
    file_name = body.get("fileName")
    if not isinstance(file_name, str) or not file_name.strip():
        raise ImportRequestError("fileName is required.")
    extension = file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
    if extension not in IMPORT_EXTENSIONS:
        allowed = ", ".join(f".{e}" for e in IMPORT_EXTENSIONS)
        raise ImportRequestError(f"fileName '{file_name}' must end in one of {allowed}.")
    raw = body.get("data")
    if raw is None:
        raise ImportRequestError("data is required: the file's bytes in base64.")
    if not isinstance(raw, str):
        raise ImportRequestError("data must be a string: the file's bytes in base64.")
    try:
        # .NET's Convert.FromBase64String skips white space; nothing else is let through.
        data = base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImportRequestError("data is not valid base64.") from None
    if not data:
        raise ImportRequestError("data is empty: the file has no bytes.")
    code = body.get("profileCode")
    if code is not None and not isinstance(code, str):
        raise ImportRequestError("profileCode must be a string.")
    profile = ADVANCED_FORMAT
    if code and code.strip():
        named = next((p for p in PROFILES if p.code.lower() == code.strip().lower()), None)
        if named is None:
            raise ImportRequestError(f"Import profile '{code}' was not found.")
        profile = named
    settings = {key: value for key, value in body.items() if key != "data"}
    settings["dataBytes"] = len(data)
    return FileImportRequest(file_name.strip(), data, profile, kickout_request, settings)


def log_body(body: Any) -> Any:
    """The body as the request log keeps it: the file's base64 replaced by its size."""
    if isinstance(body, dict) and isinstance(body.get("data"), str):
        return {**body, "data": f"<base64 of {len(body['data'])} characters>"}
    return body


# --- master data ---------------------------------------------------------------------------


@dataclass
class Vendor:
    code: str
    name: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class Account:
    code: str
    vendor_code: str
    meters: list[str]
    aliases: list[str] = field(default_factory=list)
    # Learned from a "meter not found" row: no later row adds a meter that would resolve it.
    meters_fixed: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "accountCode": self.code,
            "vendorCode": self.vendor_code,
            "meters": list(self.meters),
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True)
class Bill:
    account_code: str
    meter_code: str
    start: date
    end: date


class MasterData:
    """Vendors, accounts (with aliases and meters) and existing bills, learned from kickouts."""

    def __init__(self) -> None:
        self.vendors: dict[str, Vendor] = {}
        for code, name in VENDORS:
            self.vendors[code.lower()] = Vendor(code, name)
        self.accounts: dict[str, Account] = {}
        self.bills: list[Bill] = []
        self.learned: set[str] = set()
        # Tasks made by file imports: their rows come from files, not from master data.
        self.file_imports: set[str] = set()

    # -- lookups --

    def vendor(self, code: str) -> Vendor | None:
        key = code.strip().lower()
        found = self.vendors.get(key)
        if found is not None:
            return found
        return next(
            (v for v in self.vendors.values() if key in (a.lower() for a in v.aliases)), None
        )

    def account(self, code: str) -> Account | None:
        key = code.strip().lower()
        if not key:
            return None
        found = self.accounts.get(key)
        if found is not None:
            return found
        return next(
            (a for a in self.accounts.values() if key in (x.lower() for x in a.aliases)), None
        )

    def overlaps(self, bill: Bill, more: Iterable[Bill] = ()) -> bool:
        return any(
            other.account_code == bill.account_code
            and other.meter_code.lower() == bill.meter_code.lower()
            and other.start <= bill.end
            and bill.start <= other.end
            for other in (*self.bills, *more)
        )

    def add_alias(self, account_code: str, alias: str) -> Account:
        account = self.accounts.get(account_code.strip().lower())
        if account is None:
            raise LookupError(f"no account with code {account_code!r}")
        alias = alias.strip()
        if not alias:
            raise ValueError("an alias must not be blank")
        if alias.lower() in (a.lower() for a in account.aliases):
            return account
        other = self.account(alias)
        if other is not None:
            raise ValueError(f"{alias!r} already finds account {other.code}")
        if len(account.aliases) >= MAX_ALIASES:
            raise ValueError(f"account {account.code} already has {MAX_ALIASES} aliases")
        account.aliases.append(alias)
        return account

    # -- learning from the kickouts the sandbox knows --

    def learn(self, state: SandboxState) -> None:
        for task in sorted(state.tasks.values(), key=lambda t: t.task_id):
            guid = task.task_guid
            if guid in self.learned or guid in self.file_imports or not task.is_bill_import:
                continue
            self.learned.add(guid)
            for row in task.outcome.kickouts:
                self._learn(row)

    def _learn(self, row: KickoutRow) -> None:
        code = row.account_code.strip()
        if not code or not isinstance(row.bill_start, date) or not isinstance(row.bill_end, date):
            return
        message = row.message
        if message == ACCOUNT_NOT_FOUND:
            if self.account(code) is None:
                self._ensure(real_account_code(code), row.vendor_code, row.meter_code)
        elif message == METER_NOT_FOUND:
            account = self._ensure(code, row.vendor_code, None)
            if not account.meters:
                account.meters.extend(other_meters(code, row.meter_code))
            account.meters_fixed = True
        elif message == VENDOR_MISMATCH:
            self._ensure(code, self._other_vendor(row.vendor_code), row.meter_code)
        elif message == BILL_OVERLAPS:
            account = self._ensure(code, row.vendor_code, row.meter_code)
            start, end = sorted((row.bill_start, row.bill_end))
            self.bills.append(Bill(account.code, row.meter_code, start, end))
        elif message in (TOTAL_MISMATCH, END_BEFORE_START):
            self._ensure(code, row.vendor_code, row.meter_code)

    def _ensure(self, code: str, vendor_code: str, meter: str | None) -> Account:
        account = self.account(code)
        if account is None:
            vendor = self.vendor(vendor_code)
            account = Account(code, vendor.code if vendor else vendor_code, [])
            self.accounts[code.lower()] = account
        meter = (meter or "").strip()
        known = (m.lower() for m in account.meters)
        if meter and not account.meters_fixed and meter.lower() not in known:
            account.meters.append(meter)
        return account

    def _other_vendor(self, vendor_code: str) -> str:
        codes = [code for code, _ in VENDORS]
        vendor = self.vendor(vendor_code)
        if vendor is None or vendor.code not in codes:
            return codes[0]
        return codes[(codes.index(vendor.code) + 1) % len(codes)]


def real_account_code(code: str) -> str:
    """The code of the account a "not found" code meant: without dashes, or zero-padded."""
    return code.replace("-", "") if "-" in code else "0" + code


def other_meters(account_code: str, not_this: str) -> list[str]:
    """Two meter codes for an account, derived from its code (the seed's draws stay as they
    were), never the meter the kicked-out row named."""
    digest = hashlib.sha256(account_code.lower().encode("utf-8")).digest()
    meters = []
    for index in range(0, 12, 3):
        code = f"MTR-{10000 + int.from_bytes(digest[index : index + 3], 'big') % 90000}"
        if code.lower() != not_this.lower() and code not in meters:
            meters.append(code)
    return meters[:2]


_MASTERS: weakref.WeakKeyDictionary[SandboxState, MasterData] = weakref.WeakKeyDictionary()


def master_data(state: SandboxState) -> MasterData:
    """The master data of this sandbox world, up to date with the kickouts it now has.

    Kept beside the state (and dropped with it on a reset) rather than in it, so the state
    module needs to know nothing of file imports.
    """
    master = _MASTERS.get(state)
    if master is None:
        master = _MASTERS[state] = MasterData()
    master.learn(state)
    return master


# --- reading the file ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sheet:
    """One file's rows: the file inside a ZIP, or the import's own file."""

    file_name: str
    rows: list[tuple[int, list[Any]]]  # (row number in the file, cells)


def read_file(file_name: str, data: bytes) -> list[Sheet]:
    extension = file_name.rsplit(".", 1)[-1].lower()
    if extension == "zip":
        return _read_zip(data)
    return [_read_data_file(file_name, extension, data)]


def _read_data_file(file_name: str, extension: str, data: bytes) -> Sheet:
    if extension == "xlsx":
        return Sheet(file_name, read_first_sheet(data, file_name))
    return Sheet(file_name, _read_text(data, file_name))


def _read_zip(data: bytes) -> list[Sheet]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ImportFailed("The file could not be read: it is not a ZIP file.") from None
    sheets = []
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            extension = info.filename.rsplit(".", 1)[-1].lower() if "." in info.filename else ""
            if extension not in DATA_EXTENSIONS:
                raise ImportFailed(
                    f"The file could not be read: '{info.filename}' in the ZIP is not a CSV, "
                    "TXT, DAT or XLSX file."
                )
            try:
                member = archive.read(info)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError):
                raise ImportFailed(
                    f"The file could not be read: '{info.filename}' in the ZIP is damaged."
                ) from None
            sheets.append(_read_data_file(info.filename, extension, member))
    if not sheets:
        raise ImportFailed("The file could not be read: the ZIP holds no files.")
    return sheets


def _read_text(data: bytes, file_name: str) -> list[tuple[int, list[Any]]]:
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise ImportFailed(
                f"The file could not be read: line {number} of '{file_name}' is not UTF-8."
            ) from None
    text = data.decode("utf-8-sig")
    first = text.split("\n", 1)[0]
    delimiter = max(",\t|;", key=first.count) if first else ","
    if first.count(delimiter) == 0:
        delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return [(reader.line_num, row) for row in reader]
    except csv.Error as error:
        raise ImportFailed(
            f"The file could not be read: line {reader.line_num} of '{file_name}': {error}."
        ) from None


_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_DOC_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_CELL_REF = re.compile(r"^([A-Z]+)(\d+)$")


@dataclass(frozen=True)
class ExcelSerial:
    """A number in a workbook: a date when it sits in a date column (Excel's serial day)."""

    value: float
    date1904: bool

    def as_date(self) -> date:
        epoch = date(1904, 1, 1) if self.date1904 else date(1899, 12, 30)
        return epoch + timedelta(days=int(self.value))

    def __str__(self) -> str:
        return _number_text(self.value)


def read_first_sheet(data: bytes, file_name: str) -> list[tuple[int, list[Any]]]:
    """The first sheet's rows, as EnergyCAP reads a workbook: shared and inline strings,
    numbers (kept as ``ExcelSerial``: dates are numbers styled as dates), booleans, ISO dates."""
    unreadable = ImportFailed(f"The file could not be read: '{file_name}' is not a workbook.")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise unreadable from None
    try:
        with archive:
            workbook = _xml(archive.read("xl/workbook.xml"))
            properties = workbook.find(f"{_MAIN}workbookPr")
            date1904 = properties is not None and properties.get("date1904") in ("1", "true")
            sheets = workbook.find(f"{_MAIN}sheets")
            if sheets is None or len(sheets) == 0:
                raise ImportFailed(f"The file could not be read: '{file_name}' has no sheet.")
            relation = sheets[0].get(f"{_DOC_REL}id")
            rels = _xml(archive.read("xl/_rels/workbook.xml.rels"))
            target = next(
                (
                    r.get("Target", "")
                    for r in rels.iter(f"{_PKG_REL}Relationship")
                    if r.get("Id") == relation
                ),
                "",
            )
            if not target:
                raise unreadable
            path = (
                target.lstrip("/")
                if target.startswith("/")
                else posixpath.normpath(posixpath.join("xl", target))
            )
            shared = _shared_strings(archive)
            sheet = _xml(archive.read(path))
    except (KeyError, ElementTree.ParseError, zipfile.BadZipFile, ValueError):
        raise unreadable from None
    rows = []
    next_row = 1
    for row in sheet.iter(f"{_MAIN}row"):
        number = int(row.get("r") or next_row)
        next_row = number + 1
        cells: dict[int, Any] = {}
        next_column = 0
        for cell in row.findall(f"{_MAIN}c"):
            match = _CELL_REF.match(cell.get("r") or "")
            column = _column_index(match[1]) if match else next_column
            next_column = column + 1
            cells[column] = _cell_value(cell, shared, date1904)
        width = max(cells) + 1 if cells else 0
        rows.append((number, [cells.get(i) for i in range(width)]))
    return rows


def _xml(data: bytes) -> ElementTree.Element:
    # The sandbox keeps to the standard library (defusedxml is not in it). ElementTree never
    # fetches external entities, and the expat it uses refuses entity expansion bombs.
    return ElementTree.fromstring(data)  # noqa: S314


def _shared_strings(archive: zipfile.ZipFile) -> list[str]:
    try:
        root = _xml(archive.read("xl/sharedStrings.xml"))
    except KeyError:
        return []
    return [_text_of(item) for item in root.iter(f"{_MAIN}si")]


def _text_of(element: ElementTree.Element) -> str:
    # Phonetic runs (<rPh>) are reading aids, not the cell's text.
    parts = []
    for child in element:
        if child.tag == f"{_MAIN}t":
            parts.append(child.text or "")
        elif child.tag == f"{_MAIN}r":
            parts.extend(t.text or "" for t in child.iter(f"{_MAIN}t"))
    return "".join(parts)


def _cell_value(cell: ElementTree.Element, shared: list[str], date1904: bool) -> Any:
    kind = cell.get("t", "n")
    value = cell.find(f"{_MAIN}v")
    text = value.text if value is not None and value.text is not None else None
    if kind == "inlineStr":
        inline = cell.find(f"{_MAIN}is")
        return _text_of(inline) if inline is not None else ""
    if text is None:
        return None
    if kind == "s":
        return shared[int(text)]
    if kind in ("str", "e"):
        return text
    if kind == "b":
        return text == "1"
    if kind == "d":
        return date.fromisoformat(text[:10])
    return ExcelSerial(float(text), date1904)


def _column_index(letters: str) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - ord("A") + 1
    return index - 1


# --- checking the rows ---------------------------------------------------------------------

_DATE_FORMATS = (
    ("yyyy-mm-dd", re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ].*)?$"), (1, 2, 3)),
    ("m/d/yyyy", re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$"), (3, 1, 2)),
    ("d.m.yyyy", re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$"), (3, 2, 1)),
    ("yyyy/mm/dd", re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"), (1, 2, 3)),
)


@dataclass(frozen=True)
class CellDate:
    value: date | None
    text_format: str | None  # None for a workbook's own date (it has no text format)
    text: str


def read_date(cell: Any) -> CellDate:
    if isinstance(cell, datetime):
        return CellDate(cell.date(), None, cell.date().isoformat())
    if isinstance(cell, date):
        return CellDate(cell, None, cell.isoformat())
    if isinstance(cell, ExcelSerial):
        try:
            return CellDate(cell.as_date(), None, cell.as_date().isoformat())
        except OverflowError:
            return CellDate(None, None, str(cell))
    text = _text(cell)
    for name, pattern, (y, m, d) in _DATE_FORMATS:
        match = pattern.match(text)
        if match:
            try:
                return CellDate(date(int(match[y]), int(match[m]), int(match[d])), name, text)
            except ValueError:
                return CellDate(None, name, text)
    return CellDate(None, None, text)


@dataclass
class Checked:
    imported: int = 0
    total: int = 0
    kickouts: list[KickoutRow] = field(default_factory=list)
    bills: list[Bill] = field(default_factory=list)


@dataclass(frozen=True)
class FileRow:
    """One bill row of a file, its cells read by the profile's columns."""

    file_name: str
    number: int
    account: str
    meter: str
    vendor: str
    start: CellDate
    end: CellDate
    total: float | None
    total_text: str
    line_total: float | None
    line_total_text: str

    def kickout(self, message: str) -> KickoutRow:
        return KickoutRow(
            message=message,
            row_number=self.number,
            account_code=self.account,
            meter_code=self.meter,
            vendor_code=self.vendor,
            bill_start=self.start.value or self.start.text,
            bill_end=self.end.value or self.end.text,
            total_cost=self.total if self.total is not None else self.total_text,
            file_name=self.file_name,
            line_item_total=self.line_total,
        )


def check_sheets(sheets: Iterable[Sheet], profile: Profile, master: MasterData) -> Checked:
    result = Checked()
    for sheet in sheets:
        file_format: str | None = None
        for row in _file_rows(sheet, profile):
            result.total += 1
            formats = [d.text_format for d in (row.start, row.end) if d.text_format]
            # The file's date format is the first one it uses.
            file_format = file_format or (formats[0] if formats else None)
            mixed = any(f != file_format for f in formats)
            message, bill = _check_row(row, mixed, master, result.bills)
            if bill is None:
                result.kickouts.append(row.kickout(message))
            else:
                result.bills.append(bill)
                result.imported += 1
    if result.total == 0:
        raise ImportFailed("The file could not be read: it holds no bill rows.")
    return result


def _file_rows(sheet: Sheet, profile: Profile) -> Iterator[FileRow]:
    rows = [(number, cells) for number, cells in sheet.rows if any(_text(c) for c in cells)]
    if not rows:
        return
    _, header = rows[0]
    positions = {_key(_text(name)): index for index, name in enumerate(header)}
    columns: dict[str, int] = {}
    missing = []
    for name in REQUIRED_FIELDS + OPTIONAL_FIELDS:
        column = profile.columns.get(name)
        if column is not None and _key(column) in positions:
            columns[name] = positions[_key(column)]
        elif name in REQUIRED_FIELDS:
            missing.append(profile.columns[name])
    if missing:
        raise ImportFailed(
            f"Import profile '{profile.name}' does not match the columns of the file "
            f"'{sheet.file_name}': {', '.join(missing)} not found."
        )
    for number, cells in rows[1:]:

        def cell(name: str, cells: list[Any] = cells) -> Any:
            index = columns.get(name)
            return cells[index] if index is not None and index < len(cells) else None

        line_total_text = _text(cell("line_total"))
        yield FileRow(
            file_name=sheet.file_name,
            number=number,
            account=_text(cell("account")),
            meter=_text(cell("meter")),
            vendor=_text(cell("vendor")),
            start=read_date(cell("start")),
            end=read_date(cell("end")),
            total=_number(cell("total")),
            total_text=_text(cell("total")),
            line_total=_number(cell("line_total")) if line_total_text else None,
            line_total_text=line_total_text,
        )


def _check_row(
    row: FileRow, mixed_dates: bool, master: MasterData, imported: list[Bill]
) -> tuple[str, Bill | None]:
    """The row's kickout message, or the bill it becomes: the first failing check decides."""
    start, end = row.start.value, row.end.value
    if start is None or end is None:
        return UNKNOWN_DATE_FORMAT, None
    if mixed_dates:
        return MIXED_DATE_FORMATS, None
    if end < start:
        return END_BEFORE_START, None
    if row.total is None:
        return TOTAL_NOT_A_NUMBER, None
    account = master.account(row.account)
    if account is None:
        return ACCOUNT_NOT_FOUND, None
    if row.vendor:
        vendor = master.vendor(row.vendor)
        if vendor is None or vendor.code.lower() != account.vendor_code.lower():
            return VENDOR_MISMATCH, None
    meter = _resolve_meter(account, row.meter)
    if meter is None:
        return METER_NOT_FOUND, None
    if row.line_total_text and (row.line_total is None or abs(row.line_total - row.total) > 0.005):
        return TOTAL_MISMATCH, None
    bill = Bill(account.code, meter, start, end)
    if master.overlaps(bill, imported):
        return BILL_OVERLAPS, None
    return "", bill


def _resolve_meter(account: Account, meter_text: str) -> str | None:
    if meter_text:
        return next((m for m in account.meters if m.lower() == meter_text.lower()), None)
    # No meter in the file: only an account with a single meter resolves it.
    return account.meters[0] if len(account.meters) == 1 else None


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _number(value: Any) -> float | None:
    if isinstance(value, ExcelSerial):
        return value.value
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = _text(value).replace(",", "").replace("$", "")
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


# --- the import task -----------------------------------------------------------------------


def start_file_import(
    state: SandboxState,
    request: FileImportRequest,
    *,
    batch: Batch,
    close_batch_when_done: bool,
    now: datetime,
) -> Task:
    """Check the file's rows now and make the Bill Import task that reports them when it ends."""
    master = master_data(state)
    outcome = TaskOutcome(status=FAILED)
    total = 0
    if state.next_outcomes and state.next_outcomes[0] == FAILED:
        state.next_outcomes.popleft()
        outcome.message = (
            "The file could not be imported: the bill import service stopped unexpectedly."
        )
    else:
        try:
            checked = check_sheets(
                read_file(request.file_name, request.data), request.profile, master
            )
        except ImportFailed as failure:
            outcome.message = str(failure)
        else:
            master.bills.extend(checked.bills)
            total = checked.total
            outcome = TaskOutcome(
                status=COMPLETED_WITH_KICKOUTS if checked.kickouts else COMPLETED,
                kickouts=checked.kickouts,
                success_count=checked.imported,
            )
    task = Task(
        task_id=state._take_task_id(),
        task_guid=state.fresh_guid(),
        task_type=TASK_TYPES[BILL_IMPORT.lower()],
        user_id=state.api_user_id,
        begin_date=now,
        ends_at=now + timedelta(seconds=state.task_seconds),
        outcome=outcome,
        note=request.kickout_request.import_note or "",
        batch_id=batch.batch_id,
        file_name=request.file_name,
        settings=request.settings,
        total_bills=total,
        close_batch_when_done=close_batch_when_done,
        settled=False,
    )
    master.file_imports.add(task.task_guid)
    state.tasks[task.task_guid] = task
    state.settle(now)  # a zero-second task ends at once
    return task


# --- the kickout file a clerk corrects ------------------------------------------------------


def kickout_file(task: Task) -> str:
    """The task's kickout rows as a CSV in the Advanced format, the message first: what a
    clerk downloads from EnergyCAP, corrects and imports again."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(KICKOUT_FILE_COLUMNS)
    for row in task.outcome.kickouts:
        writer.writerow(_kickout_line(row))
    return out.getvalue()


def _kickout_line(row: KickoutRow) -> list[str]:
    total = row.total_cost
    line_total: Any = row.line_item_total
    if line_total is None and isinstance(total, float):
        # The seed's "total does not match" rows had line items adding up to another sum.
        line_total = total + 10 + row.row_number % 90 if row.message == TOTAL_MISMATCH else total
    return [
        row.message,
        row.account_code,
        row.meter_code,
        row.vendor_code,
        _cell_text(row.bill_start),
        _cell_text(row.bill_end),
        f"{total:.2f}" if isinstance(total, float) else str(total),
        f"{line_total:.2f}" if isinstance(line_total, float) else "",
    ]


def _cell_text(value: date | str) -> str:
    return value if isinstance(value, str) else value.isoformat()


def iter_accounts(master: MasterData) -> Iterator[dict[str, Any]]:
    for account in sorted(master.accounts.values(), key=lambda a: a.code):
        yield account.json()
