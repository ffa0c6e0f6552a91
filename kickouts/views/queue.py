"""The kickout queue: every open kickout across imports, grouped by message, with what to do.

Everything here reads the dashboard's own snapshots (`kickouts.snapshots`): the queue, its
groups and its downloads make no request to EnergyCAP.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet
from django.db.models.functions import Collate
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
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
from ..queue_models import (
    HandledReason,
    ImportSnapshot,
    ImportSnapshotQuerySet,
    KickoutRow,
    QueueListing,
    SnapshotState,
)
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
CSV_CHUNK_IMPORTS = 50
QUEUE_GROUPS_SECONDS = 3600
IMPORT_NUMBER_COLUMN = "Import"
PROGRESS_TARGET = "queue-progress"
# A listing asked longer ago than this and not finished is not waited for with polling: the
# notice stays on every load, and says the worker may be down.
LISTING_WAIT = timedelta(seconds=snapshots.QUEUE_REFRESH_SECONDS)


class CountedPaginator(Paginator[Any]):
    """A paginator told its count, already computed with others in one query."""

    def __init__(self, object_list: Any, per_page: int, count: int) -> None:
        super().__init__(object_list, per_page)
        self._known_count = count

    @cached_property
    def count(self) -> int:
        return self._known_count


class QueueFilter:
    """The queue's filters from the query string: period, EnergyCAP user, open or handled."""

    def __init__(self, query: Any) -> None:
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

    def snapshots(self) -> ImportSnapshotQuerySet:
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

    def listed(self) -> ImportSnapshotQuerySet:
        """The imports the queue lists: ready, and open (or handled, with that filter)."""
        chosen = self.snapshots().filter(state=SnapshotState.READY)
        return chosen.handled() if self.show == "handled" else chosen.open()

    def query(self, **extra: Any) -> str:
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


@dataclass(frozen=True)
class QueueProgress:
    """How complete the queue's totals are: imports of the period still loading or failed,
    a listing of the period under way, and when the period was last listed."""

    days: int
    total: int
    loading: int
    failed: int
    listing_asked_at: datetime | None  # a listing asked and not finished since
    refreshed_at: datetime | None  # the last listing of this period (or a longer one) done
    listing_error: str

    @property
    def listing(self) -> bool:
        return self.listing_asked_at is not None

    @property
    def listing_late(self) -> bool:
        """Asked so long ago that a running worker would have answered."""
        asked = self.listing_asked_at
        return asked is not None and timezone.now() - asked > LISTING_WAIT

    @property
    def partial(self) -> bool:
        """The totals shown may still grow."""
        return bool(self.loading) or self.listing

    @property
    def polling(self) -> bool:
        return bool(self.loading) or (self.listing and not self.listing_late)


def queue_progress(chosen: QueueFilter) -> QueueProgress:
    counts = chosen.snapshots().aggregate(
        total=Count("id"),
        loading=Count("id", filter=Q(state=SnapshotState.LOADING)),
        failed=Count("id", filter=Q(state=SnapshotState.FAILED)),
    )
    # A listing of a longer period lists this one's imports too.
    listings = list(QueueListing.objects.filter(days__gte=chosen.days))
    finished = [item.finished_at for item in listings if item.finished_at]
    refreshed_at = max(finished, default=None)
    own = next((item for item in listings if item.days == chosen.days), None)
    asked_at = own.asked_at if own else None
    pending = asked_at is not None and (refreshed_at is None or asked_at > refreshed_at)
    return QueueProgress(
        days=chosen.days,
        total=counts["total"],
        loading=counts["loading"],
        failed=counts["failed"],
        listing_asked_at=asked_at if pending else None,
        refreshed_at=refreshed_at,
        listing_error=own.error if own and pending else "",
    )


def _progress(request: HtmxHttpRequest, chosen: QueueFilter) -> tuple[QueueProgress, bool]:
    """The queue's progress, after asking the worker for a fresh listing of the period unless
    one came in lately (at most once per few minutes, whoever asks); and whether this request
    is the progress notice's own poll."""
    progress = queue_progress(chosen)
    refreshed = progress.refreshed_at
    fresh = refreshed is not None and timezone.now() - refreshed < LISTING_WAIT
    if not fresh and snapshots.request_queue_refresh(chosen.days):
        progress = replace(progress, listing_asked_at=snapshots.listing_asked(chosen.days))
    polled = bool(request.htmx) and request.htmx.target == PROGRESS_TARGET
    return progress, polled


def queue_groups(listed: QuerySet[ImportSnapshot], cause: str = "") -> list[dict[str, Any]]:
    """The kickout rows of these imports (of one cause, if given) grouped by message, most
    rows first, with advice.

    Grouping every open row of the period (distinct accounts and vendors above all) is most
    of the queue page's time, and takes it over its budget at 20,000 rows (README,
    Benchmarks). A stored import's rows never change, so one set of imports always has the
    same groups: they are kept per set, named by the imports' ids themselves. A set that
    changes (an import stored, handled, reopened, or out of the period) is another set.
    """
    ids = ",".join(map(str, listed.order_by("id").values_list("id", flat=True)))
    key = f"kickout-queue-groups:{cause}:{hashlib.sha256(ids.encode()).hexdigest()}"
    groups: list[dict[str, Any]] | None = cache.get(key)
    if groups is None:
        groups = _grouped_rows(listed, cause)
        cache.set(key, groups, QUEUE_GROUPS_SECONDS)
    return [{**group, "advice": advice_for(group["message"])} for group in groups]


def _grouped_rows(listed: QuerySet[ImportSnapshot], cause: str) -> list[dict[str, Any]]:
    rows = KickoutRow.objects.filter(snapshot__in=listed)
    return list(
        (rows.filter(cause=cause) if cause else rows)
        .values("message")
        .annotate(
            rows=Count("id"),
            imports=Count("snapshot", distinct=True),
            accounts=Count(_bytewise("account_code"), distinct=True, filter=~Q(account_code="")),
            vendors=Count(_bytewise("vendor_code"), distinct=True, filter=~Q(vendor_code="")),
            oldest=Min("snapshot__begin_date"),
            newest=Max("snapshot__begin_date"),
        )
        .order_by("-rows", "message")
    )


def _bytewise(field: str) -> Collate | F:
    # Counting distinct codes sorts them: PostgreSQL sorts bytes ("C") several times faster
    # than in a locale's order, and any deterministic collation counts the same codes.
    return Collate(field, "C") if connection.vendor == "postgresql" else F(field)


def with_message(imports: QuerySet[ImportSnapshot], message: str) -> QuerySet[ImportSnapshot]:
    """The imports with a row of `message`. EXISTS, not a join and DISTINCT: the newest
    imports come straight off the date index."""
    return imports.filter(
        Exists(KickoutRow.objects.filter(snapshot=OuterRef("pk"), message=message))
    )


@require_GET
@login_required
def home(request: HtmxHttpRequest) -> HttpResponse:
    """The dashboard's address: the day starts on the kickout queue, signed in or after."""
    return redirect("queue")


@require_GET
@login_required
def queue(request: HtmxHttpRequest) -> HttpResponse:
    chosen = QueueFilter(request.GET)
    progress, polled = _progress(request, chosen)
    if polled and not progress.polling:
        # Everything is in (or no longer waited for): the whole page again, totals included.
        return HttpResponseClientRefresh()
    context: dict[str, Any] = {"chosen": chosen, "progress": progress}
    if polled:
        return render(request, "kickouts/queue.html#queue-progress", context)
    listed = chosen.listed()
    context.update(
        periods=PERIODS,
        users=ImportSnapshot.objects.user_names(),
        groups=queue_groups(listed, chosen.cause) if chosen.show == "open" else [],
        handled=listed.select_related("handled_by")[:200] if chosen.show == "handled" else [],
    )
    return render(request, "kickouts/queue.html", context)


@require_GET
@login_required
def queue_group(request: HtmxHttpRequest) -> HttpResponse:
    chosen = QueueFilter(request.GET)
    progress, polled = _progress(request, chosen)
    if polled and not progress.polling:
        return HttpResponseClientRefresh()
    context: dict[str, Any] = {"chosen": chosen, "progress": progress}
    if polled:
        return render(request, "kickouts/queue.html#queue-progress", context)
    message = request.GET.get("message", "")
    listed = chosen.listed()
    of_message = KickoutRow.objects.filter(snapshot__in=listed, message=message)
    # Counted once, for both pagers: the message index holds (message, snapshot).
    counts = of_message.aggregate(rows=Count("id"), imports=Count("snapshot", distinct=True))
    rows = (
        of_message.select_related("snapshot")
        .only(*GROUP_ROW_FIELDS)
        .order_by("-snapshot__begin_date", "snapshot_id", "position")
    )
    page = CountedPaginator(rows, GROUP_ROWS_PER_PAGE, counts["rows"]).get_page(
        request.GET.get("page")
    )
    # Paged too: a common message is in hundreds of imports, each a row to render.
    imports = CountedPaginator(
        with_message(listed, message)
        .order_by("-begin_date", "-id")
        .values("task_guid", "task_id", "begin_date", "file_name"),
        GROUP_IMPORTS_PER_PAGE,
        counts["imports"],
    ).get_page(request.GET.get("imports_page"))
    group_query = chosen.query(message=message)
    group_url = f"{reverse('queue_group')}?{group_query}"
    context.update(
        message=message,
        group_query=group_query,
        # Task pages and the bulk form opened from here link back (context_processors).
        from_query=urlencode({"from": group_url}),
        group_url=group_url,
        advice=advice_for(message),
        page=page,
        imports=imports,
        handled_form=HandledForm(),
        # Imports listed as handled need "Reopen", on their task page.
        can_mark=chosen.show == "open" and request.user.has_perm("kickouts.mark_handled"),
        can_retry=request.user.has_perm("kickouts.submit_retry"),
    )
    return render(request, "kickouts/queue_group.html", context)


# -- handled / reopen --


def _back(request: HtmxHttpRequest, snapshot: ImportSnapshot) -> str:
    target = str(request.POST.get("next", ""))
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
    imports: QuerySet[ImportSnapshot], name: str, message: str | None = None, cause: str = ""
) -> HttpResponseBase:
    """Stream these imports' rows (or only those with `message`), with the grids' own column
    names (in order of first appearance) and each row's import number, newest import first."""
    grids = list(imports.order_by().values_list("columns", flat=True).distinct())
    columns = list(dict.fromkeys(column for names in grids for column in names or []))
    newest_first = list(imports.order_by("-begin_date", "id").values_list("id", "task_id"))
    body = spreadsheet.lines(_stored_rows(newest_first, columns, message, cause))
    response = StreamingHttpResponse(
        spreadsheet.pieces([IMPORT_NUMBER_COLUMN, *columns], body),
        content_type="text/csv; charset=utf-8",
    )
    stamp = timezone.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    return response


def _stored_rows(
    imports: list[tuple[int, int | None]], columns: list[str], message: str | None, cause: str
) -> Iterator[list[str]]:
    """The stored cells of these imports' rows, in this order of imports and each one's grid
    order, read CSV_CHUNK_IMPORTS imports at a time along the (import, position) index: the
    first rows go out before the last are read, and no sort of every row comes first."""
    for start in range(0, len(imports), CSV_CHUNK_IMPORTS):
        chunk = imports[start : start + CSV_CHUNK_IMPORTS]
        rows = KickoutRow.objects.filter(snapshot_id__in=[pk for pk, _ in chunk])
        if message is not None:
            rows = rows.filter(message=message)
        if cause:
            rows = rows.filter(cause=cause)
        cells_of = defaultdict(list)
        for snapshot_id, cells in rows.order_by("snapshot_id", "position").values_list(
            "snapshot_id", "cells"
        ):
            cells_of[snapshot_id].append(cells)
        for pk, task_id in chunk:
            for cells in cells_of[pk]:
                yield csv_cells(task_id, columns, cells)


@require_GET
@login_required
def queue_csv(request: HtmxHttpRequest) -> HttpResponseBase:
    """The whole queue's rows, or one group's (`message`)."""
    chosen = QueueFilter(request.GET)
    listed = chosen.listed()
    message = request.GET.get("message")
    if message is None:
        return kickouts_csv(listed, "kickout-queue", cause=chosen.cause)
    return kickouts_csv(with_message(listed, message), "kickout-group", message)


@require_GET
@login_required
def import_csv(request: HtmxHttpRequest, guid: str) -> HttpResponseBase:
    snapshot = get_object_or_404(ImportSnapshot, task_guid=guid.lower(), state=SnapshotState.READY)
    return kickouts_csv(
        ImportSnapshot.objects.filter(pk=snapshot.pk),
        f"kickouts-{snapshot.task_id or snapshot.task_guid}",
    )
