"""The task list and the task page."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .. import energycap, handled, lineage, pages, roles, snapshots
from ..choices import unavailable_batch_choices
from ..decorators import login_required
from ..energycap import EnergyCapError, NotFound
from ..forms import INT32_MAX
from ..models import RetryAttempt
from ..queue_models import ImportSnapshot
from .common import PERIODS, HtmxHttpRequest, ascii_number, positive_int

# No 250: its rows took a quarter of an EnergyCAP round trip to render (see the README).
PAGE_SIZES = ("25", "50", "100")
TASKS_PER_PAGE = "50"
DETAIL_ROWS_PER_PAGE = 50
MESSAGE_MAX = 1000


@require_GET
@login_required
def task_list(request: HtmxHttpRequest) -> HttpResponse:
    period = request.GET.get("period", "30")
    if period not in PERIODS:
        period = "30"
    only_kickouts = request.GET.get("kickouts") == "1"
    full_name = request.GET.get("user", "").strip()[:255]
    page_number = positive_int(request.GET.get("page"))
    per_page = request.GET.get("per_page", TASKS_PER_PAGE)
    if per_page not in PAGE_SIZES:
        per_page = TASKS_PER_PAGE
    context = {
        "period": period,
        "periods": PERIODS,
        "per_page": per_page,
        "page_sizes": PAGE_SIZES,
        "only_kickouts": only_kickouts,
        "full_name": full_name,
        # Suggestions only: EnergyCAP's filter takes any full name, typed exactly.
        "known_users": ImportSnapshot.objects.user_names(),
        "page": None,
        "tasks": [],
        "error": None,
    }
    clauses = [("beginDate", f"last {PERIODS[period]} days", None)]
    if full_name:
        # EnergyCAP's own filter, so it covers every page, not just the one shown.
        clauses.append(("fullName", "equals", full_name))
    try:
        page = energycap.client().list_bill_import_tasks(
            filter_clauses=clauses,
            page_number=page_number,
            page_size=int(per_page),
        )
    except EnergyCapError as exc:
        context["error"] = exc
    else:
        # EnergyCAP does not document its sort order: sort the page ourselves.
        tasks = sorted(
            page.items, key=lambda t: (t.begin_date is not None, t.begin_date), reverse=True
        )
        context["page_task_count"] = len(tasks)
        if only_kickouts:
            # Whether EnergyCAP can filter by status is not documented, so this
            # filters the page EnergyCAP sent; paging still follows its pages.
            tasks = [t for t in tasks if t.has_kickouts]
        retries = RetryAttempt.objects.summary_by_source([t.guid for t in tasks])
        # A refresh of the list brings its ended imports with kickouts into the queue.
        handled, new = snapshots.register_and_read_handled(tasks)
        snapshots.snapshot_in_background(new)
        context["tasks"] = [(t, retries.get(t.guid), handled.get(t.guid)) for t in tasks]
        context["page"] = page
    template = "kickouts/task_list.html"
    # The back button's history restore wants the whole page, not the table alone.
    if request.htmx and not request.htmx.boosted and not request.htmx.history_restore_request:
        template += "#task-table"
    return render(request, template, context)


@require_GET
@login_required
def task_detail(request: HtmxHttpRequest, guid: str) -> HttpResponse:
    # The task, its kickouts and the retry form's batches at once: one round trip.
    try:
        data = pages.load_task_page(
            guid, with_choices=may_retry(request.user), message=chosen_message(request)
        )
    except NotFound:
        return render(request, "kickouts/task_missing.html", {"guid": guid}, status=404)
    except EnergyCapError as exc:
        return render(
            request, "kickouts/task_detail.html", {"guid": guid, "task": None, "error": exc}
        )
    context = {"guid": guid, "task": data.task, "error": None}
    context.update(kickout_context(request, data))
    context.update(handled.panel_context(request, guid))
    context.update(retry_context(request, data))
    context["lineage"] = lineage.for_task(guid)
    return render(request, "kickouts/task_detail.html", context)


def may_retry(user) -> bool:
    return user.has_perm("kickouts.submit_retry")


def chosen_message(request) -> str:
    """The kickout message the rows are filtered by (none that long exists: all rows)."""
    chosen = request.GET.get("message", "")
    return "" if len(chosen) > MESSAGE_MAX else chosen


def kickout_context(request, data: pages.TaskPageData) -> dict:
    """The kickout summary and one page of the detail grid (filtered by message)."""
    if data.kickouts is None:
        return {}
    if isinstance(data.kickouts, EnergyCapError):
        return {"kickout_error": data.kickouts}
    summary, grid = data.kickouts.summary, data.kickouts.grid
    paginator = Paginator(grid.rows, DETAIL_ROWS_PER_PAGE)
    rows_page = paginator.get_page(positive_int(request.GET.get("rows")))
    return {
        "summary": summary,
        "chosen_message": chosen_message(request),
        "grid": grid,
        "rows_page": rows_page,
        "row_cells": [[row.get(c, "") for c in grid.columns] for row in rows_page],
    }


def retry_context(request, data: pages.TaskPageData) -> dict:
    """What the retry panel beside the kickouts shows: the form, or why there is none."""
    task, choices = data.task, data.choices
    if not task.can_retry_kickouts:
        return {"retry_unavailable": _why_no_retry(task)}
    if not may_retry(request.user):
        return {
            "retry_unavailable": (
                f"Retrying kickouts needs the {roles.in_words()} role; ask an "
                "administrator to add you to one of them."
            )
        }
    if isinstance(choices, EnergyCapError):
        if request.method != "POST":
            return {"retry_error": choices}
        # Keep what the clerk entered, beside the message, to send once EnergyCAP answers.
        kept = data.retry_form(
            user=request.user, initial=request.POST.dict(), choices=unavailable_batch_choices()
        )
        return {"retry_error": choices, "form": kept}
    initial = {"batch_mode": request.GET.get("batch_mode", "")[:40]}
    again = ascii_number(request.GET.get("again"), maximum=INT32_MAX)
    if again is not None:
        # "Try again with these settings", from a rejected or unsent retry's page.
        earlier = (
            RetryAttempt.objects.visible_to(request.user)
            .filter(pk=again, source_task_guid=task.guid)
            .first()
        )
        if earlier is not None:
            initial = earlier.form_initial()
    return {"form": data.retry_form(user=request.user, initial=initial)}


def _why_no_retry(task) -> str:
    if not task.is_bill_import:
        return (
            f"This is a {task.task_type_info or task.task_type_code or 'non-import'} task; "
            f"only bill imports have kickouts to retry."
        )
    if task.is_running:
        return "This import is still running; its kickouts can be retried once it ends."
    return (
        f"This import ended “{task.status or 'without a status'}”; EnergyCAP only re-imports "
        f"the kickouts of an import that is “Completed with kickouts”."
    )
