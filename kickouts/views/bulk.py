"""Bulk retry: the selection's review, send, the bulk's page and its progress, cancel, and the
supervisors' list of bulks. The logic is in kickouts/bulk.py."""

from __future__ import annotations

import hashlib
import json
import uuid

from django.conf import settings
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from .. import batch_modes, bulk_summary, energycap
from .. import bulk as bulk_logic
from ..bulk_models import BulkRetry
from ..choices import load_batch_choices, unavailable_batch_choices
from ..decorators import login_required, permission_required
from ..energycap import EnergyCapError
from ..forms import INT32_MAX
from .common import HtmxHttpRequest, ascii_number, positive_int

BULKS_PER_PAGE = 50


def _fingerprint(guids: list[str], body: dict) -> str:
    """What was reviewed: a Send of anything else shows the review again."""
    text = json.dumps([guids, body], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@require_POST
@login_required
@permission_required("kickouts.submit_retry")
def bulk_form(request: HtmxHttpRequest) -> HttpResponse:
    """The selected imports, one form, one review; "send" makes the bulk (once per token)."""
    guids = bulk_logic.selected_guids(request.POST)
    action = request.POST.get("action", "choose")
    context: dict = {"guids": guids, "limit": settings.BULK_RETRY_MAX}
    if not guids:
        context["refusal"] = "No import was selected: tick the imports to retry, then try again."
        return render(request, "kickouts/bulk_review.html", context)
    if refusal := bulk_logic.too_many(len(guids)):
        context["refusal"] = refusal
        return render(request, "kickouts/bulk_review.html", context)
    if action == "choose" and request.htmx:
        return _mode_fields(request, len(guids))
    if action == "send":
        earlier = BulkRetry.objects.filter(
            form_token=_uuid_or_none(request.POST.get("form_token")), requested_by=request.user
        ).first()
        if earlier is not None:  # the same form sent again: show what the first one did
            return redirect(earlier)
    review = bulk_logic.load_review(request.user, guids, request.POST)
    candidates, sendable, choices = review.candidates, review.sendable, review.choices
    context["candidates"] = candidates
    context["sendable"] = sendable
    context["loading"] = sum(c.loading for c in sendable)
    if isinstance(choices, EnergyCapError):
        context["error"] = choices
        return render(request, "kickouts/bulk_review.html", context)
    data = request.POST if action in ("review", "send") else None
    # Choosing a mode without JavaScript: the values kept, the chosen mode's fields shown.
    initial = None if data is not None else _initial(request)
    form = bulk_logic.build_bulk_form(
        data, choices=choices, import_count=len(sendable), initial=initial
    )
    context["form"] = form
    if data is None or not form.is_valid() or not sendable:
        return render(request, "kickouts/bulk_review.html", context)
    body = form.payload()
    fingerprint = _fingerprint([c.guid for c in sendable], body)
    if action == "send" and request.POST.get("reviewed") == fingerprint:
        bulk = bulk_logic.create_bulk(user=request.user, form=form, candidates=candidates)
        return redirect(bulk)
    context.update(
        reviewed=fingerprint,
        payload=json.dumps(body, indent=2, ensure_ascii=False),
        whole_set=form.whole_set_sentence(),
    )
    return render(request, "kickouts/bulk_review.html", context)


def _initial(request: HtmxHttpRequest) -> dict:
    """The values the form starts from: what was posted, or, for "send the imports not sent
    again" from a bulk's page, that bulk's own settings."""
    again = bulk_logic.visible_bulks(request.user).filter(
        pk=ascii_number(request.POST.get("again_of"), maximum=INT32_MAX) or 0
    )
    earlier = again.first()
    if earlier is None:
        return request.POST.dict()
    return batch_modes.form_initial(earlier.payload, earlier.batch_mode)


def _mode_fields(request: HtmxHttpRequest, import_count: int) -> HttpResponse:
    """The chosen mode's fields with the values kept (the radios' htmx, as on the single
    form): only the batches are asked for, not the selected imports."""
    try:
        choices = load_batch_choices(energycap.client())
    except EnergyCapError:
        choices = unavailable_batch_choices()
    form = bulk_logic.build_bulk_form(
        None, choices=choices, import_count=import_count, initial=request.POST.dict()
    )
    return render(request, "kickouts/_retry_form.html#mode-fields", {"form": form})


def _uuid_or_none(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _visible_bulk(request, pk: int) -> BulkRetry:
    bulk = bulk_logic.visible_bulks(request.user).filter(pk=pk).first()
    if bulk is None:
        raise Http404("No such bulk retry.")
    return bulk


@require_GET
@login_required
def bulk_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The bulk's page; its progress partial is polled (286 stops htmx once it is done)."""
    bulk = _visible_bulk(request, pk)
    context = {
        "bulk": bulk,
        "summary": bulk_summary.summarize(bulk),
        "resendable": bulk_logic.resendable(bulk),
        "lines": bulk.lines.select_related("retry__follow_up", "retry__comparison").order_by(
            "position"
        ),
        "poll_delay": f"{settings.STATUS_POLL_SECONDS:g}s",
    }
    if request.htmx and request.GET.get("panel") == "progress":
        # Polled until it sends no more and every new import it started has ended.
        status = 200 if bulk.is_running or context["summary"].running else 286
        return render(request, "kickouts/bulk_detail.html#progress", context, status=status)
    return render(request, "kickouts/bulk_detail.html", context)


@require_POST
@login_required
@permission_required("kickouts.submit_retry")
def bulk_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    bulk = _visible_bulk(request, pk)
    bulk_logic.cancel(bulk)
    return redirect(bulk)


@require_GET
@login_required
@permission_required("kickouts.view_all_retries")
def bulk_list(request: HtmxHttpRequest) -> HttpResponse:
    """Every bulk retry with its counts, newest first, a page at a time (supervisors).

    The page's bulks are chosen first (no COUNT of them all, as bugsink pages), then only
    those are summed: summing every bulk's lines to show fifty is most of the work."""
    number = positive_int(request.GET.get("page"))
    start = (number - 1) * BULKS_PER_PAGE
    newest = BulkRetry.objects.order_by("-requested_at", "-id").values_list("pk", flat=True)
    ids = list(newest[start : start + BULKS_PER_PAGE + 1])
    bulks = bulk_summary.with_counts(
        BulkRetry.objects.filter(pk__in=ids[:BULKS_PER_PAGE]).select_related("requested_by")
    ).order_by("-requested_at", "-id")
    context = {
        "rows": [(bulk, bulk_summary.annotated_summary(bulk)) for bulk in bulks],
        "page_number": number,
        "newer_page": number - 1 if number > 1 else None,
        "older_page": number + 1 if len(ids) > BULKS_PER_PAGE else None,
    }
    return render(request, "kickouts/bulk_list.html", context)
