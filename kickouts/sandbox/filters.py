"""Parse and evaluate EnergyCAP ``filter=`` expressions.

EnergyCAP documents the syntax as ``<field> <operator> '<value>'``, several joined with ``and``,
every value single-quoted (numbers and booleans too). A quote inside a value is written twice
(``'Tom O''Brien'``). ``one of`` and ``between`` take values joined by a pipe (``'a'|'b'``); the
date shortcuts (``today``, ``last 7 days`` ...) take none.

The parser is strict on purpose: a filter it cannot read is refused with :class:`FilterError`
(the API answers 400) rather than ignored, because a filter silently dropped would widen a list
and a client would act on rows it never asked for.

Where the documentation is silent, the sandbox decides, and says so here:

- text compares case-insensitively (EnergyCAP runs on SQL Server, whose default collation does);
  ``like`` is a case-insensitive substring match;
- a row whose field is empty (``batch`` null) matches no condition on that field, as in SQL;
- dates compare as date-times; an offset-less value is UTC, a date-only value is midnight UTC,
  except that ``equals``/``not equals``/``one of`` with a date-only value compare the calendar
  date and a date-only upper bound of ``between`` includes that whole day;
- ``today``/``yesterday`` are UTC calendar days; ``last N days`` is the N*24 hours before now.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any


class FilterError(ValueError):
    """The filter text is not a valid expression; the API answers 400 with this message."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Invalid filter: {detail}")


class FieldKind(Enum):
    TEXT = "text"
    INTEGER = "integer"
    DATE = "date"
    BOOLEAN = "boolean"
    GUID = "guid"


@dataclass(frozen=True)
class FilterField:
    """A field a list endpoint can be filtered on, and how to read it from a row."""

    name: str
    kind: FieldKind
    read: Callable[[Any], Any]


@dataclass(frozen=True)
class DateValue:
    moment: datetime
    date_only: bool


@dataclass(frozen=True)
class Condition:
    field: FilterField
    operator: str
    values: tuple[Any, ...]


DATE_SHORTCUT_DAYS: dict[str, int] = {
    "today": 0,
    "yesterday": 1,
    "last 7 days": 7,
    "last 14 days": 14,
    "last 30 days": 30,
    "last 60 days": 60,
    "last 90 days": 90,
}
ORDERING_OPERATORS = frozenset(
    {"less than", "greater than", "less than equal", "greater than equal", "between"}
)
EQUALITY_OPERATORS = frozenset({"equals", "not equals", "one of"})

# Longest alternatives first, so "less than equal" is not read as "less than" + garbage.
_OPERATOR = re.compile(
    r"(not\s+equals|equals|one\s+of|like|less\s+than\s+equal|greater\s+than\s+equal"
    r"|less\s+than|greater\s+than|between|today|yesterday|last\s+(?:7|14|30|60|90)\s+days)"
    r"(?=\s|'|$)",
    re.IGNORECASE,
)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")


def parse_filter(text: str, fields: Mapping[str, FilterField]) -> list[Condition]:
    """Read a whole filter expression; ``fields`` maps lower-cased field names to fields."""
    conditions: list[Condition] = []
    if not text.strip():
        return conditions
    pos = _skip_space(text, 0)
    while True:
        condition, pos = _parse_condition(text, pos, fields)
        conditions.append(condition)
        if not text[pos:].strip():
            return conditions
        joiner = _AND.match(text, pos)
        if joiner is None:
            raise FilterError(f"unexpected text {_excerpt(text, pos)} after a condition")
        pos = joiner.end()


def matches(conditions: Sequence[Condition], row: Any, now: datetime) -> bool:
    return all(_holds(condition, row, now) for condition in conditions)


def parse_date_value(raw: str) -> DateValue:
    """Accept the shapes EnergyCAP shows: date only, with or without offset and fractions."""
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return DateValue(datetime(day.year, day.month, day.day, tzinfo=UTC), True)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"'{raw}' is not a date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return DateValue(moment, False)


def _parse_condition(
    text: str, pos: int, fields: Mapping[str, FilterField]
) -> tuple[Condition, int]:
    name_match = _FIELD.match(text, pos)
    if name_match is None:
        raise FilterError(f"expected a field name at {_excerpt(text, pos)}")
    field = fields.get(name_match.group().lower())
    if field is None:
        known = ", ".join(sorted(f.name for f in fields.values()))
        raise FilterError(f"unknown field '{name_match.group()}' (known fields: {known})")
    pos = name_match.end()
    if _skip_space(text, pos) == pos:
        raise FilterError(f"expected an operator after '{field.name}'")
    pos = _skip_space(text, pos)
    op_match = _OPERATOR.match(text, pos)
    if op_match is None:
        raise FilterError(f"unknown operator at {_excerpt(text, pos)}")
    operator = " ".join(op_match.group().lower().split())
    pos = op_match.end()
    _check_operator(field, operator)
    if operator in DATE_SHORTCUT_DAYS:
        return Condition(field, operator, ()), pos

    raw_values: list[str] = []
    value, pos = _read_quoted(text, _skip_space(text, pos))
    raw_values.append(value)
    while operator in ("one of", "between"):
        after = _skip_space(text, pos)
        if after >= len(text) or text[after] != "|":
            break
        value, pos = _read_quoted(text, _skip_space(text, after + 1))
        raw_values.append(value)
    if operator == "between" and len(raw_values) != 2:
        raise FilterError(f"'between' needs two values 'low'|'high', got {len(raw_values)}")
    values = tuple(_convert(field, raw) for raw in raw_values)
    return Condition(field, operator, values), pos


def _check_operator(field: FilterField, operator: str) -> None:
    allowed: set[str] = set(EQUALITY_OPERATORS)
    if field.kind in (FieldKind.TEXT, FieldKind.INTEGER, FieldKind.DATE):
        allowed |= ORDERING_OPERATORS
    if field.kind is FieldKind.TEXT:
        allowed.add("like")
    if field.kind is FieldKind.DATE:
        allowed |= set(DATE_SHORTCUT_DAYS)
    if operator not in allowed:
        raise FilterError(f"operator '{operator}' cannot be used on '{field.name}'")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    if pos >= len(text) or text[pos] != "'":
        raise FilterError(f"expected a single-quoted value at {_excerpt(text, pos)}")
    chars: list[str] = []
    index = pos + 1
    while index < len(text):
        char = text[index]
        if char == "'":
            # A doubled quote is a literal quote; a single one ends the value.
            if index + 1 < len(text) and text[index + 1] == "'":
                chars.append("'")
                index += 2
                continue
            return "".join(chars), index + 1
        chars.append(char)
        index += 1
    raise FilterError(f"unterminated quoted value starting at {_excerpt(text, pos)}")


def _convert(field: FilterField, raw: str) -> Any:
    if field.kind is FieldKind.TEXT:
        return raw
    if field.kind is FieldKind.INTEGER:
        if not _INTEGER.fullmatch(raw.strip()):
            raise FilterError(f"'{field.name}' needs a whole number, got '{raw}'")
        return int(raw.strip())
    if field.kind is FieldKind.BOOLEAN:
        lowered = raw.strip().lower()
        if lowered not in ("true", "false"):
            raise FilterError(f"'{field.name}' needs 'true' or 'false', got '{raw}'")
        return lowered == "true"
    if field.kind is FieldKind.GUID:
        try:
            return str(uuid.UUID(raw.strip()))
        except ValueError:
            raise FilterError(f"'{field.name}' needs a GUID, got '{raw}'") from None
    return parse_date_value(raw)


def _holds(condition: Condition, row: Any, now: datetime) -> bool:
    actual = condition.field.read(row)
    if actual is None:
        return False
    kind = condition.field.kind
    operator = condition.operator
    if kind is FieldKind.DATE:
        return _date_holds(operator, condition.values, actual, now)
    if kind is FieldKind.TEXT:
        actual = str(actual).casefold()
        values: tuple[Any, ...] = tuple(str(v).casefold() for v in condition.values)
    elif kind is FieldKind.GUID:
        actual = str(actual).lower()
        values = condition.values
    else:
        values = condition.values
    if operator == "equals":
        return bool(actual == values[0])
    if operator == "not equals":
        return bool(actual != values[0])
    if operator == "one of":
        return actual in values
    if operator == "like":
        return bool(values[0] in actual)
    return _ordered(operator, values, actual)


def _ordered(operator: str, values: tuple[Any, ...], actual: Any) -> bool:
    if operator == "less than":
        return bool(actual < values[0])
    if operator == "greater than":
        return bool(actual > values[0])
    if operator == "less than equal":
        return bool(actual <= values[0])
    if operator == "greater than equal":
        return bool(actual >= values[0])
    if operator == "between":
        return bool(values[0] <= actual <= values[1])
    raise AssertionError(f"unhandled operator {operator}")


def _date_holds(
    operator: str, values: tuple[DateValue, ...], actual: datetime, now: datetime
) -> bool:
    if operator in DATE_SHORTCUT_DAYS:
        days = DATE_SHORTCUT_DAYS[operator]
        if operator in ("today", "yesterday"):
            return actual.astimezone(UTC).date() == now.date() - timedelta(days=days)
        return now - timedelta(days=days) <= actual <= now
    if operator in EQUALITY_OPERATORS:
        hits = [_same_moment(value, actual) for value in values]
        return not hits[0] if operator == "not equals" else any(hits)
    if operator == "between":
        low, high = values
        if high.date_only:
            return low.moment <= actual < high.moment + timedelta(days=1)
        return low.moment <= actual <= high.moment
    return _ordered(operator, tuple(value.moment for value in values), actual)


def _same_moment(value: DateValue, actual: datetime) -> bool:
    if value.date_only:
        return actual.astimezone(UTC).date() == value.moment.date()
    return actual == value.moment


def _excerpt(text: str, pos: int) -> str:
    rest = text[pos : pos + 30]
    return f"'{rest}'" if rest else "the end"
