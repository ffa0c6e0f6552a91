"""The kickout queue: every open kickout across imports, grouped by message, with what to do.

Everything here reads the dashboard's own snapshots (`kickouts.snapshots`): the queue, its
groups and its downloads make no request to EnergyCAP.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, QuerySet, Sum
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRefresh

from .. import snapshots, spreadsheet
from ..causes import CAUSE_KEYS, advice_for
from ..decorators import login_required, permission_required
from ..handled import HandledForm
from ..overview import start_of
from ..queue_models import HandledReason, ImportSnapshot, KickoutRow, SnapshotState
from ..snapshots import csv_cells
from .common import PERIODS, HtmxHttpRequest

GROUP_ROWS_PER_PAGE = 25
GROUP_IMPORTS_PER_PAGE = 25
GROUP_ROW_FIELDS = (
    "account_code",
    "meter_code",
    "vendor_code",
    "bill_start",
    "bill_end",
    "total_cost",
    "snapshot__task_guid",
    "snapshot__task_id",
    "snapshot__file_name",
)
QUEUE_CACHE_SECONDS = 3600
CSV_CHUNK_ROWS = 2000
CSV_CHUNK_IMPORTS = 50
IMPORT_NUMBER_COLUMN = "Import"


class CountedPaginator(Paginator):
    """A paginator told its count, already computed with others in one query."""

    def __init__(self, object_list, per_page, count: int):
        super().__init__(object_list, per_page)
        self._known_count = count

    @cached_property
    def count(self) -> int:
        return self._known_count


class QueueFilter:
    """The queue's filters from the query string: period, EnergyCAP user, open or handled."""

    def __init__(self, query):
        period = query.get("period", "30")
        self.period = period if period in PERIODS else "30"
        self.user = query.get("user", "").strip()[:255]
        self.show = "handled" if query.get("show") == "handled" else "open"
        # Narrower, for the overview's links: one cause, imports begun in these days.
        self.cause = query.get("cause", "") if query.get("cause") in CAUSE_KEYS else ""
        self.date_from, self.date_to = _day(query.get("from")), _day(query.get("to"))

    @property
    def days(self) -> int:
        return PERIODS[self.period]

    def snapshots(self) -> QuerySet[ImportSnapshot]:
        since = timezone.now() - timedelta(days=self.days)
        if self.date_from:
            since = start_of(self.date_from)
        found = ImportSnapshot.objects.filter(begin_date__gte=since)
        if self.date_to:
            found = found.filter(begin_date__lt=start_of(self.date_to + timedelta(days=1)))
        if self.user:
            found = found.filter(user_full_name=self.user)
        if self.cause:
            of_cause = KickoutRow.objects.filter(snapshot=OuterRef("pk"), cause=self.cause)
            found = found.filter(Exists(of_cause))
        return found

    def listed(self) -> QuerySet[ImportSnapshot]:
        """The imports the queue lists: ready, and open (or handled, with that filter)."""
        chosen = self.snapshots().filter(state=SnapshotState.READY)
        return chosen.handled() if self.show == "handled" else chosen.open()

    def query(self, **extra) -> str:
        values = {"period": self.period}
        if self.user:
            values["user"] = self.user
        if self.show != "open":
            values["show"] = self.show
        if self.cause:
            values["cause"] = self.cause
        if self.date_from:
            values["from"] = self.date_from.isoformat()
        if self.date_to:
            values["to"] = self.date_to.isoformat()
        values.update({k: v for k, v in extra.items() if v not in (None, "")})
        return urlencode(values)


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat((value or "").strip()[:10])
    except ValueError:
        return None


def queue_groups(listed: QuerySet[ImportSnapshot], cause: str = "") -> list[dict]:
    """The kickout rows of these imports (of one cause, if given) grouped by message, most
    rows first, with advice."""
    rows = KickoutRow.objects.filter(snapshot__in=listed)
    groups = list(
        (rows.filter(cause=cause) if cause else rows)
        .values("message")
        .annotate(
            rows=Count("id"),
            imports=Count("snapshot", distinct=True),
            accounts=Count("account_code", distinct=True, filter=~Q(account_code="")),
            vendors=Count("vendor_code", distinct=True, filter=~Q(vendor_code="")),
            oldest=Min("snapshot__begin_date"),
            newest=Max("snapshot__begin_date"),
        )
        .order_by("-rows", "message")
    )
    for group in groups:
        group["advice"] = advice_for(group["message"])
    return groups


def listed_version(chosen: QueueFilter, listed: QuerySet[ImportSnapshot]) -> str:
    """A short key that changes whenever the listed imports' groups or rows could.

    The listed imports' count, the sum of their ids and the sum of their versions (each raised
    by every change) change whenever an import is stored, handled, reopened, or enters or
    leaves the period or the user filter. Stored rows never change.
    """
    state = listed.aggregate(count=Count("id"), ids=Sum("id"), versions=Sum("version"))
    fingerprint = "|".join(str(state[k] or 0) for k in ("count", "ids", "versions"))
    return hashlib.sha256(f"{chosen.query()}|{fingerprint}".encode()).hexdigest()[:32]


def cached_queue_groups(
    version: str, listed: QuerySet[ImportSnapshot], cause: str = ""
) -> list[dict]:
    """`queue_groups`, computed once per `listed_version`: grouping tens of thousands of rows
    is most of the queue's work."""
    return cache.get_or_set(
        f"kickout-queue:{version}", lambda: queue_groups(listed, cause), QUEUE_CACHE_SECONDS
    )


@require_GET
@login_required
def queue(request: HtmxHttpRequest) -> HttpResponse:
    chosen = QueueFilter(request.GET)
    in_period = chosen.snapshots()
    progress = in_period.aggregate(
        total=Count("id"),
        loading=Count("id", filter=Q(state=SnapshotState.LOADING)),
        failed=Count("id", filter=Q(state=SnapshotState.FAILED)),
    )
    polled = bool(request.htmx) and request.htmx.target == "queue-progress"
    if polled and not progress["loading"]:
        # Everything is in: show the whole page again, groups included (and stop polling).
        return HttpResponseClientRefresh()
    listing_asked = _request_refresh(chosen)
    listed = chosen.listed()
    context = {
        "listing_asked": listing_asked,
        "chosen": chosen,
        "periods": PERIODS,
        "users": ImportSnapshot.objects.user_names(),
        "progress": progress,
        "groups": cached_queue_groups(listed_version(chosen, listed), listed, chosen.cause),
        "handled": (listed.select_related("handled_by")[:200] if chosen.show == "handled" else []),
    }
    template = "kickouts/queue.html"
    if polled:
        template += "#queue-progress"
    return render(request, template, context)


def _request_refresh(chosen: QueueFilter) -> bool:
    """Ask the worker to list the period's imports again (at most once per few minutes):
    every import of the period is queued, whether or not anyone opened the task list."""
    return snapshots.request_queue_refresh(chosen.days)


@require_GET
@login_required
def queue_group(request: HtmxHttpRequest) -> HttpResponse:
    chosen = QueueFilter(request.GET)
    message = request.GET.get("message", "")
    listed = chosen.listed()
    version = listed_version(chosen, listed)
    # The group's counts come with the queue's groups; the tables below are lazy: the page's
    # fragments are cached per version of the listed imports (the template's {% cache %}),
    # and a cached fragment runs no query.
    counts = {"rows": 0, "imports": 0}
    for group in cached_queue_groups(version, listed, chosen.cause):
        if group["message"] == message:
            counts = group
    rows = (
        KickoutRow.objects.filter(snapshot__in=listed, message=message)
        .select_related("snapshot")
        .only(*GROUP_ROW_FIELDS)
        .order_by("-snapshot__begin_date", "snapshot_id", "position")
    )
    page = CountedPaginator(rows, GROUP_ROWS_PER_PAGE, counts["rows"]).get_page(
        request.GET.get("page")
    )
    # Paged too: a common message is in hundreds of imports, each a row to render.
    # EXISTS, not a join and DISTINCT: the newest imports come straight off the date index.
    has_message = KickoutRow.objects.filter(snapshot=OuterRef("pk"), message=message)
    imports = CountedPaginator(
        listed.filter(Exists(has_message))
        .order_by("-begin_date", "-id")
        .values("task_guid", "task_id", "begin_date", "file_name"),
        GROUP_IMPORTS_PER_PAGE,
        counts["imports"],
    ).get_page(request.GET.get("imports_page"))
    group_url = f"{reverse('queue_group')}?{chosen.query(message=message)}"
    context = {
        "chosen": chosen,
        "message": message,
        # Task pages and the bulk form opened from here link back (context_processors).
        "from_query": urlencode({"from": group_url}),
        "group_url": group_url,
        "version": version,
        "advice": advice_for(message),
        "page": page,
        "imports": imports,
        "handled_form": HandledForm(),
        # Imports listed as handled need "Reopen", on their task page.
        "can_mark": chosen.show == "open" and request.user.has_perm("kickouts.mark_handled"),
        "can_retry": request.user.has_perm("kickouts.submit_retry"),
    }
    return render(request, "kickouts/queue_group.html", context)


# -- handled / reopen --


def _back(request, snapshot: ImportSnapshot) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("task_detail", args=[snapshot.task_guid])


@require_POST
@login_required
@permission_required("kickouts.mark_handled")
def mark_handled(request: HtmxHttpRequest, guid: str) -> HttpResponse:
    snapshot = get_object_or_404(ImportSnapshot, task_guid=guid.lower())
    form = HandledForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose why the import is handled.")
        return redirect(_back(request, snapshot))
    snapshot.mark_handled(
        user=request.user, reason=form.cleaned_data["reason"], note=form.cleaned_data["note"]
    )
    messages.success(
        request,
        f"Import {snapshot.task_id or snapshot.task_guid} marked handled: "
        f"{snapshot.handled_label}.",
    )
    return redirect(_back(request, snapshot))


@require_POST
@login_required
@permission_required("kickouts.mark_handled")
def mark_many_handled(request: HtmxHttpRequest) -> HttpResponse:
    """From a group: the checked imports handled, with one reason and note."""
    form = HandledForm(request.POST)
    guids = [g.lower() for g in request.POST.getlist("task")[:1000]]
    chosen = list(ImportSnapshot.objects.filter(task_guid__in=guids).open())
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("queue")
    if not form.is_valid() or not chosen:
        messages.error(request, "Check the imports to mark, and choose why they are handled.")
        return redirect(target)
    for snapshot in chosen:
        snapshot.mark_handled(
            user=request.user, reason=form.cleaned_data["reason"], note=form.cleaned_data["note"]
        )
    messages.success(
        request,
        f"{len(chosen)} import{'s' if len(chosen) != 1 else ''} marked handled: "
        f"{HandledReason(form.cleaned_data['reason']).label}.",
    )
    return redirect(target)


@require_POST
@login_required
@permission_required("kickouts.mark_handled")
def reopen(request: HtmxHttpRequest, guid: str) -> HttpResponse:
    snapshot = get_object_or_404(ImportSnapshot, task_guid=guid.lower())
    if snapshot.is_handled:
        snapshot.reopen(user=request.user, note=request.POST.get("note", "")[:2000])
        messages.success(request, f"Import {snapshot.task_id or snapshot.task_guid} is open again.")
    return redirect(_back(request, snapshot))


# -- downloads --


def kickouts_csv(
    snapshots: QuerySet[ImportSnapshot], name: str, message=None, cause: str = ""
) -> HttpResponse:
    """Stream these imports' rows (or only those with `message`), with the grids' own column
    names (in order of first appearance) and each row's import number, newest import first."""
    grids = list(snapshots.order_by().values_list("columns", flat=True).distinct())
    columns = list(dict.fromkeys(column for names in grids for column in names or []))
    if message is None and not cause and len(grids) <= 1:
        # Every import has the same grid: its rows as stored with it, already CSV.
        body = (
            snapshots.order_by("-begin_date", "id")
            .values_list("csv_lines", flat=True)
            .iterator(chunk_size=CSV_CHUNK_IMPORTS)
        )
    else:
        rows = KickoutRow.objects.filter(snapshot__in=snapshots)
        if message is not None:
            rows = rows.filter(message=message)
        if cause:
            rows = rows.filter(cause=cause)
        ordered = rows.order_by("-snapshot__begin_date", "snapshot_id", "position").values_list(
            "snapshot__task_id", "cells"
        )
        body = spreadsheet.lines(
            csv_cells(task_id, columns, cells)
            for task_id, cells in ordered.iterator(chunk_size=CSV_CHUNK_ROWS)
        )
    response = StreamingHttpResponse(
        spreadsheet.pieces([IMPORT_NUMBER_COLUMN, *columns], body),
        content_type="text/csv; charset=utf-8",
    )
    stamp = timezone.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    return response


@require_GET
@login_required
def queue_csv(request: HtmxHttpRequest) -> HttpResponse:
    """The whole queue's rows, or one group's (`message`)."""
    chosen = QueueFilter(request.GET)
    listed = chosen.listed()
    message = request.GET.get("message")
    if message is None:
        return kickouts_csv(listed, "kickout-queue", cause=chosen.cause)
    return kickouts_csv(listed.filter(rows__message=message), "kickout-group", message)


@require_GET
@login_required
def import_csv(request: HtmxHttpRequest, guid: str) -> HttpResponse:
    snapshot = get_object_or_404(ImportSnapshot, task_guid=guid.lower(), state=SnapshotState.READY)
    return kickouts_csv(
        ImportSnapshot.objects.filter(pk=snapshot.pk),
        f"kickouts-{snapshot.task_id or snapshot.task_guid}",
    )
