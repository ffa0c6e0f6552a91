"""Importing a corrected file: keep the reviewed upload, record first, send once, record the
outcome.

This is the one place that turns a valid `CorrectedFileForm` into `POST /api/v3/import/bill`.
The path is the re-import's (kickouts/retries.py) with a file: the upload that passed its
checks at the review is stored through Django's storage API, keyed by the form's one-time
token (`CorrectedFile`, no retry yet); the send step writes the `RetryAttempt` (kind
"corrected file", outcome "submitting") with its sources and links the stored file to it in
one transaction, reads the file back from storage (base64 and sha256 in one pass: what is sent
is what was reviewed), POSTs once, and records the answer with the re-import's own
`record_answer` (its follow-up starts in the same transaction as "submitted"). Its source
imports leave the kickout queue as "corrected file imported".

Duplicates, per source import, whatever their kind: a corrected file follows the latest import
of each source in its duplicate sequence (read before the form is checked, so two clerks
sending at once claim the same number and the database lets one through), and the same file
(sha256) already imported for one of its sources needs the retry form's confirmation (a
supervisor), naming that import.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction

from . import energycap, follow_up, snapshots, uploads
from .corrected_file_models import CorrectedFile, prune_unsent, stored_name
from .energycap import Verdict
from .forms import NOTE_MAX, CorrectedFileForm
from .history_filters import forget_people_with_retries
from .models import Kind, RetryAttempt, SourceSlot
from .pages import CorrectedFilePageData, Source
from .retries import record_answer

logger = logging.getLogger(__name__)

# The most imports one corrected file may correct (a kickout group's selection).
MAX_SOURCES = 100
# Unsent uploads pruned at each review, so storage is cleaned without a scheduled job (the
# management command prune_corrected_files does all of them).
PRUNED_PER_REVIEW = 20


def too_many(count: int) -> str:
    """Why a selection is refused for its size, or "" when it fits."""
    if count <= MAX_SOURCES:
        return ""
    return (
        f"{count} imports are selected; one corrected file may correct at most {MAX_SOURCES}. "
        "Select fewer."
    )


def default_note(sources: Sequence[Source]) -> str:
    """The import note's first words: the source imports' numbers, as clerks know them."""
    labels = [source.label for source in sources]
    note = "Corrected file for " + _joined(labels)
    shown = len(labels)
    while len(note) > NOTE_MAX and shown > 1:
        shown -= 1
        note = (
            "Corrected file for " + ", ".join(labels[:shown]) + f" and {len(labels) - shown} more"
        )
    return note


def _joined(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def same_file_import(guids: Sequence[str], sha256: str) -> RetryAttempt | None:
    """The latest import of this very file (its sha256) for any of these imports that may
    have imported its bills."""
    return (
        RetryAttempt.objects.touching(guids)
        .may_have_imported()
        .filter(kind=Kind.CORRECTED_FILE, corrected_file__sha256=sha256)
        .select_related("requested_by", "corrected_file")
        .order_by("-requested_at", "-id")
        .first()
    )


def build_form(
    data=None,
    files=None,
    *,
    user,
    token,
    page: CorrectedFilePageData,
    refusal: uploads.UploadRefusal | None = None,
    initial: dict | None = None,
) -> CorrectedFileForm:
    """The form for these sources, with the upload this form (its token) kept, if any.

    The latest import of each source is read here, before the form is checked: the sequence
    the import claims follows what this request saw (see the module's docstring)."""
    guids = [source.guid for source in page.usable_sources]
    latest = {guid: RetryAttempt.objects.latest_import_of(guid) for guid in guids}
    return CorrectedFileForm(
        data,
        files,
        initial=initial,
        choices=page.choices,
        profiles=page.profiles,
        kept=CorrectedFile.objects.kept_for(token, user) if token else None,
        refusal=refusal,
        find_same_file=lambda sha256: same_file_import(guids, sha256),
        latest_imports=latest,
        may_repeat=user.has_perm("kickouts.confirm_duplicate_retry"),
    )


def keep_upload(user, form: CorrectedFileForm, upload: UploadedFile) -> CorrectedFile:
    """Store an upload that passed its checks, for the next steps of its form (its one-time
    token): the review shows it, the send reads it back. A new upload for the same form
    replaces the one kept before."""
    checked = form.uploaded
    assert checked is not None, "kept only once a new upload passed its checks"
    token = form.cleaned_data["form_token"]
    prune_unsent(limit=PRUNED_PER_REVIEW)
    kept = CorrectedFile(
        form_token=token,
        uploaded_by=user,
        name=checked.name,
        size=checked.size,
        sha256=checked.sha256,
        kind=checked.kind,
        rows=checked.rows,
        files=[uploads.inner_file_json(inner) for inner in checked.files],
    )
    upload.seek(0)
    kept.file.save(stored_name(kept.form_token, checked.name), upload, save=False)
    replaced = CorrectedFile.objects.kept_for(token, user)
    try:
        with transaction.atomic():
            if replaced is not None:
                CorrectedFile.objects.filter(pk=replaced.pk, retry=None).delete()
            kept.save()
    except IntegrityError:
        # The token is another user's, or its form was sent meanwhile: keep nothing.
        kept.file.delete(save=False)
        raise
    if replaced is not None:
        replaced.file.delete(save=False)
    form.kept = kept
    return kept


def remember_profile(kept: CorrectedFile, form: CorrectedFileForm) -> None:
    """The reviewed profile, shown with the file in the history and on the retry page."""
    code = form.cleaned_data.get("profile", "")
    name = form.profile_label if code else ""
    CorrectedFile.objects.filter(pk=kept.pk).update(profile_code=code, profile_name=name)
    kept.profile_code, kept.profile_name = code, name


@dataclass(frozen=True)
class _SourceImport:
    """The first source as `RetryAttempt.start` reads it."""

    guid: str
    task_id: int | None
    status: str


def submit_corrected_file(*, user, form: CorrectedFileForm, sources: Sequence[Source]):
    """Send a valid corrected-file form exactly once and return its record.

    Raises `DuplicateToken` (this form was sent already) and `RetryInFlight` (another import
    of a source holds its place) from `RetryAttempt.start`.
    """
    kept = form.kept
    remember_profile(kept, form)
    slots = [
        SourceSlot(source.guid, source.task_id, _next_sequence(form, source.guid))
        for source in sources
    ]
    first = sources[0].snapshot
    assert first is not None, "a corrected file is sent for stored imports only"
    try:
        attempt = RetryAttempt.start(
            kind=Kind.CORRECTED_FILE,
            user=user,
            form_token=form.cleaned_data["form_token"],
            source_task=_SourceImport(first.task_guid, first.task_id, first.status),
            batch_mode=form.cleaned_data["batch_mode"],
            batch_code=form.batch_code(),
            import_note=form.cleaned_data.get("import_note", ""),
            payload=form.payload(),
            confirmed_duplicate_of=form.earlier_retry,
            sources=slots,
            corrected_file=kept,
        )
    finally:
        forget_people_with_retries()
    send_started_file(attempt, user=user, kept=kept, sources=[s.snapshot for s in sources])
    return attempt


def _next_sequence(form: CorrectedFileForm, guid: str) -> int:
    latest = form.latest_imports.get(guid)
    return latest.sequence_of(guid) + 1 if latest is not None else 0


def send_started_file(attempt: RetryAttempt, *, user, kept: CorrectedFile, sources) -> None:
    """The part after the record is written: the stored file read back, one POST, the
    outcome recorded."""
    api = energycap.client()
    # Should this process die before the answer is recorded, a sweep settles the record
    # once its lease has passed (kickouts/follow_up.py).
    follow_up.watch_submission(attempt)
    try:
        with kept.file.open("rb") as stored:
            data, sha256 = uploads.base64_and_sha256(stored)
    except OSError as exc:
        logger.warning("Corrected file #%s could not be read from storage: %s", attempt.pk, exc)
        attempt.mark_not_sent(
            "Not sent: the stored file could not be read back from the dashboard's storage. "
            "Nothing was imported: upload the file again."
        )
        return
    if sha256 != kept.sha256:
        attempt.mark_not_sent(
            "Not sent: the stored file is not the one that was reviewed (its sha256 changed). "
            "Nothing was imported: upload the file again."
        )
        return
    attempt.mark_sending()
    answer = api.import_bill({**attempt.payload, "data": data})
    del data  # the body's text is the largest thing this request holds
    record_answer(attempt, answer)
    if answer.verdict == Verdict.ACCEPTED:
        # The sources leave the kickout queue as "corrected file imported".
        snapshots.mark_corrected(sources, user, attempt.pk)
    logger.info(
        "Corrected file #%s (%s, %s bytes) for %s by %s: %s (%s)",
        attempt.pk,
        kept.sha256[:12],
        kept.size,
        ", ".join(s.task_guid for s in sources),
        user.get_username(),
        attempt.outcome,
        answer.answer,
    )
