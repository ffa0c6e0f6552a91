"""The supervisor's overview: six charts, each with its table, its CSV and links to the rows it
counts in the queue or the history (AP staff: their own work). No EnergyCAP call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date
from urllib.parse import urlencode

from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from .. import charts, spreadsheet, weekly
from ..decorators import login_required
from ..models import ImportSnapshot
from ..overview import (
    CACHE_SECONDS,
    PERIODS,
    RESULTS,
    Overview,
    OverviewFilter,
    cached_overview,
)
from .common import HtmxHttpRequest
from .history import history_permission


@dataclass(frozen=True)
class Links:
    """Addresses of the queue and the history narrowed to what a bar or a cell counts."""

    chosen: OverviewFilter

    def queue(
        self,
        *,
        cause: str = "",
        first: date | None = None,
        last: date | None = None,
        show: str = "open",
    ) -> str:
        query = {"from": (first or self.chosen.first_day).isoformat()}
        if last:
            query["to"] = last.isoformat()
        if self.chosen.user:
            query["user"] = self.chosen.user
        if cause:
            query["cause"] = cause
        if show != "open":
            query["show"] = show
        return f"{reverse('queue')}?{urlencode(query)}"

    def history(self, *, first: date | None = None, last: date | None = None, **filters) -> str:
        query = {"date_from": (first or self.chosen.first_day).isoformat()}
        if last:
            query["date_to"] = last.isoformat()
        if self.chosen.user:
            query["energycap_user"] = self.chosen.user
        query.update({name: str(value) for name, value in filters.items() if value})
        return f"{reverse('history')}?{urlencode(query)}"


def open_rows_chart(figures: Overview, links: Links) -> charts.BarChart:
    series = figures.open_rows.series
    columns = [
        charts.Column(
            bucket.short_label,
            [
                charts.Segment(
                    number,
                    s.values[place],
                    f"{s.label}, end of {bucket.label}: {s.values[place]} open rows",
                    links.queue(cause=s.key, last=bucket.last),
                )
                for number, s in enumerate(series)
            ],
        )
        for place, bucket in enumerate(figures.open_rows.buckets)
    ]
    return charts.stacked("Open kickout rows by cause", [s.label for s in series], columns)


def imports_chart(figures: Overview, links: Links) -> charts.BarChart:
    columns = []
    for week in figures.imports:
        left = week.imports - week.cleared
        title = f"Week of {week.bucket.label}: {{}} of {week.imports} imports {{}}"
        first, last = week.bucket.first, week.bucket.last
        columns.append(
            charts.Column(
                week.bucket.short_label,
                [
                    charts.Segment(
                        0,
                        week.cleared,
                        title.format(week.cleared, "cleared"),
                        links.queue(first=first, last=last, show="handled"),
                    ),
                    charts.Segment(
                        1,
                        left,
                        title.format(left, "not cleared"),
                        links.queue(first=first, last=last),
                    ),
                ],
            )
        )
    return charts.stacked("Imports with kickouts per week", ["cleared", "not cleared"], columns)


def retries_chart(figures: Overview, links: Links) -> charts.BarChart:
    columns = [
        charts.Column(
            week.bucket.short_label,
            [
                charts.Segment(
                    number,
                    week.counts[result],
                    f"Week of {week.bucket.label}: {week.counts[result]} retries {label}",
                    links.history(first=week.bucket.first, last=week.bucket.last, result=result),
                )
                for number, (result, label) in enumerate(RESULTS.items())
            ],
        )
        for week in figures.retries
    ]
    return charts.stacked("Retries per week by how they ended", list(RESULTS.values()), columns)


def causes_chart(figures: Overview, links: Links) -> charts.BarChart:
    parts = [("still open", "still_open"), ("fixed by re-import", "fixed_by_reimport")]
    parts.append(("fixed by corrected files", "fixed_by_corrected_file"))
    columns = []
    for line in figures.causes:
        targets = [
            links.queue(cause=line.key),
            links.history(cause=line.key),
            links.history(cause=line.key),
        ]
        columns.append(
            charts.Column(
                line.label,
                [
                    charts.Segment(
                        number,
                        getattr(line, name),
                        f"{line.label}: {getattr(line, name)} rows {label}",
                        target,
                    )
                    for number, ((label, name), target) in enumerate(
                        zip(parts, targets, strict=True)
                    )
                ],
            )
        )
    return charts.stacked("Rows by cause", [label for label, _ in parts], columns)


def people_chart(figures: Overview, links: Links) -> charts.BarChart:
    columns = [
        charts.Column(
            person.name,
            [
                charts.Segment(
                    0,
                    person.retries,
                    f"{person.name}: {person.retries} retries",
                    links.history(user=person.user_id),
                ),
                charts.Segment(
                    1,
                    person.handled,
                    f"{person.name}: {person.handled} imports marked handled",
                    links.queue(show="handled"),
                ),
            ],
        )
        for person in figures.people
    ]
    return charts.stacked("Work per person", ["retries", "imports marked handled"], columns)


def wasted_chart(figures: Overview, links: Links) -> charts.BarChart:
    columns = [
        charts.Column(
            line.label,
            [
                charts.Segment(
                    0,
                    line.retries,
                    f"{line.label}: {line.retries} re-imports fixed nothing",
                    links.history(cause=line.key, result="nothing"),
                )
            ],
        )
        for line in figures.wasted
    ]
    return charts.stacked("Re-imports that fixed nothing, by cause", ["re-imports"], columns)


CHARTS: dict[str, Callable[[Overview, Links], charts.BarChart]] = {
    "open-rows": open_rows_chart,
    "imports": imports_chart,
    "retries": retries_chart,
    "causes": causes_chart,
    "people": people_chart,
    "wasted": wasted_chart,
}


@require_GET
@login_required
@history_permission
def overview_page(request: HtmxHttpRequest) -> HttpResponse:
    chosen = OverviewFilter.from_query(request.GET)
    figures = cached_overview(chosen, request.user)
    links = Links(chosen)
    if figures.sees_everyone:
        weekly.wake()  # a lost weekly sweep is started again by a supervisor's visit
    query = urlencode({"period": chosen.period, **({"user": chosen.user} if chosen.user else {})})
    context = {
        "chosen": chosen,
        "periods": PERIODS,
        "users": ImportSnapshot.objects.user_names(),
        "figures": figures,
        "links": links,
        "charts": {name.replace("-", "_"): draw(figures, links) for name, draw in CHARTS.items()},
        "query": query,
        "results": RESULTS,
        "cache_minutes": CACHE_SECONDS // 60,
        "open_rows_table": list(
            zip(
                figures.open_rows.buckets,
                zip(*(s.values for s in figures.open_rows.series), strict=True)
                if figures.open_rows.series
                else [()] * len(figures.open_rows.buckets),
                figures.open_rows.totals,
                strict=True,
            )
        ),
        "retry_cells": [
            (
                week,
                [
                    (
                        week.counts[r],
                        links.history(first=week.bucket.first, last=week.bucket.last, result=r),
                    )
                    for r in RESULTS
                ],
            )
            for week in figures.retries
        ],
    }
    return render(request, "kickouts/overview.html", context)


# -- CSV ---------------------------------------------------------------------------------


def _open_rows_rows(figures: Overview) -> tuple[list[str], list[list]]:
    series = figures.open_rows.series
    header = ["first_day", "last_day", *(s.label for s in series), "total"]
    rows = [
        [bucket.first, bucket.last, *(s.values[n] for s in series), figures.open_rows.totals[n]]
        for n, bucket in enumerate(figures.open_rows.buckets)
    ]
    return header, rows


def _imports_rows(figures: Overview) -> tuple[list[str], list[list]]:
    header = [
        "week_first_day",
        "week_last_day",
        "imports_with_kickouts",
        "cleared",
        "share_cleared",
    ]
    rows = [
        [
            w.bucket.first,
            w.bucket.last,
            w.imports,
            w.cleared,
            "" if w.share is None else f"{w.share:.3f}",
        ]
        for w in figures.imports
    ]
    return header, rows


def _retries_rows(figures: Overview) -> tuple[list[str], list[list]]:
    header = ["week_first_day", "week_last_day", *(f"retries_{r}" for r in RESULTS), "rows_fixed"]
    rows = [
        [w.bucket.first, w.bucket.last, *(w.counts[r] for r in RESULTS), w.rows_fixed]
        for w in figures.retries
    ]
    return header, rows


def _causes_rows(figures: Overview) -> tuple[list[str], list[list]]:
    header = ["cause", "rows_kicked_out", "rows_fixed_by_reimport", "rows_fixed_by_corrected_files"]
    header += ["rows_still_open", "median_days_to_cleared"]
    rows = [
        [
            c.label,
            c.kicked_out,
            c.fixed_by_reimport,
            c.fixed_by_corrected_file,
            c.still_open,
            "" if c.median_days is None else c.median_days,
        ]
        for c in figures.causes
    ]
    return header, rows


def _people_rows(figures: Overview) -> tuple[list[str], list[list]]:
    header = ["person", "retries", "bulk_retries", "rows_fixed", "imports_marked_handled"]
    rows = [[p.name, p.retries, p.bulks, p.rows_fixed, p.handled] for p in figures.people]
    return header, rows


def _wasted_rows(figures: Overview) -> tuple[list[str], list[list]]:
    header = ["cause", "reimports_that_fixed_nothing", "rows_reimported_for_nothing"]
    return header, [[w.label, w.retries, w.rows] for w in figures.wasted]


TABLES = {
    "open-rows": _open_rows_rows,
    "imports": _imports_rows,
    "retries": _retries_rows,
    "causes": _causes_rows,
    "people": _people_rows,
    "wasted": _wasted_rows,
}


@require_GET
@login_required
@history_permission
def overview_csv(request: HtmxHttpRequest) -> HttpResponse:
    """One chart's numbers as CSV (Excel-ready, as the other downloads): `chart`, the first
    chart's by default."""
    chart = request.GET.get("chart", next(iter(TABLES)))
    if chart not in TABLES:
        raise Http404("No such chart.")
    chosen = OverviewFilter.from_query(request.GET)
    header, rows = TABLES[chart](cached_overview(chosen, request.user))
    cells = ([spreadsheet.guard(value) for value in row] for row in rows)
    response = HttpResponse(
        "".join(spreadsheet.pieces(header, spreadsheet.lines(cells))),
        content_type="text/csv; charset=utf-8",
    )
    stamp = timezone.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"overview-{chart}-{chosen.days}days-{stamp}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
