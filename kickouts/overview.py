"""The supervisor's overview: where the kickouts come from and what the team's work fixed.

Everything is read from the dashboard's own records, with aggregate queries (the database
groups and sums; Python only arranges the few grouped rows into charts):

- imports of the period: the queue's stored imports (`ImportSnapshot`, ready) begun in it,
  optionally of one EnergyCAP user — the queue's own filters;
- retries of the period: those asked for in it (the history's date filter), the viewer's own
  unless they may see everyone's, and with an EnergyCAP user, those of that user's imports.

A cause is `causes.cause_key` of a row's message, stored with the row; the per-cause counts
are the small tables of kickouts/overview_models.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import cast

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    When,
    Window,
)
from django.db.models.functions import RowNumber, Trunc
from django.utils import timezone

from .causes import CAUSE_KEYS, cause_key, cause_label
from .models import (
    BulkRetry,
    CompareState,
    Comparison,
    ComparisonCause,
    HandledChange,
    ImportCause,
    ImportSnapshot,
    KickoutRow,
    Kind,
    Outcome,
    RetryAttempt,
    SnapshotState,
)
from .overview_models import comparison_causes, import_causes
from .queue_models import ImportSnapshotQuerySet

# The overview's periods, in days: the last 30, 90 or 365, today included.
PERIODS = {"30": 30, "90": 90, "365": 365}
DEFAULT_PERIOD = "30"
# Open rows are drawn per day over a month, per week over longer periods.
DAILY_UP_TO_DAYS = 31
OLDEST_OPEN_SHOWN = 5
# At a year of a large team's records the figures take about a second to add up (README,
# Benchmarks): the page keeps them this long per period, EnergyCAP user and viewer's scope.
CACHE_SECONDS = 300

# -- what a retry's before and after says (one definition: the overview and the history) --

EVERYTHING, SOME, NOTHING, FAILED, UNKNOWN = "everything", "some", "nothing", "failed", "unknown"
RESULTS = {
    EVERYTHING: "fixed everything",
    SOME: "fixed some",
    NOTHING: "fixed nothing",
    FAILED: "failed",
    UNKNOWN: "unknown or not compared",
}
DID_NOT_IMPORT = [Outcome.REJECTED, Outcome.NOT_SENT, Outcome.NONE_IMPORTED]


def result_condition(result: str, *, retry: str = "", comparison: str = "comparison__") -> Q:
    """The retries a result counts; `retry` and `comparison` are the paths to the retry and
    its comparison from the model queried. Fixed everything, some or nothing: compared, by
    its source rows still kicked out and fixed; failed: refused, not sent, nothing imported or
    the new import failed; unknown: every other (outcome unknown, still running, not
    compared)."""
    state, still, fixed = (f"{comparison}{name}" for name in ("state", "still", "fixed"))
    compared = Q(**{state: CompareState.COMPARED})
    failed = Q(**{f"{retry}outcome__in": DID_NOT_IMPORT}) | Q(
        **{state: CompareState.NEW_TASK_FAILED}
    )
    if result == EVERYTHING:
        return compared & Q(**{f"{still}_count": 0})
    if result == SOME:
        return compared & Q(**{f"{still}_count__gt": 0, f"{fixed}_count__gt": 0})
    if result == NOTHING:
        return compared & Q(**{f"{still}_count__gt": 0, f"{fixed}_count": 0})
    if result == FAILED:
        return failed
    return ~compared & ~failed


# -- re-imports and corrected files ---------------------------------------------------

REIMPORT, CORRECTED_FILE = Kind.REIMPORT, Kind.CORRECTED_FILE


def of_kind(kind: str, prefix: str = "") -> Q:
    """The retries of one kind: a re-import of the kickouts, or an import of corrected files."""
    return Q(**{f"{prefix}kind": kind})


# -- the filters -------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """A day or a week of a chart: its first and last day, clipped to the period."""

    first: date
    last: date

    @property
    def label(self) -> str:
        if self.first == self.last:
            return f"{self.first:%b} {self.first.day}"
        return f"{self.first:%b} {self.first.day}–{self.last:%b} {self.last.day}"

    @property
    def short_label(self) -> str:
        """Under a chart's bar: its first day (the table beside it has the whole week)."""
        return f"{self.first:%b} {self.first.day}"


def start_of(day: date) -> datetime:
    """Midnight at the start of `day` in the site's time zone (as the history's date filter)."""
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_default_timezone())


@dataclass(frozen=True)
class OverviewFilter:
    """The period and the EnergyCAP user chosen; `today` is the period's last day."""

    period: str = DEFAULT_PERIOD
    user: str = ""
    today: date = field(default_factory=timezone.localdate)

    @classmethod
    def from_query(cls, query) -> OverviewFilter:
        period = query.get("period", DEFAULT_PERIOD)
        return cls(
            period=period if period in PERIODS else DEFAULT_PERIOD,
            user=query.get("user", "").strip()[:255],
        )

    @property
    def days(self) -> int:
        return PERIODS[self.period]

    @property
    def first_day(self) -> date:
        return self.today - timedelta(days=self.days - 1)

    @property
    def since(self) -> datetime:
        return start_of(self.first_day)

    @property
    def daily(self) -> bool:
        return self.days <= DAILY_UP_TO_DAYS

    def buckets(self, daily: bool) -> list[Bucket]:
        """The period's days, or its weeks (Monday to Sunday, the first and last clipped)."""
        if daily:
            days = (self.first_day + timedelta(n) for n in range(self.days))
            return [Bucket(day, day) for day in days]
        monday = self.first_day - timedelta(days=self.first_day.weekday())
        weeks = []
        while monday <= self.today:
            weeks.append(
                Bucket(max(monday, self.first_day), min(monday + timedelta(6), self.today))
            )
            monday += timedelta(7)
        return weeks

    def imports(self) -> ImportSnapshotQuerySet:
        """The stored imports of the period (the queue's, open and handled)."""
        found = ImportSnapshot.objects.filter(state=SnapshotState.READY, begin_date__gte=self.since)
        return found.filter(user_full_name=self.user) if self.user else found

    def retry_condition(self, viewer, prefix: str = "") -> Q:
        """The retries of the period this viewer may count (`prefix` reaches the retry)."""
        condition = Q(**{f"{prefix}requested_at__gte": self.since})
        if not viewer.has_perm("kickouts.view_all_retries"):
            condition &= Q(**{f"{prefix}requested_by": viewer})
        if self.user:
            theirs = ImportSnapshot.objects.filter(user_full_name=self.user).values("task_guid")
            condition &= Q(**{f"{prefix}source_task_guid__in": theirs})
        return condition

    def retries(self, viewer) -> QuerySet[RetryAttempt]:
        return RetryAttempt.objects.filter(self.retry_condition(viewer))


# -- the figures ----------------------------------------------------------------------


@dataclass
class CauseSeries:
    key: str
    values: list[int]

    @property
    def label(self) -> str:
        return cause_label(self.key)


@dataclass
class OpenRows:
    """Open kickout rows at the end of each bucket, by cause (the period's imports)."""

    buckets: list[Bucket]
    series: list[CauseSeries]

    @property
    def totals(self) -> list[int]:
        return [sum(values) for values in zip(*(s.values for s in self.series), strict=True)] or [
            0
        ] * len(self.buckets)


@dataclass
class ImportWeek:
    bucket: Bucket
    imports: int
    cleared: int

    @property
    def share(self) -> float | None:
        return self.cleared / self.imports if self.imports else None


@dataclass
class RetryWeek:
    bucket: Bucket
    counts: dict[str, int]  # by result
    rows_fixed: int

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class CauseLine:
    key: str
    kicked_out: int = 0
    fixed_by_reimport: int = 0
    fixed_by_corrected_file: int = 0
    still_open: int = 0
    median_days: float | None = None

    @property
    def label(self) -> str:
        return cause_label(self.key)


@dataclass
class PersonLine:
    user_id: int
    name: str
    retries: int = 0
    bulks: int = 0
    rows_fixed: int = 0
    handled: int = 0


@dataclass
class WastedLine:
    """Re-imports that fixed none of their rows of one cause: the file needed correcting."""

    key: str
    retries: int
    rows: int

    @property
    def label(self) -> str:
        return cause_label(self.key)


@dataclass
class Overview:
    chosen: OverviewFilter
    sees_everyone: bool
    open_rows: OpenRows
    imports: list[ImportWeek]
    retries: list[RetryWeek]
    causes: list[CauseLine]
    people: list[PersonLine]
    wasted: list[WastedLine]
    unclassified: bool
    computed_at: datetime = field(default_factory=timezone.now)


def _index(buckets: list[Bucket], moment: datetime | date) -> int:
    """Which bucket a truncated date falls in (-1 before the first, len after the last)."""
    day = timezone.localtime(moment).date() if isinstance(moment, datetime) else moment
    if day < buckets[0].first:
        return -1
    for number, bucket in enumerate(buckets):
        if day <= bucket.last:
            return number
    return len(buckets)


def _trunc(name: str, daily: bool) -> Trunc:
    return Trunc(name, "day" if daily else "week", output_field=DateTimeField())


def rows_left_condition() -> Exists:
    """An import one of whose compared re-imports left rows (still kicked out, or new)."""
    return Exists(
        Comparison.objects.filter(
            retry__source_task_guid=OuterRef("task_guid"), state=CompareState.COMPARED
        ).filter(Q(still_count__gt=0) | Q(new_count__gt=0))
    )


def cleared_condition() -> Q:
    """Cleared: handled (by a person, or by a re-import), unless a re-import left rows."""
    return ~Q(handled_reason="") & ~Q(rows_left_condition())


def open_rows(chosen: OverviewFilter, at: datetime | None = None) -> OpenRows:
    """Each bucket's open rows by cause: rows arrive with their import's begin, leave when
    it is marked handled and come back when it is reopened (`HandledChange`); the sums of
    these moves per bucket, added up in order. The last bucket is the queue's open rows."""
    daily = chosen.daily
    buckets = chosen.buckets(daily)
    imports = chosen.imports()
    arrivals = (
        ImportCause.objects.filter(snapshot__in=imports)
        .annotate(bucket=_trunc("snapshot__begin_date", daily))
        .values("bucket", "cause")
        .annotate(moved=Sum("rows"))
        .order_by()
    )
    closing = Q(from_reason="") & ~Q(to_reason="")
    reopening = ~Q(from_reason="") & Q(to_reason="")
    changes = HandledChange.objects.filter(snapshot__in=imports).filter(closing | reopening)
    if at is not None:
        changes = changes.filter(changed_at__lte=at)
        arrivals = arrivals.filter(snapshot__begin_date__lte=at)
    moves = (
        changes.annotate(bucket=_trunc("changed_at", daily), cause=F("snapshot__causes__cause"))
        .values("bucket", "cause")
        .annotate(
            moved=Sum(
                Case(
                    When(closing, then=-F("snapshot__causes__rows")),
                    default=F("snapshot__causes__rows"),
                    output_field=IntegerField(),
                )
            )
        )
        .order_by()
    )
    deltas: dict[str, list[int]] = {}
    for row in [*arrivals, *moves]:
        if row["cause"] is None:
            continue
        place = max(0, min(_index(buckets, row["bucket"]), len(buckets) - 1))
        deltas.setdefault(row["cause"], [0] * len(buckets))[place] += row["moved"]
    series = []
    for key in _ordered(deltas):
        running, values = 0, []
        for delta in deltas[key]:
            running += delta
            values.append(running)
        series.append(CauseSeries(key, values))
    return OpenRows(buckets, series)


def _ordered(keys) -> list[str]:
    """Causes in the table's order (unknown keys, from an older table, at the end)."""
    return sorted(
        keys, key=lambda k: (CAUSE_KEYS.index(k) if k in CAUSE_KEYS else len(CAUSE_KEYS), k)
    )


def imports_by_week(chosen: OverviewFilter) -> list[ImportWeek]:
    buckets = chosen.buckets(daily=False)
    weeks = [ImportWeek(bucket, 0, 0) for bucket in buckets]
    counted = (
        chosen.imports()
        .annotate(bucket=_trunc("begin_date", daily=False))
        .values("bucket")
        .annotate(imports=Count("id"), cleared=Count("id", filter=cleared_condition()))
        .order_by()
    )
    for row in counted:
        week = weeks[max(0, min(_index(buckets, row["bucket"]), len(weeks) - 1))]
        week.imports += row["imports"]
        week.cleared += row["cleared"]
    return weeks


def _retry_counts(chosen: OverviewFilter, viewer) -> list[dict]:
    """One pass over the period's retries: per week and person, the count of each result,
    rows fixed, and how many."""
    counts = {result: Count("id", filter=result_condition(result)) for result in RESULTS}
    return list(
        chosen.retries(viewer)
        .annotate(bucket=_trunc("requested_at", daily=False))
        .values("bucket", "requested_by")
        .annotate(**counts, fixed=Sum("comparison__fixed_count"), retries=Count("id"))
        .order_by()
    )


def retries_by_week(chosen: OverviewFilter, grouped: list[dict]) -> list[RetryWeek]:
    buckets = chosen.buckets(daily=False)
    weeks = [RetryWeek(bucket, dict.fromkeys(RESULTS, 0), 0) for bucket in buckets]
    for row in grouped:
        week = weeks[max(0, min(_index(buckets, row["bucket"]), len(weeks) - 1))]
        for result in RESULTS:
            week.counts[result] += row[result]
        week.rows_fixed += row["fixed"] or 0
    return weeks


def by_cause(chosen: OverviewFilter, viewer) -> tuple[list[CauseLine], list[WastedLine]]:
    """Per cause: rows kicked out and still open (the period's imports), rows fixed by each
    kind of retry, the median wait from import to cleared; and the wasted re-imports."""
    lines: dict[str, CauseLine] = {}

    def line(key: str) -> CauseLine:
        return lines.setdefault(key, CauseLine(key))

    imports = chosen.imports()
    for row in (
        ImportCause.objects.filter(snapshot__in=imports)
        .values("cause")
        .annotate(kicked=Sum("rows"), open=Sum("rows", filter=Q(snapshot__handled_reason="")))
        .order_by()
    ):
        line(row["cause"]).kicked_out = row["kicked"]
        line(row["cause"]).still_open = row["open"] or 0
    in_period = chosen.retry_condition(viewer, prefix="comparison__retry__")
    via = "comparison__retry__"
    wasted_retry = result_condition(NOTHING, retry=via) & of_kind(REIMPORT, prefix=via)
    wasted = []
    for row in (
        ComparisonCause.objects.filter(in_period, comparison__state=CompareState.COMPARED)
        .values("cause")
        .annotate(
            reimport=Sum("fixed", filter=of_kind(REIMPORT, prefix=via)),
            corrected=Sum("fixed", filter=of_kind(CORRECTED_FILE, prefix=via)),
            wasted_retries=Count("id", filter=wasted_retry),
            wasted_rows=Sum("before", filter=wasted_retry),
        )
        .order_by()
    ):
        line(row["cause"]).fixed_by_reimport = row["reimport"] or 0
        line(row["cause"]).fixed_by_corrected_file = row["corrected"] or 0
        if row["wasted_retries"]:
            wasted.append(WastedLine(row["cause"], row["wasted_retries"], row["wasted_rows"]))
    for key, days in median_days_to_cleared(imports).items():
        line(key).median_days = days
    ordered = [lines[key] for key in _ordered(lines)]
    wasted.sort(key=lambda w: (-w.rows, w.key))
    return ordered, wasted


def median_days_to_cleared(imports: QuerySet[ImportSnapshot]) -> dict[str, float]:
    """Per cause, the median days from an import's begin to its clearing, over the cleared
    imports with rows of that cause. The database ranks the waits per cause and keeps the
    middle one or two (2 × rank between n and n + 2)."""
    wait = ExpressionWrapper(F("snapshot__handled_at") - F("snapshot__begin_date"), DurationField())
    middle = (
        ImportCause.objects.filter(snapshot__in=imports.filter(cleared_condition()))
        .annotate(
            wait=wait,
            n=Window(Count("id"), partition_by=[F("cause")]),
            rank=Window(RowNumber(), partition_by=[F("cause")], order_by=[wait.asc(), F("id")]),
        )
        .annotate(twice=F("rank") * 2)
        .filter(twice__gte=F("n"), twice__lte=F("n") + 2)
        .values_list("cause", "wait")
    )
    waits: dict[str, list[timedelta]] = {}
    for key, waited in middle:
        waits.setdefault(key, []).append(waited)
    return {
        key: round(sum(w, timedelta()).total_seconds() / len(w) / 86400, 1)
        for key, w in waits.items()
    }


def by_person(chosen: OverviewFilter, viewer, grouped: list[dict]) -> list[PersonLine]:
    """Per person: retries, bulk retries, rows fixed and imports marked handled in the
    period; AP staff see their own line only."""
    people: dict[int, PersonLine] = {}

    def person(pk: int) -> PersonLine:
        return people.setdefault(pk, PersonLine(pk, ""))

    for row in grouped:
        person(row["requested_by"]).retries += row["retries"]
        person(row["requested_by"]).rows_fixed += row["fixed"] or 0
    everyone = viewer.has_perm("kickouts.view_all_retries")
    bulks = BulkRetry.objects.filter(requested_at__gte=chosen.since)
    changes = HandledChange.objects.filter(changed_at__gte=chosen.since, changed_by__isnull=False)
    changes = changes.exclude(to_reason="")
    if not everyone:
        bulks = bulks.filter(requested_by=viewer)
        changes = changes.filter(changed_by=viewer)
    if chosen.user:
        theirs = ImportSnapshot.objects.filter(user_full_name=chosen.user)
        bulks = bulks.filter(
            Exists(
                RetryAttempt.objects.filter(
                    bulk=OuterRef("pk"), source_task_guid__in=theirs.values("task_guid")
                )
            )
        )
        changes = changes.filter(snapshot__in=theirs)
    for row in bulks.values("requested_by").annotate(n=Count("id")).order_by():
        person(row["requested_by"]).bulks = row["n"]
    for row in changes.values("changed_by").annotate(n=Count("id")).order_by():
        person(row["changed_by"]).handled = row["n"]
    for user in get_user_model().objects.filter(pk__in=list(people)):
        people[user.pk].name = user.get_full_name() or user.get_username()
    return sorted(people.values(), key=lambda p: (-p.retries, -p.handled, p.name))


def overview(chosen: OverviewFilter, viewer) -> Overview:
    """Every figure of the overview page for this viewer."""
    grouped = _retry_counts(chosen, viewer)
    causes, wasted = by_cause(chosen, viewer)
    return Overview(
        chosen=chosen,
        sees_everyone=viewer.has_perm("kickouts.view_all_retries"),
        open_rows=open_rows(chosen),
        imports=imports_by_week(chosen),
        retries=retries_by_week(chosen, grouped),
        causes=causes,
        people=by_person(chosen, viewer, grouped),
        wasted=wasted,
        unclassified=KickoutRow.objects.filter(cause="").exists(),
    )


def cached_overview(chosen: OverviewFilter, viewer) -> Overview:
    """`overview`, kept for CACHE_SECONDS: the same period, EnergyCAP user and scope (everyone's
    work, or this viewer's own) read the same figures meanwhile."""
    scope = "all" if viewer.has_perm("kickouts.view_all_retries") else f"user-{viewer.pk}"
    user = hashlib.sha256(chosen.user.encode()).hexdigest()[:16]
    key = f"overview:{chosen.period}:{chosen.today.isoformat()}:{user}:{scope}"
    figures = cache.get_or_set(key, lambda: overview(chosen, viewer), CACHE_SECONDS)
    return cast(Overview, figures)


# -- the weekly summary's figures --------------------------------------------------------


@dataclass
class CauseChange:
    key: str
    now: int
    week_before: int

    @property
    def label(self) -> str:
        return cause_label(self.key)

    @property
    def change(self) -> str:
        return signed(self.now - self.week_before)


@dataclass
class WeekSummary:
    chosen: OverviewFilter
    open_by_cause: list[CauseChange]
    retries: int
    rows_fixed: int
    oldest_open: list[ImportSnapshot]

    @property
    def open_now(self) -> int:
        return sum(c.now for c in self.open_by_cause)

    @property
    def open_week_before(self) -> int:
        return sum(c.week_before for c in self.open_by_cause)

    @property
    def change(self) -> str:
        return signed(self.open_now - self.open_week_before)


def signed(difference: int) -> str:
    """A change as people read it: "+3", "−2", "no change"."""
    if difference == 0:
        return "no change"
    return f"+{difference}" if difference > 0 else f"−{-difference}"


def week_summary(viewer, now: datetime | None = None) -> WeekSummary:
    """The last 30 days' open rows by cause, now and a week before; the last 7 days' retries
    and rows fixed; the oldest open imports."""
    now = now or timezone.now()
    chosen = OverviewFilter(today=timezone.localtime(now).date())
    week_ago = now - timedelta(days=7)
    current = {s.key: s.values[-1] for s in open_rows(chosen, at=now).series}
    before = {s.key: s.values[-1] for s in open_rows(chosen, at=week_ago).series}
    changes = [
        CauseChange(key, current.get(key, 0), before.get(key, 0))
        for key in _ordered(set(current) | set(before))
        if current.get(key) or before.get(key)
    ]
    retries = (
        chosen.retries(viewer)
        .filter(requested_at__gte=week_ago)
        .aggregate(n=Count("id"), fixed=Sum("comparison__fixed_count"))
    )
    oldest = chosen.imports().open().order_by("begin_date", "id")[:OLDEST_OPEN_SHOWN]
    return WeekSummary(chosen, changes, retries["n"], retries["fixed"] or 0, list(oldest))


# -- classifying what was stored before causes were -------------------------------------


def classify_stored() -> tuple[int, int]:
    """Store every kickout row's cause and the per-cause counts of every import and
    comparison again, from the causes table as it is now (after an upgrade, or when the
    table changed). One UPDATE per distinct message; returns (messages, comparisons)."""
    messages = KickoutRow.objects.order_by().values_list("message", flat=True).distinct()
    count = 0
    with transaction.atomic():
        for message in messages.iterator():
            KickoutRow.objects.filter(message=message).update(cause=cause_key(message))
            count += 1
        ImportCause.objects.all().delete()
        for snapshot in ImportSnapshot.objects.filter(state=SnapshotState.READY).iterator():
            rows = snapshot.rows.values_list("message", flat=True)
            ImportCause.objects.bulk_create(import_causes(snapshot, rows))
        ComparisonCause.objects.all().delete()
        compared = Comparison.objects.filter(state=CompareState.COMPARED)
        for comparison in compared.iterator():
            ComparisonCause.objects.bulk_create(comparison_causes(comparison, comparison.rows))
    return count, compared.count()
