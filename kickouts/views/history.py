"""The retry history (supervisors: everyone's; AP staff: their own) and its CSV export."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.db.models import Value
from django.db.models.functions import Concat, Trim
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_htmx.http import push_url

from .. import spreadsheet
from ..decorators import login_required, permission_required
from ..history_filters import HistoryFilter, newest_first_page
from ..models import RetryAttempt
from .common import HtmxHttpRequest

# Only what a row shows: the payload and messages stay in the database.
PAGE_COLUMNS = (
    "kind",
    "corrected_file__name",
    "corrected_file__size",
    "requested_at",
    "requested_by__username",
    "requested_by__first_name",
    "requested_by__last_name",
    "source_task_guid",
    "source_task_id",
    "batch_mode",
    "batch_code",
    "outcome",
    "new_task_guid",
    "new_task_id",
    "follow_up__status",
    "follow_up__finished",
    "comparison__state",
    "comparison__before_count",
    "comparison__fixed_count",
    "reconciled",
    "reconciled_at",
    "reconciled_by__username",
    "reconciled_by__first_name",
    "reconciled_by__last_name",
    "bulk",
)
# (CSV column, database value), so the header and the values cannot drift apart.
CSV_COLUMNS = (
    ("id", "pk"),
    ("requested_at_utc", "requested_at"),
    ("requested_by", "requested_by__username"),
    ("requested_by_name", "requested_by_name"),
    ("source_import", "source_task_id"),
    ("source_task_guid", "source_task_guid"),
    ("batch_mode", "batch_mode"),
    ("batch_code", "batch_code"),
    ("outcome", "outcome"),
    ("upstream_status_code", "upstream_status_code"),
    ("new_import", "new_task_id"),
    ("new_task_guid", "new_task_guid"),
    ("new_task_status", "follow_up__status"),
    ("new_task_end_utc", "follow_up__end_date"),
    ("import_note", "import_note"),
    ("rows_before", "comparison__before_count"),
    ("rows_fixed", "comparison__fixed_count"),
    ("rows_still_kicked_out", "comparison__still_count"),
    ("rows_new", "comparison__new_count"),
    ("compared", "comparison__state"),
    ("reconciled", "reconciled"),
    ("reconciled_by", "reconciled_by__username"),
    ("reconciled_at_utc", "reconciled_at"),
    ("reconciled_note", "reconciled_note"),
    ("bulk_id", "bulk_id"),
    # Corrected files (kept last: the columns before them keep their places).
    ("kind", "kind"),
    ("file_name", "corrected_file__name"),
    ("file_bytes", "corrected_file__size"),
    ("file_sha256", "corrected_file__sha256"),
)
CSV_CHUNK_ROWS = 2000


View = Callable[..., HttpResponseBase]


def history_permission(view: View) -> View:
    """Supervisors see every retry; anyone else needs AP staff's permission, and is refused
    (403, logged by `permission_required`) without it."""
    as_ap_staff: View = permission_required("kickouts.submit_retry")(view)

    @wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.user.has_perm("kickouts.view_all_retries"):
            return view(request, *args, **kwargs)
        return as_ap_staff(request, *args, **kwargs)

    return wrapper


@require_GET
@login_required
@history_permission
def history(request: HtmxHttpRequest) -> HttpResponse:
    filters = _filters(request)
    form = filters.form
    context = {"form": form, "page": None}
    if filters.is_valid():
        path = reverse("history")
        before, after = form.cleaned_data["before"], form.cleaned_data["after"]
        page = newest_first_page(
            filters.qs.select_related(
                "requested_by", "reconciled_by", "follow_up", "comparison", "corrected_file"
            ).only(*PAGE_COLUMNS),
            before=before,
            after=after,
            size=form.cleaned_data["per_page"],
        )
        context.update(
            page=page,
            paged=bool(before or after),
            this_url=form.url(path, before=before, after=after),
            newest_url=form.url(path),
            newer_url=form.url(path, after=page.newer) if page.newer else None,
            older_url=form.url(path, before=page.older) if page.older else None,
            csv_url=form.url(reverse("history_csv")),
        )
    # A history restore (back button) needs the whole page, like a first visit.
    if request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request:
        context["swap_errors"] = True
        response = render(request, "kickouts/history.html#history-results", context)
        if "this_url" in context:
            # The address bar gets the filters in use, not every empty field of the form.
            push_url(response, context["this_url"])
        return response
    return render(request, "kickouts/history.html", context)


@require_GET
@login_required
@history_permission
def history_csv(request: HtmxHttpRequest) -> HttpResponseBase:
    filters = _filters(request)
    if not filters.is_valid():
        return HttpResponse(
            "These filters could not be used:\n" + filters.errors.as_text(),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    # Tuples, not model instances: no model is built for each of a million rows.
    # The requester's full name beside the login (the login alone names few people).
    full_name = Trim(Concat("requested_by__first_name", Value(" "), "requested_by__last_name"))
    rows = (
        filters.qs.annotate(requested_by_name=full_name)
        .order_by("-requested_at", "-id")
        .values_list(*(value for _, value in CSV_COLUMNS))
    )
    response = StreamingHttpResponse(
        csv_pieces(rows.iterator(chunk_size=CSV_CHUNK_ROWS)),
        content_type="text/csv; charset=utf-8",
    )
    stamp = timezone.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="retry-history-{stamp}.csv"'
    return response


def _filters(request: HtmxHttpRequest) -> HistoryFilter:
    """The history's filters, over the retries this user may see."""
    retries = RetryAttempt.objects.visible_to(request.user)
    return HistoryFilter(request.GET, queryset=retries, user=request.user)


def csv_pieces(rows: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    """The header, then the rows in pieces: memory stays flat however many."""
    header = [header for header, _ in CSV_COLUMNS]
    return spreadsheet.pieces(header, spreadsheet.lines(map(_cells, rows)))


def _cells(row: tuple[Any, ...]) -> list[str]:
    return [_cell(value) for value in row]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return spreadsheet.guard(value)
