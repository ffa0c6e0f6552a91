"""Before and after on the retry page, a supervisor's decision on an "outcome unknown" retry,
and the list of those waiting for one (the logic is in kickouts/compare.py and
kickouts/reconcile.py)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from .. import compare, reconcile
from ..decorators import login_required, permission_required
from ..energycap import EnergyCapError
from ..models import CompareState, Outcome, RetryAttempt
from .common import HtmxHttpRequest, visible_attempt

NOTE_MAX = 2000
# The waiting list shows the oldest this many; the heading gives the whole count.
WAITING_SHOWN = 200


def comparison_context(attempt: RetryAttempt) -> dict:
    """The before and after: the comparison and its rows by message."""
    comparison = attempt.compared
    return {
        "comparison": comparison,
        "compare_groups": (
            compare.by_message(comparison.rows)
            if comparison is not None and comparison.state == CompareState.COMPARED
            else []
        ),
    }


def retry_page_context(attempt: RetryAttempt) -> dict:
    """What the retry page adds: the candidates of an "outcome unknown" retry (with
    EnergyCAP's error when it could not be asked) and the decisions made."""
    context: dict = {
        "decisions": list(attempt.reconcile_decisions.select_related("decided_by")),
    }
    if attempt.outcome == Outcome.UNKNOWN:
        start, end = reconcile.window(attempt)
        context.update(window_start=start, window_end=end)
        try:
            context["candidates"] = reconcile.candidates(attempt)
        except EnergyCapError as exc:
            context["candidates_error"] = exc.message
    return context


@require_POST
@login_required
@permission_required("kickouts.reconcile_retry")
def decide(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Link a candidate, record "nothing was imported", or reverse the decision."""
    attempt = visible_attempt(request, pk)
    action = request.POST.get("action", "")
    note = request.POST.get("note", "").strip()[:NOTE_MAX]
    try:
        if action == "link":
            reconcile.link(
                attempt, user=request.user, task_guid=request.POST.get("task_guid", ""), note=note
            )
            messages.success(request, "Linked: the dashboard follows that task to its end.")
        elif action == "none_started":
            reconcile.none_started(attempt, user=request.user, note=note)
            messages.success(request, "Recorded: nothing was imported. The task may be retried.")
        elif action == "reverse":
            reconcile.reverse(attempt, user=request.user, note=note)
            messages.success(request, "Reversed: the retry's outcome is unknown again.")
        else:
            messages.error(request, "Choose what to record.")
    except reconcile.ReconcileError as exc:
        messages.error(request, str(exc))
    except EnergyCapError as exc:
        messages.error(request, f"EnergyCAP's task list could not be read: {exc.message}")
    return redirect("retry_detail", pk=pk)


@require_GET
@login_required
@permission_required("kickouts.reconcile_retry")
def waiting_for_decision(request: HtmxHttpRequest) -> HttpResponse:
    """The "outcome unknown" retries no supervisor has decided yet, oldest first, with age."""
    count = reconcile.waiting_count()
    retries = reconcile.waiting_for_decision().select_related("requested_by")[:WAITING_SHOWN]
    context = {
        "retries": retries,
        "now": timezone.now(),
        # The navigation's badge shows this count too: one COUNT for the page.
        "decisions_waiting": count,
        "shown_max": WAITING_SHOWN,
    }
    return render(request, "kickouts/waiting_for_decision.html", context)
