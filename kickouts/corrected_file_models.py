"""The records a corrected-file import adds to its `RetryAttempt`: the imports it corrects
(`RetrySource`) and the file itself (`CorrectedFile`). Imported by `kickouts.models`, so
Django sees them as the app's.

`RetrySource`: one row per source import of every retry, a re-import's one source as well as
each import a corrected file corrects (a file may correct several imports chosen on a kickout
group). The per-source rules live here as constraints: one import in flight per source, and
one import per (source, duplicate sequence) among those that may have imported, whatever their
kind. They need the retry's outcome, so each row keeps a copy of it (`outcome`), written only
by `RetryAttempt`'s own outcome changes in the same transaction (kickouts/models.py,
`set_outcome`). `RetryAttempt.source_task_guid` stays the first source (its own constraints
cover that one, as before).

`CorrectedFile`: the uploaded file, stored through Django's storage API (`STORAGES["default"]`:
local files under MEDIA_ROOT by default, any backend in production), with what its checks
found. It is written when a file passes its checks at the review, keyed by the form's one-time
token, with no retry yet ("unsent"): the send step reads it back from storage. Sending links it
to its retry. Unsent uploads older than `CORRECTED_FILE_UNSENT_HOURS` are deleted with their
files (`prune_unsent`); sent files are kept as long as their retry record.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from . import uploads

# The outcomes after which EnergyCAP may hold a new import of a source's bills (the same list
# as kickouts.models.MAY_HAVE_IMPORTED, which is built from this one).
MAY_HAVE_IMPORTED_VALUES = ["submitting", "submitted", "unknown"]


class RetrySource(models.Model):
    """One source import of a retry, and the retry's outcome as its constraints need it."""

    retry = models.ForeignKey(
        "kickouts.RetryAttempt", on_delete=models.CASCADE, related_name="sources"
    )
    task_guid = models.CharField(max_length=36)
    task_id = models.IntegerField(null=True, blank=True)
    # 0 for the first import of this source that may have imported; n+1 for the next.
    duplicate_sequence = models.PositiveIntegerField(default=0)
    # A copy of the retry's outcome (see the module's docstring).
    outcome = models.CharField(max_length=20)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["task_guid"],
                condition=Q(outcome="submitting"),
                name="one_import_in_flight_per_source",
            ),
            models.UniqueConstraint(
                fields=["task_guid", "duplicate_sequence"],
                condition=Q(outcome__in=MAY_HAVE_IMPORTED_VALUES),
                name="one_import_per_source_sequence",
            ),
        ]
        indexes = [
            models.Index(fields=["task_guid"], name="retry_source_task"),
            # The history's search by an import's number.
            models.Index(fields=["task_id"], name="retry_source_task_id"),
        ]

    def __str__(self) -> str:
        return f"Import {self.task_id or self.task_guid} (retry #{self.retry_id})"


# Stored under a random name (the form's token, the extension kept), never the browser's: the
# download gives the file its own name back.
UPLOAD_TO = "corrected-files/%Y/%m/"


def stored_name(token, name: str) -> str:
    extension = uploads.extension_of(name)
    return f"{token.hex}.{extension}" if extension else token.hex


class CorrectedFileQuerySet(models.QuerySet):
    def unsent(self) -> CorrectedFileQuerySet:
        return self.filter(retry__isnull=True)

    def kept_for(self, token, user) -> CorrectedFile | None:
        """The unsent upload this form (its one-time token) stored for this user."""
        return self.unsent().filter(form_token=token, uploaded_by=user).first()


class CorrectedFile(models.Model):
    """An uploaded corrected file, as stored and as checked (kickouts/uploads.py)."""

    retry = models.OneToOneField(
        "kickouts.RetryAttempt",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="corrected_file",
    )
    # The one-time token of the form that uploaded it: the send step finds the file by it.
    form_token = models.UUIDField(unique=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    uploaded_at = models.DateTimeField(default=timezone.now)
    file = models.FileField(upload_to=UPLOAD_TO, max_length=255)
    name = models.CharField(max_length=uploads.NAME_MAX_CHARS)  # safe, sent as fileName
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    kind = models.CharField(max_length=8)  # csv, txt, dat, xlsx or zip
    rows = models.PositiveIntegerField()
    # Each file EnergyCAP reads (the upload, or each one inside the ZIP): name, kind, size,
    # rows, columns, and the header and first rows the review shows.
    files = models.JSONField(default=list)
    # The import profile chosen at the review ("" is EnergyCAP's Advanced format).
    profile_code = models.CharField(max_length=255, blank=True)
    profile_name = models.CharField(max_length=255, blank=True)

    objects = CorrectedFileQuerySet.as_manager()

    class Meta:
        indexes = [
            # The unsent uploads to prune, oldest first.
            models.Index(fields=["uploaded_at"], condition=Q(retry=None), name="corrected_unsent"),
            # The same file already imported for a source (kickouts/corrected_files.py).
            models.Index(fields=["sha256"], name="corrected_file_sha256"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({uploads.format_size(self.size)})"

    @property
    def size_label(self) -> str:
        return uploads.format_size(self.size)

    @property
    def profile_label(self) -> str:
        return self.profile_name or "EnergyCAP's Advanced format"

    def checked(self) -> uploads.CheckedFile:
        """What the checks found when it was uploaded (it passed them all)."""
        return uploads.CheckedFile(
            name=self.name,
            original_name=self.name,
            size=self.size,
            sha256=self.sha256,
            kind=self.kind,
            files=tuple(uploads.inner_file_from_json(item) for item in self.files),
            problems=(),
        )


def unsent_lifetime() -> timedelta:
    return timedelta(hours=settings.CORRECTED_FILE_UNSENT_HOURS)


def prune_unsent(now=None, limit: int | None = None) -> int:
    """Delete unsent uploads older than their lifetime, stored files first; how many."""
    now = now or timezone.now()
    old = CorrectedFile.objects.unsent().filter(uploaded_at__lt=now - unsent_lifetime())
    pruned = 0
    for upload in old.order_by("uploaded_at")[:limit]:
        # The file first: a row left without its file is pruned again, a file without its
        # row would be kept for ever.
        upload.file.delete(save=False)
        if CorrectedFile.objects.unsent().filter(pk=upload.pk).delete()[0]:
            pruned += 1
    return pruned
