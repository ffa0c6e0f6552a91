"""The retry history's filters, and its pages newest first.

Every filter maps onto an index of `RetryAttempt` (see its Meta), so one page is one short
query even over a million records. Pages go by keyset ("older than this row"), never by
OFFSET, and there is no total: an offset deep in the table and a `COUNT(*)` both read every
matching row.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from . import batch_modes, overview
from .causes import CAUSE_KEYS, cause_label
from .models import FollowUp, ImportSnapshot, Kind, Outcome, RetryAttempt

# Rows a page: rendering them is most of the page's time (README, Benchmarks); 25 unless
# the reader chooses more.
PAGE_SIZE = 25
PAGE_SIZES = (25, 50, 100)
STILL_RUNNING = "running"
# Compared, and the new task still kicked out some of the source's rows (kickouts/compare.py).
STILL_KICKING_OUT = "still_kicking_out"
# What links keep; the last, the page size, narrows nothing.
FILTERS = (
    *("user", "date_from", "date_to", "kind", "outcome", "final_status", "batch_mode", "bulk"),
    "q",
    # The overview's links (kickouts/overview.py): what a retry fixed, a cause, whose imports.
    *("result", "cause", "energycap_user"),
    "per_page",
)
FINAL_STATUS_CACHE_KEY = "history:final-statuses"
FINAL_STATUS_CACHE_SECONDS = 60
USERS_CACHE_KEY = "history:users"
USERS_CACHE_SECONDS = 60
EARLIEST_DATE = date(2000, 1, 1)
LATEST_DATE = date(2099, 12, 31)

GUID_SHAPE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
HEX_DIGITS = "0123456789abcdef"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Cursor:
    """A row's place in the newest-first order, as carried in "Older"/"Newer" links."""

    requested_at: datetime
    pk: int

    @classmethod
    def of(cls, retry: RetryAttempt) -> Cursor:
        return cls(retry.requested_at, retry.pk)

    def __str__(self) -> str:
        # Whole microseconds: a float timestamp could round onto a neighbouring row.
        return f"{self.pk}-{(self.requested_at - EPOCH) // timedelta(microseconds=1)}"


class CursorField(forms.Field):
    widget = forms.HiddenInput
    default_error_messages = {
        "invalid": "This page link is broken or out of date; start again from the newest retries."
    }

    def to_python(self, value) -> Cursor | None:
        if value in self.empty_values:
            return None
        match = re.fullmatch(r"([0-9]{1,18})-([0-9]{1,17})", str(value))
        if match is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        try:
            when = EPOCH + timedelta(microseconds=int(match[2]))
        except OverflowError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None
        return Cursor(when, int(match[1]))


class UserChoiceField(forms.ChoiceField):
    """Lists the users who have retries (cached for a minute), but checks a chosen one by
    primary key alone: someone whose first retry is newer than the cached list is still
    found, and checking against the listing's EXISTS query read all of that user's retries."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        value = str(value)
        try:
            if not (value.isascii() and value.isdigit() and len(value) <= 10):
                raise ValueError(value)
            return get_user_model().objects.get(pk=int(value))
        except (TypeError, ValueError, get_user_model().DoesNotExist):
            raise forms.ValidationError(
                self.error_messages["invalid_choice"], code="invalid_choice"
            ) from None

    def validate(self, value):
        forms.Field.validate(self, value)  # found by to_python: no need to be in the list


class HistoryFilterForm(forms.Form):
    """What the history page and its CSV are narrowed to. Every field may stay empty."""

    user = UserChoiceField(
        required=False,
        label="Asked by",
        widget=forms.Select,
        error_messages={
            "invalid_choice": "Choose someone from the list: that user has no retries."
        },
    )
    date_from = forms.DateField(
        required=False,
        label="From",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"invalid": "Enter a date like 2026-11-20."},
    )
    date_to = forms.DateField(
        required=False,
        label="To",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"invalid": "Enter a date like 2026-11-20."},
    )
    kind = forms.ChoiceField(
        required=False,
        widget=forms.Select,
        label="Kind",
        choices=[("", "Re-imports and corrected files"), *Kind.choices],
        error_messages={"invalid_choice": "Choose re-imports or corrected files from the list."},
    )
    outcome = forms.ChoiceField(
        required=False,
        widget=forms.Select,
        choices=[("", "Any outcome"), *Outcome.choices],
        error_messages={"invalid_choice": "Choose an outcome from the list."},
    )
    final_status = forms.ChoiceField(
        required=False,
        widget=forms.Select,
        label="Final status",
        error_messages={"invalid_choice": "No retry’s new task ended “%(value)s”."},
    )
    batch_mode = forms.ChoiceField(
        required=False,
        widget=forms.Select,
        label="Batch mode",
        choices=[("", "Any batch mode"), *batch_modes.CHOICES],
        error_messages={"invalid_choice": "Choose a batch mode from the list."},
    )
    bulk = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=2_147_483_647,
        label="Bulk retry",
        error_messages={"invalid": "A bulk retry's number, such as 12."},
    )
    q = forms.CharField(
        required=False,
        max_length=200,
        label="Search",
        help_text="A task GUID (or its start), a whole batch code, or words from the import note.",
    )
    result = forms.ChoiceField(
        required=False,
        label="Fixed",
        choices=[("", "Any result"), *overview.RESULTS.items()],
        error_messages={"invalid_choice": "Choose a result from the list."},
    )
    cause = forms.ChoiceField(
        required=False,
        label="Cause",
        choices=[("", "Any cause"), *((key, cause_label(key)) for key in CAUSE_KEYS)],
        help_text="Retries whose source import had rows of this cause.",
        error_messages={"invalid_choice": "Choose a cause from the list."},
    )
    energycap_user = forms.CharField(
        required=False,
        max_length=255,
        label="EnergyCAP user",
        help_text="Retries of the imports this EnergyCAP user ran (the queue's filter).",
    )
    per_page = forms.TypedChoiceField(
        required=False,
        label="Per page",
        choices=[(size, str(size)) for size in PAGE_SIZES],
        coerce=int,
        empty_value=PAGE_SIZE,
        error_messages={
            "invalid_choice": f"Choose {', '.join(map(str, PAGE_SIZES[:-1]))} or "
            f"{PAGE_SIZES[-1]} retries a page."
        },
    )
    # Paging, never shown as inputs: changing a filter starts again from the newest.
    before = CursorField(required=False)
    after = CursorField(required=False)

    def __init__(self, data, *, user, **kwargs):
        super().__init__(data, label_suffix="", **kwargs)
        if user.has_perm("kickouts.view_all_retries"):
            self.fields["user"].choices = [("", "Everyone"), *users_with_retries()]
        else:
            del self.fields["user"]
        self.fields["final_status"].choices = [
            ("", "Any final status"),
            (STILL_RUNNING, "Still running"),
            (STILL_KICKING_OUT, "Still kicking out"),
            *((status, status) for status in final_statuses()),
        ]

    def clean_date_from(self):
        return _plausible(self.cleaned_data["date_from"])

    def clean_date_to(self):
        return _plausible(self.cleaned_data["date_to"])

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "Choose a day on or after “From”.")
        if data.get("before") and data.get("after"):
            self.add_error("after", self.fields["after"].error_messages["invalid"])
        return data

    def filter_params(self) -> dict[str, str]:
        """The filters as given, empty ones (and the default page size) left out: for links
        that keep them."""
        given = {
            name: self.data[name].strip()
            for name in FILTERS
            if name in self.fields and self.data.get(name, "").strip()
        }
        if given.get("per_page") == str(PAGE_SIZE):
            del given["per_page"]
        return given

    @property
    def fields_version(self) -> str:
        """What the filter fields' HTML depends on (for the template's {% cache %}): the values
        given, the choices offered and which fields have errors."""
        given = [(name, self.data.get(name, "")) for name in self.fields if name in FILTERS]
        offered = [getattr(field, "choices", None) for field in self.fields.values()]
        state = repr((given, offered, sorted(self.errors)))
        return hashlib.sha256(state.encode()).hexdigest()[:32]

    def has_filters(self) -> bool:
        """Whether anything narrows the retries (the page size does not)."""
        return any(name != "per_page" for name in self.filter_params())

    def url(self, path: str, **paging) -> str:
        query = urlencode({**self.filter_params(), **{k: v for k, v in paging.items() if v}})
        return f"{path}?{query}" if query else path


def _plausible(day: date | None) -> date | None:
    # Also keeps the day's start, as an aware datetime, inside what datetime can hold.
    if day is not None and not EARLIEST_DATE <= day <= LATEST_DATE:
        raise forms.ValidationError(
            f"Enter a date between {EARLIEST_DATE:%Y} and {LATEST_DATE:%Y}.", code="range"
        )
    return day


def users_with_retries() -> list[tuple[int, str]]:
    """(pk, name) of everyone who has retried, for the filter's choices; cached for a minute
    and forgotten when a retry is recorded (`forget_people_with_retries`)."""
    return cache.get_or_set(USERS_CACHE_KEY, _read_users_with_retries, USERS_CACHE_SECONDS)


def forget_people_with_retries() -> None:
    """After a retry is recorded: its user may be new to the list."""
    cache.delete(USERS_CACHE_KEY)


def _read_users_with_retries() -> list[tuple[int, str]]:
    # EXISTS is one probe of the (requested_by, requested_at) index per user, where a join
    # with DISTINCT would read every retry.
    retries = RetryAttempt.objects.filter(requested_by=OuterRef("pk"))
    users = (
        get_user_model()
        .objects.filter(Exists(retries))
        .order_by("first_name", "last_name", "username")
    )
    return [(user.pk, _user_label(user)) for user in users]


def _user_label(user) -> str:
    name = user.get_full_name()
    return f"{name} ({user.get_username()})" if name else user.get_username()


def final_statuses() -> list[str]:
    """The statuses new tasks ended with, for the filter's choices; cached for a minute."""
    return cache.get_or_set(
        FINAL_STATUS_CACHE_KEY, _read_final_statuses, FINAL_STATUS_CACHE_SECONDS
    )


def _read_final_statuses(limit: int = 50) -> list[str]:
    # One index probe per distinct status (a "loose index scan" of retry_final_time), where
    # SELECT DISTINCT reads the whole table.
    finished = FollowUp.objects.filter(finished=True).order_by("status")
    statuses: list[str] = []
    while len(statuses) < limit:
        after = statuses[-1] if statuses else ""
        status = finished.filter(status__gt=after).values_list("status", flat=True).first()
        if status is None:
            break
        statuses.append(status)
    return statuses


def filter_retries(retries: QuerySet, filters: dict) -> QuerySet:
    """`retries` narrowed by a valid form's `cleaned_data`."""
    if filters.get("user"):
        retries = retries.filter(requested_by=filters["user"])
    if filters.get("date_from"):
        retries = retries.filter(requested_at__gte=_start_of(filters["date_from"]))
    if filters.get("date_to"):
        retries = retries.filter(requested_at__lt=_start_of(filters["date_to"] + timedelta(1)))
    if filters.get("kind"):
        retries = retries.filter(kind=filters["kind"])
    if filters.get("outcome"):
        retries = retries.filter(outcome=filters["outcome"])
    if filters.get("final_status") == STILL_RUNNING:
        retries = retries.unfinished()
    elif filters.get("final_status") == STILL_KICKING_OUT:
        retries = retries.filter(comparison__still_count__gt=0)
    elif filters.get("final_status"):
        retries = retries.filter(
            follow_up__status=filters["final_status"], follow_up__finished=True
        )
    if filters.get("batch_mode"):
        retries = retries.filter(batch_mode=filters["batch_mode"])
    if filters.get("bulk"):
        retries = retries.filter(bulk_id=filters["bulk"])
    if filters.get("q"):
        retries = retries.filter(search_condition(filters["q"]))
    if filters.get("result"):
        retries = retries.filter(overview.result_condition(filters["result"]))
    if filters.get("cause"):
        retries = retries.filter(comparison__causes__cause=filters["cause"])
    if filters.get("energycap_user"):
        theirs = ImportSnapshot.objects.filter(user_full_name=filters["energycap_user"])
        retries = retries.filter(source_task_guid__in=theirs.values("task_guid"))
    return retries


def _start_of(day: date) -> datetime:
    """Midnight at the start of `day` in the site's time zone (TIME_ZONE)."""
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_default_timezone())


def search_condition(term: str) -> Q:
    """A task GUID (source or new, whole or its start), a whole batch code, or note words.

    A term that reaches a GUID's first hyphen ("1a2b3c4d-") is only looked up as a GUID or a
    batch code: without the trigram index (SQLite; PostgreSQL has it, migration 0005) searching
    the note reads every row when nothing matches. Shorter terms ("1a2b3c4d", an account
    number) may be note words, so they search the note as well.
    """
    condition = Q(batch_code=term)
    prefix = guid_prefix(term)
    if prefix:
        condition |= _starts_with("source_task_guid", prefix)
        condition |= _starts_with("new_task_guid", prefix)
    if prefix is None or len(prefix) <= 8:
        condition |= Q(import_note__icontains=term)
    return condition


def guid_prefix(term: str) -> str | None:
    """`term` in lower case if it is the start of a GUID, else None."""
    term = term.lower()
    if not term or len(term) > len(GUID_SHAPE):
        return None
    for char, shape in zip(term, GUID_SHAPE, strict=False):
        fits = char == "-" if shape == "-" else char in HEX_DIGITS
        if not fits:
            return None
    return term


def _starts_with(field: str, prefix: str) -> Q:
    # PostgreSQL uses a plain b-tree index for LIKE 'abc%' only under the C collation; the
    # same prefix as a range uses it under any collation, because every GUID has its hyphens
    # in the same places and hex digits sort alike everywhere. LIKE keeps the match exact.
    condition = Q(**{f"{field}__gte": prefix, f"{field}__startswith": prefix})
    beyond = _first_after(prefix)
    if beyond:
        condition &= Q(**{f"{field}__lt": beyond})
    return condition


def _first_after(prefix: str) -> str | None:
    """The smallest string above every GUID starting with `prefix` ("ab3f" → "ab4")."""
    digits = prefix
    while digits:
        last = digits[-1]
        digits = digits[:-1]
        if last == "-" or last == "f":
            continue
        return digits + HEX_DIGITS[HEX_DIGITS.index(last) + 1]
    return None


@dataclass
class HistoryPage:
    retries: list[RetryAttempt]
    newer: Cursor | None  # link to the page before this one (None on the newest page)
    older: Cursor | None  # link to the page after this one (None on the last page)


def newest_first_page(
    retries: QuerySet,
    *,
    before: Cursor | None = None,
    after: Cursor | None = None,
    size: int = PAGE_SIZE,
) -> HistoryPage:
    """One page of `retries` newest first: the first, or the one older than `before`, or the
    one newer than `after`. Asks for one row more than it shows, to know if there is more."""
    if after is not None:
        rows = list(retries.filter(_newer_than(after)).order_by("requested_at", "id")[: size + 1])
        has_newer, has_older = len(rows) > size, True
        rows = rows[:size][::-1]
    else:
        if before is not None:
            retries = retries.filter(_older_than(before))
        rows = list(retries.order_by("-requested_at", "-id")[: size + 1])
        has_newer, has_older = before is not None, len(rows) > size
        rows = rows[:size]
    return HistoryPage(
        retries=rows,
        newer=Cursor.of(rows[0]) if rows and has_newer else None,
        older=Cursor.of(rows[-1]) if rows and has_older else None,
    )


# The redundant `requested_at__lte/gte` lets the database start the index scan at the cursor
# instead of filtering every newer row out of it.
def _older_than(cursor: Cursor) -> Q:
    return Q(requested_at__lte=cursor.requested_at) & (
        Q(requested_at__lt=cursor.requested_at) | Q(pk__lt=cursor.pk)
    )


def _newer_than(cursor: Cursor) -> Q:
    return Q(requested_at__gte=cursor.requested_at) & (
        Q(requested_at__gt=cursor.requested_at) | Q(pk__gt=cursor.pk)
    )
