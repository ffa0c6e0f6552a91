"""The retry form's steps (choose, edit, review, send) and its smart-batch preview, the retry
page and its status panel."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from .. import energycap, follow_up, lineage, pages
from ..choices import api_user
from ..decorators import login_required, permission_required
from ..energycap import EnergyCapError, NotFound
from ..follow_up_models import FollowState
from ..forms import SMART_LOOKUP_FAILED, BatchChoices, RetryForm
from ..models import DuplicateToken, RetryAttempt, RetryInFlight, UserSettings
from ..payloads import Task
from ..retries import submit_kickout_retry
from . import reconcile
from .common import HtmxHttpRequest, ascii_number, visible_attempt
from .tasks import chosen_message, kickout_context, retry_context

MAX_CONSECUTIVE_FAILURES = 3
# Seconds since 1970 in ASCII digits: float() also reads "nan", "1e999" and "١٢".
TIMESTAMP_RE = re.compile(r"[0-9]{1,11}(?:\.[0-9]{1,9})?")


@dataclass
class OpenRetry:
    """What every step of the retry form starts from: a retryable task and EnergyCAP's batches."""

    task: Task
    choices: BatchChoices
    context: dict
    data: pages.TaskPageData

    def form(self, request, data=None, initial=None) -> RetryForm:
        return self.data.retry_form(data, user=request.user, initial=initial, choices=self.choices)


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("kickouts.submit_retry")
def retry_form(request: HtmxHttpRequest, guid: str) -> HttpResponse:
    """The retry panel's steps: GET shows the form; a POST's `action` names the step."""
    action = request.POST.get("action", "choose") if request.method == "POST" else "choose"
    step = RETRY_STEPS.get(action, review)  # anything else is checked, never sent
    # The kickouts are shown by the review, and by every step without htmx (the whole page).
    with_kickouts = step is review or (step is not send and not request.htmx)
    opened = _open_retry(request, guid, with_kickouts=with_kickouts)
    if isinstance(opened, HttpResponse):
        return opened
    return step(request, opened)


def _open_retry(request, guid: str, *, with_kickouts: bool) -> OpenRetry | HttpResponse:
    """The task and the batches (at once), or the page that says why the form cannot go on.

    For the send step this GET of the task is the re-check right before sending.
    """
    try:
        data = pages.load_task_page(
            guid,
            with_kickouts=with_kickouts,
            with_choices=True,
            message=chosen_message(request),
        )
    except NotFound:
        return render(request, "kickouts/task_missing.html", {"guid": guid}, status=404)
    except EnergyCapError as exc:
        return _render_panel(request, None, {"guid": guid, "retry_error": exc})
    context = {"guid": guid, "task": data.task}
    if data.task.can_retry_kickouts and not isinstance(data.choices, EnergyCapError):
        return OpenRetry(data.task, data.choices, context, data)
    # Not retryable (also the answer to a forged POST: nothing is sent), or EnergyCAP's
    # batches could not be read: the panel says why, keeping what the clerk entered.
    context.update(retry_context(request, data))
    status = 409 if not data.task.can_retry_kickouts and not request.htmx else 200
    return _render_panel(request, data, context, status=status)


def choose(request, retry: OpenRetry) -> HttpResponse:
    """The chosen mode's fields, with the values kept and no errors yet."""
    source = request.POST if request.method == "POST" else request.GET
    context = {**retry.context, "form": retry.form(request, initial=source.dict())}
    if request.htmx:
        return render(request, "kickouts/_retry_form.html#mode-fields", context)
    return _render_panel(request, retry.data, context)


def edit(request, retry: OpenRetry) -> HttpResponse:
    """Back from the review: the reviewed values, bound, so they stay exact."""
    context = {**retry.context, "form": retry.form(request, request.POST)}
    return _render_panel(request, retry.data, context)


def review(request, retry: OpenRetry) -> HttpResponse:
    """Every rule checked; when all hold, the task, its kickouts and the exact body."""
    form = retry.form(request, request.POST)
    context = {**retry.context, "form": form}
    if form.is_valid():
        context.update(payload=form.payload(), confirming=True)
        if request.htmx:  # the whole page (below) shows the kickouts anyway
            context.update(kickout_context(request, retry.data))
    return _render_panel(request, retry.data, context)


def send(request, retry: OpenRetry) -> HttpResponse:
    """Checked once more (the task was fetched just now), then sent once; the retry's page
    follows it."""
    # The same form sent again (double click, back button, resubmit): show what
    # the first one did, before any validation that its own record would now fail.
    earlier = RetryAttempt.objects.for_token(request.POST.get("form_token"), request.user)
    if earlier is not None:
        return _to_retry_page(request, earlier)
    form = retry.form(request, request.POST)
    if not form.is_valid():
        return _render_panel(request, retry.data, {**retry.context, "form": form})
    try:
        attempt = submit_kickout_retry(
            user=request.user, form=form, task=retry.task, rechecked=True
        )
    except (DuplicateToken, RetryInFlight) as exc:
        attempt = exc.attempt
    return _to_retry_page(request, attempt)


RETRY_STEPS = {"choose": choose, "edit": edit, "review": review, "send": send}


@require_GET
@login_required
@permission_required("kickouts.submit_retry")
def smart_batch_preview(request: HtmxHttpRequest) -> HttpResponse:
    """What smart batch would do with the code typed so far (asked while the clerk types)."""
    api = energycap.client()
    try:
        # Only the API user and the lookup by code: not the list of open and pending batches.
        choices = BatchChoices(api_user(api), batches=[], find_by_code=api.batches_with_code)
    except EnergyCapError:
        sentence = SMART_LOOKUP_FAILED
    else:
        code = request.GET.get("new_batch_code", "")
        form = RetryForm(None, initial={"new_batch_code": code}, choices=choices)
        sentence = form.smart_path_preview()
    return render(request, "kickouts/_retry_form.html#smart-path", {"smart_path": sentence})


def _to_retry_page(request, attempt: RetryAttempt) -> HttpResponse:
    if request.htmx:
        return HttpResponseClientRedirect(attempt.get_absolute_url())
    return redirect(attempt)


def _render_panel(
    request, data: pages.TaskPageData | None, context: dict, status: int = 200
) -> HttpResponse:
    """The retry panel alone for htmx; the whole task page otherwise (JavaScript off)."""
    if request.htmx:
        return render(request, "kickouts/task_detail.html#retry-panel", context, status=status)
    if data is not None:
        context.update(kickout_context(request, data))
        context["lineage"] = lineage.for_task(data.task.guid)
    return render(request, "kickouts/task_detail.html", context, status=status)


@require_GET
@login_required
def retry_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    attempt = visible_attempt(request, pk)
    context = {"attempt": attempt}
    # The panel first: a reading it stores is then what the retry chain shows too.
    context.update(panel_context(request, attempt, watch_started=time.time(), failures=0))
    context["lineage"] = lineage.for_task(attempt.source_task_guid)
    context["email_note"] = email_note(attempt, request.user)
    context.update(reconcile.retry_page_context(attempt))
    return render(request, "kickouts/retry_detail.html", context)


@require_GET
@login_required
def status_panel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The polled status panel; answers 286 (htmx: stop polling) once polling should stop."""
    attempt = visible_attempt(request, pk, with_requester=False)
    if not request.htmx:
        return redirect(attempt)
    # Both come from the panel's own polling URL; anything else starts the watch again.
    started = request.GET.get("started", "")
    watch_started = float(started) if TIMESTAMP_RE.fullmatch(started) else time.time()
    failures = ascii_number(request.GET.get("failures"), maximum=99) or 0
    context = {"attempt": attempt}
    context.update(panel_context(request, attempt, watch_started=watch_started, failures=failures))
    reading = context["reading"]
    ended = reading is not None and reading.ok and not reading.task.is_running
    if ended and not context["keep_polling"]:
        # The last swap: what the end changes above and below the panel comes along.
        context.update(page_end_context(request, pk))
    status = 200 if context["keep_polling"] else 286
    return render(request, "kickouts/retry_detail.html#status-panel", context, status=status)


def page_end_context(request, pk: int) -> dict:
    """The retry page's parts that the new import's end changes (the outcome's notice, the
    facts, the retry chain), from the record as the panel's reading left it."""
    attempt = visible_attempt(request, pk)
    return {
        "attempt": attempt,
        "page_end": True,
        "lineage": lineage.for_task(attempt.source_task_guid),
        "email_note": email_note(attempt, request.user),
    }


def panel_context(request, attempt: RetryAttempt, *, watch_started: float, failures: int) -> dict:
    """What the status panel shows, and whether (and when) it polls again."""
    context = {
        "watch_started": f"{watch_started:.0f}",
        "keep_polling": False,
        "reading": None,
        "stopped_reason": "",
    }
    if not attempt.new_task_guid:
        return context
    # The worker's record while it follows the retry; shared polling if it seems down.
    reading, worker_down = follow_up.panel_reading(attempt)
    follow = attempt.follow
    context["reading"] = reading
    context["worker_down"] = worker_down
    context["follow"] = follow
    context.update(reconcile.comparison_context(attempt))
    if reading is not None and reading.ok:
        failures = 0
        # Polled on after the end until the worker compared the kickouts (reading the record
        # only; a late worker is waited for): the last swap brings the before and after.
        reporting = follow is not None and follow.state == FollowState.REPORTING
        running = reading.task.is_running or reporting
    elif follow is not None and follow.state == FollowState.FOLLOWING and not worker_down:
        failures = 0  # no answer yet, or EnergyCAP failing: the worker keeps asking
        running = True
    else:
        failures += 1
        running = True
    watched = time.time() - watch_started
    if not running:
        return context
    if (
        failures
        and reading is not None
        and (reading.error_permanent or failures >= MAX_CONSECUTIVE_FAILURES)
    ):
        context["stopped_reason"] = (
            f"Stopped checking after {failures} failed attempts in a row."
            if not reading.error_permanent
            else "Stopped checking: this error will not go away by itself."
        )
        return context
    if watched >= settings.STATUS_POLL_CAP_SECONDS:
        minutes = settings.STATUS_POLL_CAP_SECONDS / 60
        context["stopped_reason"] = (
            f"Stopped checking after {minutes:g} minutes; the import is still running."
        )
        return context
    interval = settings.STATUS_POLL_SECONDS
    # Back off after failures: 2, 4, 8 … intervals, capped at a minute.
    delay = min(60.0, interval * (2**failures)) if failures else interval
    context.update(
        keep_polling=True,
        failures=failures,
        poll_delay=f"{delay:g}s",
        now=timezone.now(),
    )
    return context


def email_note(attempt: RetryAttempt, viewer) -> str:
    """What the retry page says about the email to the requester."""
    follow = attempt.follow
    if follow is None:
        return ""
    if follow.notification:
        return follow.notification
    user = attempt.requested_by
    yours = user.pk == viewer.pk
    if not user.email:
        return (
            "You have no email address here, so no email will tell you when it ends."
            if yours
            else "The requester has no email address here, so no email will be sent."
        )
    if not UserSettings.of(user).email_when_retry_ends:
        return "Email turned off in Your settings." if yours else "The requester turned emails off."
    if follow.state == FollowState.FOLLOWING and attempt.bulk_id is not None:
        return (
            f"One email for the whole of bulk retry #{attempt.bulk_id} goes to {user.email} "
            "when its last import ends."
        )
    if follow.state == FollowState.FOLLOWING:
        return f"An email goes to {user.email} when the new import ends."
    return ""
