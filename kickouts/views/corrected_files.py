"""Importing a corrected file: the form's steps (choose, review, edit, send) for the imports
chosen on a task page or a kickout group, and the download of a stored file. The logic is in
kickouts/corrected_files.py."""

from __future__ import annotations

from django.db import IntegrityError
from django.http import FileResponse, Http404, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from .. import corrected_files, pages, uploads
from ..bulk import selected_guids
from ..decorators import login_required, permission_required
from ..energycap import EnergyCapError
from ..forms import INT32_MAX, CorrectedFileForm
from ..models import DuplicateToken, RetryAttempt, RetryInFlight
from .common import HtmxHttpRequest, ascii_number, visible_attempt

TEMPLATE = "kickouts/corrected_file.html"


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("kickouts.submit_retry")
@uploads.accepts_corrected_file
def corrected_file_form(request: HtmxHttpRequest) -> HttpResponse:
    """GET (?task=… for each import) shows the form; a POST's `action` names the step. The
    kickout group's "Import a corrected file" posts its ticked imports here."""
    data = request.POST if request.method == "POST" else request.GET
    guids = selected_guids(data)
    action = request.POST.get("action", "choose") if request.method == "POST" else "choose"
    context: dict = {"guids": guids}
    if not guids:
        context["refusal"] = (
            "No import was chosen: tick the imports the file corrects on a kickout group, or "
            "open an import's page, then choose “Import a corrected file”."
        )
        return render(request, TEMPLATE, context, status=400)
    if refusal := corrected_files.too_many(len(guids)):
        context["refusal"] = refusal
        return render(request, TEMPLATE, context, status=400)
    if action == "send":
        # The same form sent again (double click, back button): show what the first one did.
        earlier = RetryAttempt.objects.for_token(request.POST.get("form_token"), request.user)
        if earlier is not None:
            return redirect(earlier)
    page = pages.load_corrected_file_page(guids)
    context.update(page=page, sources=page.sources, usable=page.usable_sources)
    if not page.usable_sources:
        context["refusal"] = (
            "None of the chosen imports has kickouts a corrected file could correct (see why "
            "beside each one)."
        )
        return render(request, TEMPLATE, context, status=409)
    if isinstance(page.choices, EnergyCapError):
        # The form needs EnergyCAP's batches: nothing can be checked or sent without them.
        context["choices_error"] = page.choices
        return render(request, TEMPLATE, context)
    step = STEPS.get(action, review)
    return step(request, page, context)


def choose(request, page: pages.CorrectedFilePageData, context: dict) -> HttpResponse:
    """The chosen mode's fields with the values kept and no errors yet (htmx: those fields)."""
    source = request.POST if request.method == "POST" else request.GET
    initial = {"import_note": corrected_files.default_note(page.usable_sources)}
    initial.update({k: v for k, v in source.dict().items() if k not in ("task", "file")})
    again = _again(request, page)
    if again is not None:
        initial.update(again.form_initial())
        if again.file is not None:
            initial["profile"] = again.file.profile_code
    token = initial.get("form_token") if request.method == "POST" else None
    form = corrected_files.build_form(
        None, user=request.user, token=token, page=page, initial=initial
    )
    context["form"] = form
    if request.htmx:
        return render(request, "kickouts/_retry_form.html#mode-fields", context)
    return render(request, TEMPLATE, context)


def review(request, page: pages.CorrectedFilePageData, context: dict) -> HttpResponse:
    """Every rule checked, the file's too; a file that passed is kept for the send. When all
    hold: the file, its first rows, the sources and the exact body."""
    form = _bound_form(request, page, with_files=True)
    context["form"] = form
    valid = form.is_valid()
    if form.uploaded is not None and "form_token" not in form.errors:
        try:
            corrected_files.keep_upload(request.user, form, request.FILES["file"])
        except IntegrityError:
            return _used_form(request, context)
    if valid:
        corrected_files.remember_profile(form.kept, form)
        context.update(payload=form.payload(), confirming=True)
    return render(request, TEMPLATE, context)


def edit(request, page: pages.CorrectedFilePageData, context: dict) -> HttpResponse:
    """Back from the review: the reviewed values, bound, so they stay exact (the file kept)."""
    form = _bound_form(request, page)
    form.is_valid()  # the same values passed the review: this names the file's earlier import
    context["form"] = form
    return render(request, TEMPLATE, context)


def send(request, page: pages.CorrectedFilePageData, context: dict) -> HttpResponse:
    """Checked once more (batches just asked), then sent once; the retry's page follows it."""
    form = _bound_form(request, page)
    context["form"] = form
    if [source.guid for source in page.usable_sources] != selected_guids(request.POST):
        # An import reviewed could not be looked at again: never send for fewer than shown.
        context["refusal"] = (
            "Not sent: not every import the file was reviewed for could be checked again "
            "(see beside each one). Review again."
        )
        return render(request, TEMPLATE, context)
    if not form.is_valid():
        # Without a kept file the page says that unsent files are deleted after a while.
        context["file_gone"] = form.kept is None
        return render(request, TEMPLATE, context)
    try:
        attempt = corrected_files.submit_corrected_file(
            user=request.user, form=form, sources=page.usable_sources
        )
    except (DuplicateToken, RetryInFlight) as exc:
        attempt = exc.attempt
    return redirect(attempt)


STEPS = {"choose": choose, "review": review, "edit": edit, "send": send}


def _bound_form(request, page, *, with_files: bool = False) -> CorrectedFileForm:
    return corrected_files.build_form(
        request.POST,
        request.FILES if with_files else None,
        user=request.user,
        token=request.POST.get("form_token"),
        page=page,
        refusal=uploads.upload_refusal(request) if with_files else None,
    )


def _used_form(request, context: dict) -> HttpResponse:
    context["refusal"] = (
        "This form was already used to send a file. Open the form again to import another."
    )
    context.pop("form", None)
    return render(request, TEMPLATE, context, status=409)


def _again(request, page) -> RetryAttempt | None:
    """ "Try again with these settings", from a corrected file's page that sent nothing."""
    again = ascii_number(request.GET.get("again"), maximum=INT32_MAX)
    if again is None:
        return None
    guids = [source.guid for source in page.usable_sources]
    return (
        RetryAttempt.objects.visible_to(request.user)
        .touching(guids)
        .filter(pk=again)
        .select_related("corrected_file")
        .first()
    )


@require_GET
@login_required
def corrected_file_download(request: HtmxHttpRequest, pk: int) -> HttpResponseBase:
    """Exactly the file that was sent, for its requester and supervisors (a 404 for anyone
    else, logged), under its own name."""
    attempt = visible_attempt(request, pk)
    stored = attempt.file
    if stored is None:
        raise Http404("This retry sent no file.")
    try:
        handle = stored.file.open("rb")
    except OSError:
        raise Http404("The stored file is missing.") from None
    # as_attachment: never shown inline; FileResponse writes the name safely (RFC 6266, with
    # filename* for any character), and the name was made safe when it was uploaded.
    return FileResponse(
        handle,
        as_attachment=True,
        filename=stored.name,
        content_type="application/octet-stream",
    )
