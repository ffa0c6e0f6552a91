"""Typed objects parsed from EnergyCAP's JSON at the edge.

Parsing is tolerant, as ../shared/energycap-api.md asks: unknown properties are
ignored, missing optional ones and null objects become None or empty values,
statuses are an open set, and dates come with or without offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

KICKOUTS_STATUS = "Completed with kickouts"
BILL_IMPORT = "BillImport"
# Status badges' CSS keys; the statuses EnergyCAP may send are an open set ("other").
STATUS_KEYS = {
    "completed with kickouts": "kickouts",
    "completed": "completed",
    "failed": "failed",
    "processing": "running",
}

T = TypeVar("T")

# .NET writes up to 7 fractional digits; Python parses at most 6.
_FRACTION = re.compile(r"(\.\d{6})\d+")


class MalformedPayload(ValueError):
    """EnergyCAP answered with JSON of an unexpected shape."""


def parse_datetime(value: Any, assumed_zone: str = "UTC") -> datetime | None:
    """Parse an EnergyCAP date-time; offset-less values are taken to be in `assumed_zone`."""
    if not value or not isinstance(value, str):
        return None
    try:
        # Python reads most of EnergyCAP's dates as they come (7 fractional digits too);
        # the clean-up below is for the rest, and costs more than the parse itself.
        parsed = datetime.fromisoformat(value)
    except ValueError:
        text = _FRACTION.sub(r"\1", value.strip())
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(assumed_zone))
    return parsed


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


@dataclass(frozen=True)
class UserRef:
    user_id: int | None
    user_code: str
    full_name: str

    @classmethod
    def from_json(cls, data: Any) -> UserRef | None:
        data = _dict(data)
        if not data:
            return None
        code = _str(data.get("userCode"))
        return cls(
            user_id=_int(data.get("userId")),
            user_code=code,
            full_name=_str(data.get("fullName")) or code,
        )


@dataclass(frozen=True)
class BatchRef:
    batch_id: int | None
    batch_code: str

    @classmethod
    def from_json(cls, data: Any) -> BatchRef | None:
        data = _dict(data)
        if not data:
            return None
        return cls(batch_id=_int(data.get("batchId")), batch_code=_str(data.get("batchCode")))


@dataclass(frozen=True)
class Task:
    task_id: int | None
    guid: str
    task_type_code: str
    task_type_info: str
    begin_date: datetime | None
    end_date: datetime | None
    user: UserRef | None
    message: str
    status: str
    task_note: str
    analyzing_count: int | None
    unresolved_flag_count: int | None
    current_success_count: int | None
    batch: BatchRef | None

    @classmethod
    def from_json(cls, data: Any, assumed_zone: str = "UTC") -> Task:
        if not isinstance(data, dict):
            raise MalformedPayload("a task was not a JSON object")
        guid = _str(data.get("taskGUId") or data.get("taskGuid") or data.get("taskGUID"))
        if not guid:
            raise MalformedPayload("a task had no taskGUId")
        task_type = _dict(data.get("taskType"))
        return cls(
            task_id=_int(data.get("taskId")),
            guid=guid.lower(),
            task_type_code=_str(task_type.get("taskTypeCode")),
            task_type_info=_str(task_type.get("taskTypeInfo")),
            begin_date=parse_datetime(data.get("beginDate"), assumed_zone),
            end_date=parse_datetime(data.get("endDate"), assumed_zone),
            user=UserRef.from_json(data.get("user")),
            message=_str(data.get("message")),
            status=_str(data.get("status")),
            task_note=_str(data.get("taskNote")),
            analyzing_count=_int(data.get("analyzingCount")),
            unresolved_flag_count=_int(data.get("unresolvedFlagCount")),
            current_success_count=_int(data.get("currentSuccessCount")),
            batch=BatchRef.from_json(data.get("batch")),
        )

    @property
    def is_running(self) -> bool:
        # EnergyCAP documents an empty endDate while a task runs; status strings
        # other than "Completed with kickouts" are not published.
        return self.end_date is None

    @property
    def is_bill_import(self) -> bool:
        return self.task_type_code.lower() == BILL_IMPORT.lower()

    @property
    def has_kickouts(self) -> bool:
        return self.status.strip().lower() == KICKOUTS_STATUS.lower()

    @property
    def can_retry_kickouts(self) -> bool:
        return self.is_bill_import and self.has_kickouts and not self.is_running

    @property
    def status_key(self) -> str:
        """A CSS-safe key for the status badge; unknown statuses share one look."""
        if self.is_running:
            return "running"
        return STATUS_KEYS.get(self.status.strip().lower(), "other")

    @property
    def elapsed_seconds(self) -> float | None:
        if self.begin_date is None:
            return None
        end = self.end_date or datetime.now(UTC)
        return max(0.0, (end - self.begin_date).total_seconds())


@dataclass(frozen=True)
class Batch:
    batch_id: int
    batch_code: str
    is_open: bool
    batch_status: str
    bill_count: int | None
    note: str
    created_by: UserRef | None
    start_date: datetime | None

    @classmethod
    def from_json(cls, data: Any, assumed_zone: str = "UTC") -> Batch:
        data = _dict(data)
        batch_id = _int(data.get("batchId"))
        if batch_id is None:
            raise MalformedPayload("a batch had no batchId")
        status = _str(data.get("batchStatus"))
        is_open = data.get("isOpen")
        return cls(
            batch_id=batch_id,
            batch_code=_str(data.get("batchCode")),
            is_open=bool(is_open) if is_open is not None else status.lower() == "open",
            batch_status=status,
            bill_count=_int(data.get("billCount")),
            note=_str(data.get("note")),
            created_by=UserRef.from_json(data.get("createdBy")),
            start_date=parse_datetime(data.get("startDate"), assumed_zone),
        )

    @property
    def is_pending(self) -> bool:
        return self.batch_status.strip().lower() == "pending"

    @property
    def is_closed(self) -> bool:
        return self.batch_status.strip().lower() == "closed" or (
            not self.is_open and not self.is_pending
        )

    @property
    def owner_name(self) -> str:
        return self.created_by.full_name if self.created_by else "unknown owner"

    def is_owned_by(self, user_id: int | None) -> bool:
        return bool(self.created_by and user_id is not None and self.created_by.user_id == user_id)


@dataclass(frozen=True)
class KickoutSummary:
    file_name: str
    kickout_messages: list[str]

    @classmethod
    def from_json(cls, data: Any) -> KickoutSummary:
        data = _dict(data)
        messages = data.get("kickoutMessages")
        return cls(
            file_name=_str(data.get("fileName")),
            kickout_messages=[_str(m) for m in messages] if isinstance(messages, list) else [],
        )


@dataclass(frozen=True)
class KickoutGrid:
    """The kickout detail grid, with columns resolved by name.

    EnergyCAP's column ids are not stable between calls, so rows are keyed by
    the column's name, never by its id.
    """

    columns: list[str]
    rows: list[dict[str, str]]

    @classmethod
    def from_json(cls, data: Any) -> KickoutGrid:
        data = _dict(data)
        fields = data.get("fields") if isinstance(data.get("fields"), list) else []
        names = {}
        for item in fields:
            item = _dict(item)
            if _int(item.get("id")) is not None:
                names[_int(item.get("id"))] = _str(item.get("name"))
        rows = []
        raw_rows = data.get("data") if isinstance(data.get("data"), list) else []
        for raw_row in raw_rows:
            row = {}
            for cell in raw_row if isinstance(raw_row, list) else []:
                cell = _dict(cell)
                name = names.get(_int(cell.get("fieldId")))
                if name:
                    row[name] = _str(cell.get("value"))
            rows.append(row)
        return cls(columns=list(names.values()), rows=rows)


@dataclass(frozen=True)
class CurrentUser:
    user_id: int | None
    user_code: str
    full_name: str
    can_view_bills: bool
    can_create_bills: bool
    can_manage_bills: bool

    @classmethod
    def from_json(cls, data: Any) -> CurrentUser:
        data = _dict(data)
        perms = _dict(_dict(data.get("permissions")).get("billsAndBatches"))
        return cls(
            user_id=_int(data.get("systemUserId")),
            user_code=_str(data.get("systemUserCode")),
            full_name=_str(data.get("fullName")),
            can_view_bills=perms.get("view") is True,
            can_create_bills=perms.get("create") is True,
            can_manage_bills=perms.get("manage") is True,
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page_number: int
    page_size: int
    total_records: int | None
    total_pages: int | None

    @property
    def has_next(self) -> bool:
        if self.total_pages is not None:
            return self.page_number < self.total_pages
        return len(self.items) >= self.page_size

    @property
    def has_previous(self) -> bool:
        return self.page_number > 1


@dataclass(frozen=True)
class NewTask:
    """EnergyCAP's answer to the kickout re-import: the new task's GUID."""

    guid: str
    raw: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ImportProfile:
    """A bill import profile: what maps a file's columns. Sent as `profileCode`.

    EnergyCAP's SDK lists profiles but the properties of each are not confirmed: the id,
    code and name are looked for under the spellings its other resources use, and anything
    else is ignored.
    """

    profile_id: int | None
    code: str
    name: str

    @classmethod
    def from_json(cls, data: Any) -> ImportProfile | None:
        """The profile, or None when the entry has no usable code."""
        data = _dict(data)
        code = _first_text(data, "profileCode", "importProfileCode", "code")
        if not code:
            return None
        return cls(
            profile_id=_first_int(data, "importProfileId", "profileId", "id"),
            code=code,
            name=_first_text(
                data, "profileName", "importProfileName", "name", "profileInfo", "description"
            )
            or code,
        )

    @property
    def label(self) -> str:
        return self.name if self.name == self.code else f"{self.name} ({self.code})"


def _first_text(data: dict, *names: str) -> str:
    """The first of `names` (compared case-insensitively) holding non-blank text or a number."""
    lowered = {str(key).lower(): value for key, value in data.items()}
    for name in names:
        value = lowered.get(name.lower())
        if isinstance(value, bool) or value is None or isinstance(value, dict | list):
            continue
        text = str(value).strip()
        if text:
            return text
    return ""


def _first_int(data: dict, *names: str) -> int | None:
    lowered = {str(key).lower(): value for key, value in data.items()}
    for name in names:
        value = _int(lowered.get(name.lower()))
        if value is not None:
            return value
    return None
