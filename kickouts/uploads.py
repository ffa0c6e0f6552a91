"""A corrected bill file, checked before anything is sent to EnergyCAP (issue 22).

`check_file(upload)` reads an uploaded file once through and answers a `CheckedFile`: the
file's safe name, size, sha256, kind, each file it holds (one, or each inside a ZIP) with its
rows counted and a preview (header and first rows), and the problems found, each a message
that says what to change. The form turns each problem into an error beside the kept choices.
The browser's content type is never read: the bytes decide what a file is.

What is refused (a `Problem`):

- an extension EnergyCAP does not import (it takes csv, txt, dat, xlsx and zip), and content
  that does not match the extension: an ``.xlsx`` that is not a workbook, a ``.zip`` that is
  not a ZIP, a text file that is a ZIP, a PDF, an old ``.xls`` or holds NUL bytes (UTF-16);
- an empty file, and a file over `CORRECTED_FILE_MAX_BYTES` (10 MB by default);
- a ZIP or workbook whose content expands past `CORRECTED_FILE_MAX_EXPANDED_BYTES`, judged
  from the sizes it declares before anything is unpacked (Python's zipfile never unpacks more
  than a member declares, and a member that lies fails its checksum);
- a ZIP holding anything but CSV, TXT, DAT or XLSX files at its top level: a nested ZIP,
  another kind of file, a folder (the ``__MACOSX`` folder Finder adds included), a name that
  climbs out of the ZIP (``../``, an absolute path, a drive, a backslash), a password;
- a CSV, TXT or DAT file that is not UTF-8 (the message names the line), or that the csv
  module cannot read; a workbook openpyxl cannot read;
- a file (or a file inside the ZIP) with no bill rows below its header: EnergyCAP would
  import nothing. A workbook is read from its first sheet only, as EnergyCAP reads it.

More than 5,000 rows is not refused: it requires an explicit confirmation
(`CheckedFile.needs_row_confirmation`, which the form turns into a required checkbox). The
5,000 is EnergyCAP's advice for a fast import with a readable kickout file, not a documented
limit: EnergyCAP takes larger files. A clerk who must send a large corrected file (a month's
EDI feed) would otherwise have to split it by hand, and splitting by hand is how rows get lost
or sent twice, which is what this dashboard exists to prevent. The size limit stays the hard
bound. The rows are counted over the whole upload (every file of a ZIP): the ZIP is one import.

A file's name is the browser's word and may carry a path (``C:\\Users\\carla\\bills.csv``,
``../../x.csv``) or control and format characters (a right-to-left override can make
``gpj.exe`` read as ``exe.jpg``): only a safe base name is kept (`safe_name`), and
`CheckedFile.renamed` tells the form to say so.

Memory stays bounded: the upload is read in 64 KB chunks and hashed while it is read; text is
decoded and counted line by line (only the preview's rows are kept); a workbook is read with
openpyxl in read-only mode (rows streamed from the sheet's XML; the shared strings table is
held, and it is bounded by the expansion limit); ZIP members are streamed with a byte budget,
a workbook inside a ZIP through a spooled temporary file. tests/test_uploads.py measures the
peak for 10 MB files.

The size limit is enforced before the body is read whole by `CorrectedFileUploadHandler`, an
upload handler that the view puts first among the request's handlers with the decorator
`accepts_corrected_file` (see there for how the view must use it).
"""

from __future__ import annotations

import base64
import codecs
import csv
import hashlib
import logging
import re
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from functools import wraps
from itertools import chain
from typing import IO, Any, cast

import openpyxl
from django.conf import settings
from django.core.files import File
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest
from django.views.decorators.csrf import csrf_exempt, csrf_protect

logger = logging.getLogger(__name__)

EXTENSIONS = ("csv", "txt", "dat", "xlsx", "zip")
TEXT_EXTENSIONS = ("csv", "txt", "dat")
ZIPPED_EXTENSIONS = ("csv", "txt", "dat", "xlsx")
# EnergyCAP's help center: "keep a file at 5,000 rows or fewer".
ADVISED_MAX_ROWS = 5000
PREVIEW_ROWS = 10
PREVIEW_COLUMNS = 60
PREVIEW_CELL_CHARS = 80
CHUNK_BYTES = 64 * 1024
# A workbook inside a ZIP is spooled to disk past this size (openpyxl needs to seek in it).
SPOOL_BYTES = 1024 * 1024
# What a multipart body holds besides the file: the form's other fields and part headers.
MULTIPART_ALLOWANCE = 64 * 1024
NAME_MAX_CHARS = 200
# Characters Windows refuses in a file name; EnergyCAP names its kickout files after ours.
_RESERVED = re.compile(r'[<>:"|?*]')
_SPACES = re.compile(r"\s+")

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class ProblemKind(StrEnum):
    EXTENSION = "extension"
    CONTENT = "content"  # the content does not match the extension
    EMPTY = "empty"
    TOO_LARGE = "too large"
    EXPANDS_TOO_MUCH = "expands too much"
    ZIP_CONTENTS = "zip contents"
    NOT_UTF8 = "not utf-8"
    UNREADABLE = "unreadable"
    NO_ROWS = "no rows"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    message: str  # what is wrong and what to change, safe to show (escaped by templates)
    inner_name: str = ""  # the file it concerns, when it is one file (one inside a ZIP)


@dataclass(frozen=True)
class InnerFile:
    """One file EnergyCAP will read: the upload itself, or one file inside the ZIP."""

    name: str
    kind: str  # csv, txt, dat or xlsx
    size: int  # bytes (unpacked, for a file inside a ZIP)
    rows: int  # bill rows below the header; blank rows are not counted
    header: tuple[str, ...]
    preview: tuple[tuple[str, ...], ...]  # the first rows, as wide as the header
    columns: int  # how many columns the header has (the preview shows at most 60)


def inner_file_json(inner: InnerFile) -> dict[str, Any]:
    """An inner file as stored with the upload (`CorrectedFile.files`)."""
    return {
        "name": inner.name,
        "kind": inner.kind,
        "size": inner.size,
        "rows": inner.rows,
        "columns": inner.columns,
        "header": list(inner.header),
        "preview": [list(row) for row in inner.preview],
    }


def inner_file_from_json(data: dict[str, Any]) -> InnerFile:
    return InnerFile(
        name=str(data.get("name", "")),
        kind=str(data.get("kind", "")),
        size=int(data.get("size", 0)),
        rows=int(data.get("rows", 0)),
        header=tuple(str(cell) for cell in data.get("header", ())),
        preview=tuple(tuple(str(cell) for cell in row) for row in data.get("preview", ())),
        columns=int(data.get("columns", 0)),
    )


@dataclass(frozen=True)
class CheckedFile:
    name: str  # the safe base name, sent as EnergyCAP's fileName
    original_name: str  # as the browser sent it
    size: int
    sha256: str  # empty when the file was too large to be read whole
    kind: str  # its extension: csv, txt, dat, xlsx or zip ("" when it has none)
    files: tuple[InnerFile, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def renamed(self) -> bool:
        return self.name != self.original_name

    @property
    def rows(self) -> int:
        return sum(inner.rows for inner in self.files)

    @property
    def needs_row_confirmation(self) -> bool:
        return self.ok and self.rows > ADVISED_MAX_ROWS

    @property
    def row_confirmation_message(self) -> str:
        return (
            f"{self.name} holds {self.rows:,} rows; EnergyCAP advises at most "
            f"{ADVISED_MAX_ROWS:,} per import, as a larger import is slow and its kickout file "
            "hard to read. Confirm to import it whole, or split it into smaller files."
        )


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_expanded_bytes: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(settings.CORRECTED_FILE_MAX_BYTES, settings.CORRECTED_FILE_MAX_EXPANDED_BYTES)


def format_size(size: int) -> str:
    """Bytes in the units people read: 512 bytes, 18 KB, 9.5 MB (1 KB = 1,024 bytes)."""
    if size < 1024:
        return f"{size:,} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    megabytes = round(size / (1024 * 1024), 1)
    return f"{megabytes:.0f} MB" if megabytes == int(megabytes) else f"{megabytes:.1f} MB"


def safe_name(name: str) -> str:
    """The base name alone, without control or format characters nor characters Windows
    refuses, trimmed of dots and spaces at its ends and shortened to 200 characters (its
    extension kept). Empty when nothing is left."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _SPACES.sub(" ", unicodedata.normalize("NFC", base))
    base = "".join(ch for ch in base if not unicodedata.category(ch).startswith("C"))
    base = _SPACES.sub(" ", _RESERVED.sub("_", base)).strip(" .")
    if len(base) > NAME_MAX_CHARS:
        stem, dot, extension = base.rpartition(".")
        if dot and 0 < len(extension) <= 10:
            base = stem[: NAME_MAX_CHARS - len(extension) - 1].rstrip(" .") + "." + extension
        else:
            base = base[:NAME_MAX_CHARS].rstrip(" .")
    return base


def extension_of(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""


# --- checking ------------------------------------------------------------------------------


class _Refused(Exception):
    """A problem that ends the reading of a file (or of the file inside a ZIP)."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def check_file(upload: File, limits: Limits | None = None) -> CheckedFile:
    """Check an uploaded file (any Django `File`: an `UploadedFile`, a `ContentFile`...)."""
    limits = limits or Limits.from_settings()
    original = str(upload.name or "")
    name = safe_name(original)
    kind = extension_of(name)
    display = name or "The file"

    digest = hashlib.sha256()
    size = 0
    head = b""
    # Read through the file object: an in-memory upload's chunks() is the whole file at once.
    upload.seek(0)
    stream = _stream_of(upload)
    for chunk in _chunks_of(stream):
        size += len(chunk)
        if size > limits.max_bytes:
            problem = Problem(
                ProblemKind.TOO_LARGE,
                f"{display} is larger than {format_size(limits.max_bytes)}, the most the "
                "dashboard sends: split it into smaller files and import each.",
            )
            return CheckedFile(name, original, size, "", kind, (), (problem,))
        if len(head) < 8:
            head += chunk[: 8 - len(head)]
        digest.update(chunk)

    def result(files: Iterable[InnerFile] = (), problems: Iterable[Problem] = ()) -> CheckedFile:
        return CheckedFile(
            name, original, size, digest.hexdigest(), kind, tuple(files), tuple(problems)
        )

    if size == 0:
        return result(
            problems=[Problem(ProblemKind.EMPTY, f"{display} is empty: choose the saved file.")]
        )
    if kind not in EXTENSIONS:
        return result(problems=[_wrong_extension(display, kind, head)])
    stream.seek(0)
    try:
        if kind == "zip":
            files, problems = _check_zip(stream, display, head, limits)
            return result(files, problems)
        if kind == "xlsx":
            inner = _check_workbook(stream, display, head, size, limits)
        else:
            inner = _check_text(_chunks_of(stream), display, kind, head, size)
    except _Refused as refused:
        return result(problems=[refused.problem])
    return result([inner], _no_rows([inner]))


def _wrong_extension(display: str, kind: str, head: bytes) -> Problem:
    what = _what_it_is(head)
    said = f" (it is {what})" if what else ""
    if not kind:
        text = f"{display} has no extension{said}"
    else:
        text = f"{display} is a .{kind} file{said}, which EnergyCAP does not import"
    return Problem(
        ProblemKind.EXTENSION,
        f"{text}: choose a .csv, .txt, .dat, .xlsx or .zip file"
        + (", saving an .xls workbook as .xlsx first." if what and "97-2003" in what else "."),
    )


def _what_it_is(head: bytes) -> str:
    if head.startswith(ZIP_MAGIC):
        return "a ZIP archive or an .xlsx workbook"
    if head.startswith(OLE_MAGIC):
        return "an Excel 97-2003 workbook (.xls) or a password-protected workbook"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(UTF16_BOMS):
        return "text saved as UTF-16 (Excel's 'Unicode Text')"
    return ""


def _no_rows(files: Iterable[InnerFile]) -> list[Problem]:
    problems = []
    for inner in files:
        if inner.rows:
            continue
        if inner.header:
            text = f"{inner.name} has a header but no bill rows below it"
        else:
            text = f"{inner.name} holds no rows at all"
        problems.append(
            Problem(
                ProblemKind.NO_ROWS,
                f"{text}: EnergyCAP would import nothing. Check that you chose the corrected file"
                + (" and that the bills are on its first sheet." if inner.kind == "xlsx" else "."),
                inner.name,
            )
        )
    return problems


def _chunks_of(stream: IO[bytes], budget: Callable[[int], None] | None = None) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        if budget is not None:
            budget(len(chunk))
        yield chunk


# -- text files --


class _NotUtf8(Exception):
    def __init__(self, line: int, column: int, byte: int):
        super().__init__(line)
        self.line, self.column, self.byte = line, column, byte


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Each line (with its line ending) decoded as UTF-8 alone; a byte-order mark is dropped.
    Raises `_NotUtf8` naming the line of the first byte that is not UTF-8."""
    pending = bytearray()
    number = 0

    def decode(raw: bytes) -> str:
        nonlocal number
        number += 1
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _NotUtf8(number, error.start + 1, raw[error.start]) from None

    for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) != -1:
            yield decode(bytes(pending[start : end + 1]))
            start = end + 1
        del pending[:start]
    if pending:
        yield decode(bytes(pending))


def _check_text(
    chunks: Iterable[bytes], display: str, kind: str, head: bytes, size: int
) -> InnerFile:
    if (
        head.startswith(ZIP_MAGIC)
        or head.startswith((OLE_MAGIC, b"%PDF"))
        or (head.startswith(UTF16_BOMS))
    ):
        what = _what_it_is(head)
        advice = (
            "rename it to .xlsx (or .zip) as it is"
            if head.startswith(ZIP_MAGIC)
            else "save it as 'CSV UTF-8' in Excel"
        )
        raise _Refused(
            Problem(ProblemKind.CONTENT, f"{display} is {what}, not a text file: {advice}.")
        )
    lines = _lines(chunks)
    header: list[str] | None = None
    preview: list[list[str]] = []
    rows = 0
    reader = None
    try:
        first = next(lines, "")
        if "\x00" in first:
            raise _Refused(_binary(display))
        dialect = _dialect(first)
        reader = csv.reader(chain([first], lines), dialect)
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = record
            else:
                rows += 1
                if len(preview) < PREVIEW_ROWS:
                    preview.append(record)
    except _NotUtf8 as error:
        raise _Refused(
            Problem(
                ProblemKind.NOT_UTF8,
                f"Line {error.line} of {display} is not UTF-8 (byte 0x{error.byte:02X} at "
                f"position {error.column}): save the file as 'CSV UTF-8' in Excel, or convert "
                "it to UTF-8, and upload it again.",
                display,
            )
        ) from None
    except csv.Error as error:
        line = reader.line_num if reader is not None else 1
        if "NUL" in str(error):
            raise _Refused(_binary(display)) from None
        raise _Refused(
            Problem(
                ProblemKind.UNREADABLE,
                f"Line {line} of {display} cannot be read as {kind.upper()} ({error}): "
                "check the quotes on that line.",
                display,
            )
        ) from None
    return _inner(display, kind, size, rows, header or [], preview)


def _binary(display: str) -> Problem:
    return Problem(
        ProblemKind.CONTENT,
        f"{display} is not a text file (it holds NUL bytes, as a UTF-16 or binary file does): "
        "save it as 'CSV UTF-8' in Excel.",
        display,
    )


def _dialect(first_line: str) -> type[csv.Dialect]:
    """Commas unless the header line is clearly split by tabs, pipes or semicolons."""
    counts = {d: first_line.count(d) for d in (",", "\t", "|", ";")}
    delimiter = max(counts, key=lambda d: counts[d])
    if counts[delimiter] == 0:
        delimiter = ","

    class Dialect(csv.excel):
        pass

    Dialect.delimiter = delimiter
    return Dialect


# -- workbooks --


def _check_workbook(
    stream: IO[bytes], display: str, head: bytes, size: int, limits: Limits
) -> InnerFile:
    not_a_workbook = Problem(
        ProblemKind.CONTENT,
        f"{display} is not an Excel workbook (.xlsx)"
        + (f": it is {_what_it_is(head)}" if _what_it_is(head) else "")
        + ". Open it in Excel and save it as 'Excel Workbook (*.xlsx)'.",
        display,
    )
    if not head.startswith(ZIP_MAGIC):
        raise _Refused(not_a_workbook)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, EOFError):
        raise _Refused(not_a_workbook) from None
    with archive:
        names = set(archive.namelist())
        if "xl/workbook.xml" not in names or "[Content_Types].xml" not in names:
            raise _Refused(not_a_workbook)
        expanded = sum(info.file_size for info in archive.infolist())
        if expanded > limits.max_expanded_bytes:
            raise _Refused(_expands(display, expanded, limits))
    stream.seek(0)
    try:
        workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    except Exception:  # noqa: BLE001 - openpyxl raises many kinds of errors for a damaged file
        logger.info("openpyxl could not open an uploaded workbook", exc_info=True)
        raise _Refused(_damaged(display)) from None
    try:
        if not workbook.worksheets:
            raise _Refused(Problem(ProblemKind.NO_ROWS, f"{display} has no worksheet.", display))
        sheet = workbook.worksheets[0]
        header: list[str] | None = None
        preview: list[list[str]] = []
        rows = 0
        try:
            for values in sheet.iter_rows(values_only=True):
                cells = [_cell_text(value) for value in values]
                if not any(cell.strip() for cell in cells):
                    continue
                if header is None:
                    header = cells
                else:
                    rows += 1
                    if len(preview) < PREVIEW_ROWS:
                        preview.append(cells)
        except Exception:  # noqa: BLE001 - as above: a damaged sheet fails in many ways
            logger.info("openpyxl could not read an uploaded sheet", exc_info=True)
            raise _Refused(_damaged(display)) from None
        if header is None and len(workbook.sheetnames) > 1:
            others = ", ".join(f"'{n}'" for n in workbook.sheetnames[1:4])
            raise _Refused(
                Problem(
                    ProblemKind.NO_ROWS,
                    f"The first sheet of {display}, '{sheet.title}', is empty, and EnergyCAP "
                    f"reads only the first sheet (not {others}): move the bills to the first "
                    "sheet.",
                    display,
                )
            )
    finally:
        workbook.close()
    return _inner(display, "xlsx", size, rows, header or [], preview)


def _damaged(display: str) -> Problem:
    return Problem(
        ProblemKind.UNREADABLE,
        f"{display} cannot be read as a workbook (it may be damaged): open it in Excel, save "
        "it again as 'Excel Workbook (*.xlsx)' and upload it again.",
        display,
    )


def _expands(display: str, expanded: int, limits: Limits) -> Problem:
    return Problem(
        ProblemKind.EXPANDS_TOO_MUCH,
        f"{display} unpacks to {format_size(expanded)}, more than the "
        f"{format_size(limits.max_expanded_bytes)} the dashboard checks: split it into smaller "
        "files and import each.",
        display,
    )


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- ZIP archives --


def _check_zip(
    stream: IO[bytes], display: str, head: bytes, limits: Limits
) -> tuple[list[InnerFile], list[Problem]]:
    not_a_zip = Problem(
        ProblemKind.CONTENT,
        f"{display} is not a ZIP archive"
        + (f" (it is {_what_it_is(head)})" if _what_it_is(head) else "")
        + ": make the ZIP again, or upload the file it should hold as it is.",
    )
    if not head.startswith(ZIP_MAGIC):
        return [], [not_a_zip]
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, EOFError):
        return [], [not_a_zip]
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        expanded = sum(info.file_size for info in members)
        if expanded > limits.max_expanded_bytes:
            return [], [_expands(display, expanded, limits)]
        problems = [
            p for info in archive.infolist() if (p := _member_problem(info, display)) is not None
        ]
        if problems:
            return [], _one_finder_problem(problems)
        if not members:
            return [], [
                Problem(ProblemKind.EMPTY, f"{display} holds no files: add the bill files.")
            ]
        files = []
        spent = 0

        def budget(count: int) -> None:
            nonlocal spent
            spent += count
            if spent > limits.max_expanded_bytes:
                raise _Refused(_expands(display, spent, limits))

        for info in members:
            member_name = _printable(info.filename)
            try:
                files.append(_check_member(archive, info, member_name, budget, limits))
            except _Refused as refused:
                problems.append(refused.problem)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError):
                problems.append(
                    Problem(
                        ProblemKind.UNREADABLE,
                        f"{member_name} in {display} cannot be unpacked (damaged, or packed with "
                        "a method the dashboard does not read): make the ZIP again with your "
                        "system's own 'Compress' or 'Send to > Compressed folder'.",
                        member_name,
                    )
                )
    return files, problems + _no_rows(files)


def _member_problem(info: zipfile.ZipInfo, display: str) -> Problem | None:
    name = info.filename
    shown = _printable(name)
    parts = name.replace("\\", "/").split("/")
    if (
        name.startswith(("/", "\\"))
        or "\\" in name
        or ".." in parts
        or re.match(r"^[A-Za-z]:", name)
        or shown != name
    ):
        return Problem(
            ProblemKind.ZIP_CONTENTS,
            f"{display} holds an entry with an unsafe path ({shown}): make the ZIP again from "
            "the bill files alone.",
            shown,
        )
    if parts[0] == "__MACOSX" or parts[-1] == ".DS_Store":
        return Problem(
            ProblemKind.ZIP_CONTENTS,
            f"{display} holds the __MACOSX folder or .DS_Store files that macOS Finder adds: "
            "make the ZIP without them (for example with 'zip -X' or another ZIP tool).",
            shown,
        )
    if info.is_dir() or "/" in name.rstrip("/"):
        return Problem(
            ProblemKind.ZIP_CONTENTS,
            f"{display} holds a folder ({shown}): put the bill files at the top of the ZIP, "
            "without folders.",
            shown,
        )
    if info.flag_bits & 0x1:
        return Problem(
            ProblemKind.ZIP_CONTENTS,
            f"{shown} in {display} is protected by a password: make the ZIP without one.",
            shown,
        )
    extension = extension_of(name)
    if extension == "zip":
        return Problem(
            ProblemKind.ZIP_CONTENTS,
            f"{shown} is a ZIP inside {display}: EnergyCAP does not open a ZIP in a ZIP. Put "
            "its files in the outer ZIP.",
            shown,
        )
    if extension not in ZIPPED_EXTENSIONS:
        return Problem(
            ProblemKind.ZIP_CONTENTS,
            f"{shown} in {display} is not a CSV, TXT, DAT or XLSX file: remove it from the ZIP.",
            shown,
        )
    return None


def _one_finder_problem(problems: list[Problem]) -> list[Problem]:
    """The many entries Finder adds are one problem to the clerk, not one per file."""
    seen: set[str] = set()
    kept = []
    for problem in problems:
        if "__MACOSX" in problem.message:
            if problem.message in seen:
                continue
            seen.add(problem.message)
        kept.append(problem)
    return kept


def _check_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    member_name: str,
    budget: Callable[[int], None],
    limits: Limits,
) -> InnerFile:
    kind = extension_of(info.filename)
    if info.file_size == 0:
        raise _Refused(
            Problem(
                ProblemKind.EMPTY,
                f"{member_name} in the ZIP is empty: remove it or add the saved file.",
                member_name,
            )
        )
    with archive.open(info) as member:
        if kind == "xlsx":
            with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spooled:
                for chunk in _chunks_of(member, budget):
                    spooled.write(chunk)
                spooled.seek(0)
                head = spooled.read(8)
                spooled.seek(0)
                return _check_workbook(spooled, member_name, head, info.file_size, limits)
        chunks = _chunks_of(member, budget)
        first = next(chunks, b"")
        return _check_text(chain([first], chunks), member_name, kind, first[:8], info.file_size)


def _printable(name: str) -> str:
    return "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))


def _inner(
    name: str, kind: str, size: int, rows: int, header: list[str], preview: list[list[str]]
) -> InnerFile:
    width = min(PREVIEW_COLUMNS, max([len(header), *(len(r) for r in preview)], default=0))

    def fit(cells: list[str]) -> tuple[str, ...]:
        cells = [_short(cell) for cell in cells[:width]]
        return tuple(cells + [""] * (width - len(cells)))

    return InnerFile(
        name=name,
        kind=kind,
        size=size,
        rows=rows,
        header=fit(header) if header else (),
        preview=tuple(fit(row) for row in preview),
        columns=len(header),
    )


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"


# --- the body EnergyCAP receives ----------------------------------------------------------


def _stream_of(upload: Any) -> IO[bytes]:
    """The upload's own file object (read through it: an in-memory upload's chunks() is the
    whole file at once), or the upload itself when it has none."""
    inner = getattr(upload, "file", None)
    return cast("IO[bytes]", inner if inner is not None else upload)


def base64_data(upload: File) -> str:
    """The file's bytes in base64 for the body's ``data``, encoded a chunk at a time (chunks
    of a multiple of 3 bytes encode alone) so only the text is held whole, not the bytes too."""
    return base64_and_sha256(upload)[0]


def base64_and_sha256(upload: File) -> tuple[str, str]:
    """`base64_data` and the sha256 of the same bytes, read once: what is sent is provably
    the file that was reviewed."""
    upload.seek(0)
    stream = _stream_of(upload)
    digest = hashlib.sha256()
    pieces = []
    while chunk := stream.read(3 * CHUNK_BYTES):
        digest.update(chunk)
        pieces.append(base64.b64encode(chunk).decode("ascii"))
    return "".join(pieces), digest.hexdigest()


# --- refusing a body over the limit before it is read ---------------------------------------


@dataclass(frozen=True)
class UploadRefusal:
    """Why the upload handler stopped reading the request: the file is over the limit."""

    limit: int
    announced: int | None = None  # the request's Content-Length, when that alone decided

    @property
    def message(self) -> str:
        size = (
            f"The upload is {format_size(self.announced)}"
            if self.announced is not None
            else "The file is larger than that"
        )
        return (
            f"The dashboard takes files of up to {format_size(self.limit)}. {size}, so it was "
            "not read: split the file into smaller files and import each."
        )


class CorrectedFileUploadHandler(FileUploadHandler):
    """Stops reading a multipart request as soon as its file is known to be over the limit.

    A request whose Content-Length exceeds the limit (plus room for the form's other fields)
    is stopped when its file part begins; a smaller request whose file still grows past the
    limit is stopped at the chunk that crosses it. The fields sent before the file are parsed
    as usual, so the form keeps the clerk's choices (and its CSRF token): the form must put
    its file input LAST. Django never reads the rest of the body (`StopUpload` with
    ``connection_reset``); the web server discards it (gunicorn drains it with its own caps
    before reusing the connection, or closes it). Chunks under the limit pass through to the
    next handlers (memory, then a temporary file), as usual.
    """

    def __init__(self, request: HttpRequest | None = None, max_bytes: int | None = None):
        super().__init__(request)
        self.max_bytes = settings.CORRECTED_FILE_MAX_BYTES if max_bytes is None else max_bytes
        # The request's Content-Length (the base class keeps the file part's own in
        # `content_length`, usually None).
        self.body_length = 0
        self.received = 0
        self.refusal: UploadRefusal | None = None

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.body_length = content_length
        return None  # parse as usual

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0
        if self.body_length > self.max_bytes + MULTIPART_ALLOWANCE:
            self.refusal = UploadRefusal(self.max_bytes, self.body_length)
            raise StopUpload(connection_reset=True)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self.refusal = UploadRefusal(self.max_bytes)
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler makes the file


def limit_upload(request: HttpRequest, max_bytes: int | None = None) -> None:
    """Put the limit first among the request's upload handlers. Only before the request's
    POST or FILES is read (CSRF middleware reads it: see `accepts_corrected_file`)."""
    # Assigned, not inserted: Django's setter refuses once the body was parsed, where an
    # insert would be ignored in silence.
    handler = CorrectedFileUploadHandler(request, max_bytes)
    request.upload_handlers = [handler, *request.upload_handlers]


def upload_refusal(request: HttpRequest) -> UploadRefusal | None:
    """Why the request's file was not read, when the limit stopped it; read after POST/FILES."""
    for handler in request.upload_handlers:
        if isinstance(handler, CorrectedFileUploadHandler):
            return handler.refusal
    return None


def accepts_corrected_file(view: Callable) -> Callable:
    """Decorate the view that receives a corrected file: the size limit applies before the
    body is read, and CSRF is still checked.

    Django's CSRF middleware reads ``request.POST`` before any view runs, which parses the
    body with the upload handlers of that moment; so the view is exempted from the
    middleware, the limit is put first, and the view is then protected by ``csrf_protect``
    (Django's documented way to change upload handlers in a view). Use it innermost, under
    ``@require_POST``, ``@login_required`` and the permission decorator, and in the view:

        refusal = uploads.upload_refusal(request)
        if refusal is not None:  # nothing of the file was kept; the other fields were
            form.add_error("file", refusal.message)
        else:
            checked = uploads.check_file(request.FILES["file"])

    Put the file input last in the form, so that the fields before it are kept.
    """
    protected = csrf_protect(view)

    @csrf_exempt
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any):
        if request.method == "POST":
            limit_upload(request)
        return protected(request, *args, **kwargs)

    # Outer decorators copy it (functools.wraps): the NUL middleware leaves the body alone.
    wrapped.reads_its_own_body = True  # type: ignore[attr-defined]
    return wrapped
