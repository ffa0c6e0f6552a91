"""The retry history's filters (a django-filter `FilterSet`), and its pages newest first.

Every filter maps onto an index of `RetryAttempt` (see its Meta), so one page is one short
query even over a million records. Pages go by keyset ("older than this row"), never by
OFFSET, and there is no total: an offset deep in the table and a `COUNT(*)` both read every
matching row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

import django_filters
from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from . import batch_modes, overview
from .causes import CAUSE_KEYS, cause_label
from .models import (
    FollowUp,
    ImportSnapshot,
    Kind,
    Outcome,
    RetryAttempt,
    RetryAttemptQuerySet,
    RetrySource,
)

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

    def to_python(self, value: Any) -> Cursor | None:
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

    def to_python(self, value: Any) -> AbstractBaseUser | None:
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

    def validate(self, value: Any) -> None:
        forms.Field.validate(self, value)  # found by to_python: no need to be in the list


class HistoryForm(forms.Form):
    """The filters' form (django-filter adds a field per filter of `HistoryFilter`): the page
    size, the paging cursors, the rules across fields, and links that keep the filters."""

    per_page = forms.TypedChoiceField(
        required=False,
        label="Per page",
        choices=[(size, str(size)) for size in PAGE_SIZES],
        coerce=int,
        empty_value=PAGE_SIZE,  # type: ignore[arg-type]  # django-stubs: str | None; any value works
        error_messages={
            "invalid_choice": f"Choose {', '.join(map(str, PAGE_SIZES[:-1]))} or "
            f"{PAGE_SIZES[-1]} retries a page."
        },
    )
    # Paging, never shown as inputs: changing a filter starts again from the newest.
    before = CursorField(required=False)
    after = CursorField(required=False)

    field_order = list(FILTERS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def clean_date_from(self) -> date | None:
        return _plausible(self.cleaned_data["date_from"])

    def clean_date_to(self) -> date | None:
        return _plausible(self.cleaned_data["date_to"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
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
            name: str(self.data[name]).strip()
            for name in FILTERS
            if name in self.fields and str(self.data.get(name, "")).strip()
        }
        if given.get("per_page") == str(PAGE_SIZE):
            del given["per_page"]
        return given

    def has_filters(self) -> bool:
        """Whether anything narrows the retries (the page size does not)."""
        return any(name != "per_page" for name in self.filter_params())

    def url(self, path: str, **paging: Cursor | None) -> str:
        query = urlencode({**self.filter_params(), **{k: str(v) for k, v in paging.items() if v}})
        return f"{path}?{query}" if query else path


class UserFilter(django_filters.Filter):  # type: ignore[misc]
    field_class = UserChoiceField


class IntegerFilter(django_filters.Filter):  # type: ignore[misc]
    field_class = forms.IntegerField


class HistoryFilter(django_filters.FilterSet):  # type: ignore[misc]
    """What the history page and its CSV are narrowed to. Every filter may stay empty; each
    maps onto an index of `RetryAttempt`."""

    user = UserFilter(
        field_name="requested_by",
        label="Asked by",
        error_messages={
            "invalid_choice": "Choose someone from the list: that user has no retries."
        },
    )
    date_from = django_filters.DateFilter(
        method="filter_date_from",
        label="From",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"invalid": "Enter a date like 2026-11-20."},
    )
    date_to = django_filters.DateFilter(
        method="filter_date_to",
        label="To",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        error_messages={"invalid": "Enter a date like 2026-11-20."},
    )
    kind = django_filters.ChoiceFilter(
        label="Kind",
        choices=Kind.choices,
        empty_label="Re-imports and corrected files",
        error_messages={"invalid_choice": "Choose re-imports or corrected files from the list."},
    )
    outcome = django_filters.ChoiceFilter(
        label="Outcome",
        choices=Outcome.choices,
        empty_label="Any outcome",
        error_messages={"invalid_choice": "Choose an outcome from the list."},
    )
    final_status = django_filters.ChoiceFilter(
        method="filter_final_status",
        label="Final status",
        choices=[],  # per request: `final_status_choices`
        empty_label="Any final status",
        error_messages={"invalid_choice": "No retry’s new task ended “%(value)s”."},
    )
    batch_mode = django_filters.ChoiceFilter(
        label="Batch mode",
        choices=batch_modes.CHOICES,
        empty_label="Any batch mode",
        error_messages={"invalid_choice": "Choose a batch mode from the list."},
    )
    bulk = IntegerFilter(
        label="Bulk retry",
        min_value=1,
        max_value=2_147_483_647,
        error_messages={"invalid": "A bulk retry's number, such as 12."},
    )
    q = django_filters.CharFilter(
        method="filter_search",
        label="Search",
        max_length=200,
        help_text=(
            "An import's number (47223) or GUID (or its start), a whole batch code, or words "
            "from the import note."
        ),
    )
    result = django_filters.ChoiceFilter(
        method="filter_result",
        label="Fixed",
        choices=list(overview.RESULTS.items()),
        empty_label="Any result",
        error_messages={"invalid_choice": "Choose a result from the list."},
    )
    cause = django_filters.ChoiceFilter(
        field_name="comparison__causes__cause",
        label="Cause",
        choices=[(key, cause_label(key)) for key in CAUSE_KEYS],
        empty_label="Any cause",
        help_text="Retries whose source import had rows of this cause.",
        error_messages={"invalid_choice": "Choose a cause from the list."},
    )
    energycap_user = django_filters.CharFilter(
        method="filter_energycap_user",
        label="EnergyCAP user",
        max_length=255,
        help_text="Retries of the imports this EnergyCAP user ran (the queue's filter).",
    )

    class Meta:
        model = RetryAttempt
        fields: list[str] = []
        form = HistoryForm

    def __init__(self, data: Any, *, queryset: RetryAttemptQuerySet, user: Any) -> None:
        super().__init__(data, queryset=queryset)
        if user.has_perm("kickouts.view_all_retries"):
            self.filters["user"].extra["choices"] = [("", "Everyone"), *users_with_retries()]
        else:
            del self.filters["user"]
        self.filters["final_status"].extra["choices"] = final_status_choices()

    def filter_queryset(self, queryset: RetryAttemptQuerySet) -> RetryAttemptQuerySet:
        # The form also holds the page size and the cursors, which narrow nothing.
        data = self.form.cleaned_data
        for name, chosen in self.filters.items():
            queryset = chosen.filter(queryset, data.get(name))
        return queryset

    def filter_date_from(
        self, retries: RetryAttemptQuerySet, name: str, day: date
    ) -> RetryAttemptQuerySet:
        return retries.filter(requested_at__gte=_start_of(day))

    def filter_date_to(
        self, retries: RetryAttemptQuerySet, name: str, day: date
    ) -> RetryAttemptQuerySet:
        return retries.filter(requested_at__lt=_start_of(day + timedelta(1)))

    def filter_final_status(
        self, retries: RetryAttemptQuerySet, name: str, status: str
    ) -> RetryAttemptQuerySet:
        return with_final_status(retries, status)

    def filter_search(
        self, retries: RetryAttemptQuerySet, name: str, term: str
    ) -> RetryAttemptQuerySet:
        return retries.filter(search_condition(term))

    def filter_result(
        self, retries: RetryAttemptQuerySet, name: str, result: str
    ) -> RetryAttemptQuerySet:
        return retries.filter(overview.result_condition(result))

    def filter_energycap_user(
        self, retries: RetryAttemptQuerySet, name: str, full_name: str
    ) -> RetryAttemptQuerySet:
        theirs = ImportSnapshot.objects.filter(user_full_name=full_name.strip())
        return retries.filter(source_task_guid__in=theirs.values("task_guid"))


def _plausible(day: date | None) -> date | None:
    # Also keeps the day's start, as an aware datetime, inside what datetime can hold.
    if day is not None and not EARLIEST_DATE <= day <= LATEST_DATE:
        raise forms.ValidationError(
            f"Enter a date between {EARLIEST_DATE:%Y} and {LATEST_DATE:%Y}.", code="range"
        )
    return day


# -- The new task's reading and the comparison: the only place the filters name their fields.


def with_final_status(retries: RetryAttemptQuerySet, status: str) -> RetryAttemptQuerySet:
    """The retries whose new task is still running, still kicks out some of the source's
    rows, or ended with `status`."""
    if status == STILL_RUNNING:
        return retries.unfinished()
    if status == STILL_KICKING_OUT:
        return retries.filter(comparison__still_count__gt=0)
    return retries.filter(follow_up__status=status, follow_up__finished=True)


def _read_final_statuses(limit: int = 50) -> list[str]:
    # One index probe per distinct status (a "loose index scan" of follow_up_status), where
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


# -- Choices offered, cached for a minute.


def final_statuses() -> list[str]:
    """The statuses new tasks ended with, for the filter's choices; cached for a minute."""
    statuses = cache.get_or_set(
        FINAL_STATUS_CACHE_KEY, _read_final_statuses, FINAL_STATUS_CACHE_SECONDS
    )
    return list(statuses or [])


def final_status_choices() -> list[tuple[str, str]]:
    """Still running, still kicking out, then each status a new task ended with."""
    return [
        (STILL_RUNNING, "Still running"),
        (STILL_KICKING_OUT, "Still kicking out"),
        *((status, status) for status in final_statuses()),
    ]


def users_with_retries() -> list[tuple[int, str]]:
    """(pk, name) of everyone who has retried, for the filter's choices; cached for a minute
    and forgotten when a retry is recorded (`forget_people_with_retries`)."""
    users = cache.get_or_set(USERS_CACHE_KEY, _read_users_with_retries, USERS_CACHE_SECONDS)
    return list(users or [])


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


def _user_label(user: Any) -> str:
    name = user.get_full_name()
    return f"{name} ({user.get_username()})" if name else user.get_username()


def _start_of(day: date) -> datetime:
    """Midnight at the start of `day` in the site's time zone (TIME_ZONE)."""
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_default_timezone())


def search_condition(term: str) -> Q:
    """An import's number or GUID (source or new; a GUID whole or its start), a whole batch
    code, or note words.

    A term that reaches a GUID's first hyphen ("1a2b3c4d-") is only looked up as a GUID or a
    batch code: without the trigram index (SQLite; PostgreSQL has it, migration 0005) searching
    the note reads every row when nothing matches. Shorter terms ("1a2b3c4d", an account
    number) may be note words, so they search the note as well.
    """
    condition = Q(batch_code=term)
    number = import_number(term)
    if number is not None:
        # Clerks know an import by its number: as the retry's source (any of a corrected
        # file's sources) or its new import.
        others = RetrySource.objects.filter(task_id=number).values("retry_id")
        condition |= Q(source_task_id=number) | Q(new_task_id=number) | Q(pk__in=others)
    prefix = guid_prefix(term)
    if prefix:
        condition |= _starts_with("source_task_guid", prefix)
        condition |= _starts_with("new_task_guid", prefix)
    if prefix is None or len(prefix) <= 8:
        condition |= Q(import_note__icontains=term)
    return condition


def import_number(term: str) -> int | None:
    """`term` as an import's number (ASCII digits that fit EnergyCAP's int32), else None."""
    term = term.strip().lstrip("#")
    if not (term.isascii() and term.isdigit() and len(term) <= 10):
        return None
    number = int(term)
    return number if number <= 2_147_483_647 else None


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
    retries: RetryAttemptQuerySet,
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
