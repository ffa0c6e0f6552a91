"""The retry record and its life cycle.

A `RetryAttempt` is written *before* the import is sent (a kickout re-import, or a corrected
file: its `kind`) and updated with the outcome after it, so a crash between the two leaves an
honest "submitting" row that later turns into "outcome unknown", never a silent gap. Every
change of its outcome goes through `set_outcome`, which keeps its sources' copy of it
(`RetrySource`, kickouts/corrected_file_models.py) in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property

from . import batch_modes
from .corrected_file_models import MAY_HAVE_IMPORTED_VALUES, CorrectedFile, RetrySource
from .queue_models import HandledReason


class Kind(models.TextChoices):
    """What a retry sends: the import's kickout files again, or a file a clerk corrected."""

    REIMPORT = "reimport", "Re-import"
    CORRECTED_FILE = "corrected_file", "Corrected file"


# How the pages and emails name each kind's import, and the handled reason it gives its
# sources in the kickout queue.
KIND_NOUNS: dict[str, str] = {
    Kind.REIMPORT: "re-import",
    Kind.CORRECTED_FILE: "corrected-file import",
}
KIND_REASONS: dict[str, str] = {
    Kind.REIMPORT: HandledReason.REIMPORTED,
    Kind.CORRECTED_FILE: HandledReason.CORRECTED_FILE,
}


class Outcome(models.TextChoices):
    SUBMITTING = "submitting", "Submitting"
    SUBMITTED = "submitted", "Submitted"
    REJECTED = "rejected", "Rejected by EnergyCAP"
    NOT_SENT = "not_sent", "Not sent"
    UNKNOWN = "unknown", "Outcome unknown"
    # An "outcome unknown" a supervisor settled from EnergyCAP's task list (kickouts/reconcile.py).
    NONE_IMPORTED = "none_imported", "Nothing imported"


# Outcomes after which EnergyCAP may hold a new import of the same kickouts: another retry
# of the same task would import the bills twice (submitting, submitted, outcome unknown; the
# values are listed where the per-source constraints use them too).
MAY_HAVE_IMPORTED = [Outcome(value) for value in MAY_HAVE_IMPORTED_VALUES]


class CompareState(models.TextChoices):
    """What became of comparing the source's kickout rows with the new task's
    (kickouts/compare.py); a retry without a `Comparison` was not compared (yet)."""

    COMPARED = "compared", "Compared"
    NEW_TASK_FAILED = "failed", "New import failed"
    ERROR = "error", "Could not compare"


class Reconciled(models.TextChoices):
    """A supervisor's decision on an "outcome unknown" retry (kickouts/reconcile.py)."""

    UNDECIDED = "", "Undecided"
    LINKED = "linked", "Linked to an EnergyCAP task"
    NONE_STARTED = "none_started", "Nothing was imported"


@dataclass(frozen=True)
class SourceSlot:
    """One source import of a retry as `RetryAttempt.start` records it: the import, and its
    number among the imports of that source that may have imported."""

    guid: str
    task_id: int | None
    duplicate_sequence: int = 0


class RetryInFlight(Exception):
    """Another retry of the same task is being sent, or was just made.

    `attempt` is the "not sent" record left for the refused request.
    """

    def __init__(self, attempt: RetryAttempt):
        super().__init__("another retry of this task is in flight")
        self.attempt = attempt


class DuplicateToken(Exception):
    """This form was already submitted once; `attempt` is what it created."""

    def __init__(self, attempt: RetryAttempt):
        super().__init__("form already submitted")
        self.attempt = attempt


@dataclass
class RetrySummary:
    count: int
    latest_outcome: str
    latest_pk: int

    @property
    def latest_outcome_label(self) -> str:
        return Outcome(self.latest_outcome).label


class RetryAttemptQuerySet(models.QuerySet):
    def visible_to(self, user) -> RetryAttemptQuerySet:
        if user.has_perm("kickouts.view_all_retries"):
            return self
        return self.filter(requested_by=user)

    def for_token(self, token, user) -> RetryAttempt | None:
        """The retry a form with this one-time token already made, if any."""
        try:
            token = uuid.UUID(str(token))
        except ValueError:
            return None
        return self.filter(form_token=token, requested_by=user).first()

    def may_have_imported(self) -> RetryAttemptQuerySet:
        return self.filter(outcome__in=MAY_HAVE_IMPORTED)

    def touching(self, guids) -> RetryAttemptQuerySet:
        """Retries with any of these imports among their sources: as their first source, or
        as another source of a corrected file (two index lookups, not a join)."""
        guids = list(guids)
        others = RetrySource.objects.filter(task_guid__in=guids).values_list("retry_id", flat=True)
        return self.filter(Q(source_task_guid__in=guids) | Q(pk__in=list(others)))

    def latest_import_of(self, task_guid: str) -> RetryAttempt | None:
        """The latest import of this task's kickouts that may have imported them: a re-import,
        or a corrected file with this task among its sources (a record left "submitting" by a
        process that died is settled first, once its lease has passed). The latest is the one
        with the highest number in this task's duplicate sequence."""
        touching = self.touching([task_guid])
        expire_stale_submissions(touching)
        imports = (
            touching.may_have_imported()
            .select_related("requested_by", "corrected_file")
            .prefetch_related("sources")
        )
        return max(
            imports,
            key=lambda retry: (retry.sequence_of(task_guid), retry.requested_at, retry.pk),
            default=None,
        )

    def summary_by_source(self, guids: list[str]) -> dict[str, RetrySummary]:
        """Retry count and latest outcome per source task (corrected files for several imports
        count for each), in two queries."""
        wanted = set(guids)
        others: dict[int, set[str]] = {}
        for pk, guid in RetrySource.objects.filter(task_guid__in=guids).values_list(
            "retry_id", "task_guid"
        ):
            others.setdefault(pk, set()).add(guid)
        summaries: dict[str, RetrySummary] = {}
        rows = (
            self.filter(Q(source_task_guid__in=guids) | Q(pk__in=list(others)))
            .order_by("-requested_at", "-id")
            .values_list("source_task_guid", "outcome", "pk")
        )
        for first, outcome, pk in rows:
            for guid in ({first} | others.get(pk, set())) & wanted:
                if guid in summaries:
                    summaries[guid].count += 1
                else:
                    summaries[guid] = RetrySummary(count=1, latest_outcome=outcome, latest_pk=pk)
        return summaries

    def unfinished(self) -> RetryAttemptQuerySet:
        """Retries whose new task may still be running (worth asking EnergyCAP about)."""
        return self.filter(outcome=Outcome.SUBMITTED, follow_up__finished=False)


class RetryAttempt(models.Model):
    """One request by a dashboard user to import a task's kickouts again (re-import them, or
    import a corrected file): what was asked, and what EnergyCAP answered. What happened after
    the answer has records of its own: the new task's follow-up (`FollowUp`), its before and
    after (`Comparison`), a supervisor's decisions on a lost answer (`ReconcileDecision`); a
    corrected file's sources (`RetrySource`) and the file (`CorrectedFile`)."""

    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.REIMPORT)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="retry_attempts"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    form_token = models.UUIDField(unique=True, help_text="One-time token of the submitted form.")

    # The source import (a corrected file's first; each one is a `RetrySource`).
    source_task_guid = models.CharField(max_length=36)
    source_task_id = models.IntegerField(null=True, blank=True)
    source_status = models.CharField(max_length=100, blank=True)
    # Set when the source task is itself the new task of an earlier retry.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    # The earlier retry a supervisor explicitly confirmed re-importing again.
    confirmed_duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # 0 for the first retry of a task that may import; n+1 for a confirmed repeat of n.
    # Unique per task among retries that may have imported: two people cannot both
    # make "the next" import of the same kickouts, however close their clicks.
    duplicate_sequence = models.PositiveIntegerField(default=0)

    batch_mode = models.CharField(max_length=40, choices=batch_modes.CHOICES)
    batch_code = models.CharField(max_length=255, blank=True)
    import_note = models.TextField(blank=True)
    # A corrected file's `data` is kept as "<base64 of N bytes>": its bytes are the stored file.
    payload = models.JSONField(help_text="The exact JSON body sent to EnergyCAP.")
    # The bulk retry this retry was one import of (kickouts/bulk.py), if any.
    bulk = models.ForeignKey(
        "kickouts.BulkRetry",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="retries",
    )

    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.SUBMITTING)
    sent_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    upstream_status_code = models.IntegerField(null=True, blank=True)
    upstream_message = models.TextField(blank=True)
    new_task_guid = models.CharField(max_length=36, blank=True)
    # The new import's number, as clerks know it: EnergyCAP's answer names only its GUID,
    # so it is stored from the first reading of the new task (kickouts/follow_up.py).
    new_task_id = models.IntegerField(null=True, blank=True)

    # Reconciling "outcome unknown" (kickouts/reconcile.py): the current decision; every
    # decision, reversals too, is a `ReconcileDecision`.
    reconciled = models.CharField(
        max_length=20, choices=Reconciled.choices, default=Reconciled.UNDECIDED, blank=True
    )
    reconciled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reconciled_at = models.DateTimeField(null=True, blank=True)
    reconciled_note = models.TextField(blank=True)

    objects = RetryAttemptQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at", "-id"]
        permissions = [
            ("submit_retry", "Can retry a task's kickouts"),
            ("view_all_retries", "Can see every user's retry history"),
            ("confirm_duplicate_retry", "Can re-import kickouts that were already re-imported"),
            ("reconcile_retry", 'Can settle an "outcome unknown" retry from EnergyCAP\'s tasks'),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["source_task_guid"],
                condition=Q(outcome="submitting"),
                name="one_in_flight_retry_per_task",
            ),
            models.UniqueConstraint(
                fields=["source_task_guid", "duplicate_sequence"],
                condition=Q(outcome__in=["submitting", "submitted", "unknown"]),
                name="one_import_per_duplicate_sequence",
            ),
        ]
        indexes = [
            models.Index(fields=["source_task_guid"], name="retry_source_guid"),
            models.Index(fields=["new_task_guid"], name="retry_new_guid"),
            models.Index(fields=["requested_by", "-requested_at"], name="retry_user_time"),
            models.Index(fields=["outcome", "-requested_at"], name="retry_outcome_time"),
            models.Index(fields=["batch_mode", "-requested_at"], name="retry_mode_time"),
            models.Index(fields=["-requested_at", "-id"], name="retry_time"),
            models.Index(fields=["batch_code"], name="retry_batch_code"),
            # The history's search by an import's number.
            models.Index(fields=["source_task_id"], name="retry_source_id"),
            models.Index(fields=["new_task_id"], name="retry_new_id"),
            # The history's kind filter: corrected files are the few.
            models.Index(
                fields=["-requested_at", "-id"],
                condition=Q(kind="corrected_file"),
                name="retry_corrected_time",
            ),
            # Submissions whose process may have died mid-call (`expire_stale_submissions`).
            models.Index(
                fields=["requested_at"],
                condition=Q(outcome="submitting"),
                name="retry_submitting",
            ),
            # "Outcome unknown" retries waiting for a supervisor's decision: the navigation's
            # badge counts them on every page a supervisor opens, and their list reads them
            # oldest first (kickouts/reconcile.py, `waiting_for_decision`).
            models.Index(
                fields=["requested_at", "id"],
                condition=Q(outcome="unknown", reconciled=""),
                name="retry_waiting_decision",
            ),
        ]

    def __str__(self) -> str:
        return f"Retry #{self.pk} of {self.source_task_guid}"

    def get_absolute_url(self) -> str:
        return reverse("retry_detail", args=[self.pk])

    @property
    def try_again_url(self) -> str:
        """The form that sends the same settings again: the task's retry panel, or the
        corrected-file form for the same sources (the file is chosen again)."""
        if self.is_corrected_file:
            query = urlencode([("task", guid) for guid in self.source_guids] + [("again", self.pk)])
            return f"{reverse('corrected_file_form')}?{query}"
        return f"{reverse('task_detail', args=[self.source_task_guid])}?again={self.pk}#retry-panel"

    # -- life cycle --

    @classmethod
    def start(
        cls,
        *,
        user,
        form_token,
        source_task,
        batch_mode: str,
        batch_code: str,
        import_note: str,
        payload: dict,
        confirmed_duplicate_of: RetryAttempt | None = None,
        bulk=None,
        kind: str = Kind.REIMPORT,
        sources: list[SourceSlot] | None = None,
        corrected_file: CorrectedFile | None = None,
    ) -> RetryAttempt:
        """Write the record in state "submitting", with its sources, before anything is sent.

        `source_task` is the (first) source import. A re-import's one source follows the
        confirmed duplicate in its sequence (0 without one); a corrected file gives each of
        its `sources` with its sequence, and the `corrected_file` it sends, linked to the
        record in the same transaction.

        Raises DuplicateToken when this form was already submitted, and
        RetryInFlight when the database refuses a second import of a source.
        """
        existing = cls.objects.filter(form_token=form_token).first()
        if existing is not None:
            raise DuplicateToken(existing)
        if sources is None:
            sequence = (
                confirmed_duplicate_of.sequence_of(source_task.guid) + 1
                if confirmed_duplicate_of
                else 0
            )
            sources = [SourceSlot(source_task.guid, source_task.task_id, sequence)]
        expire_stale_submissions(cls.objects.touching(s.guid for s in sources))
        fields = dict(
            kind=kind,
            requested_by=user,
            form_token=form_token,
            source_task_guid=source_task.guid,
            source_task_id=source_task.task_id,
            source_status=source_task.status,
            parent=cls.objects.filter(new_task_guid=source_task.guid).first(),
            confirmed_duplicate_of=confirmed_duplicate_of,
            duplicate_sequence=sources[0].duplicate_sequence,
            batch_mode=batch_mode,
            batch_code=batch_code,
            import_note=import_note,
            payload=payload,
            bulk=bulk,
        )

        def record(**more) -> RetryAttempt:
            attempt = cls.objects.create(**fields, **more)
            RetrySource.objects.bulk_create(
                RetrySource(
                    retry=attempt,
                    task_guid=slot.guid,
                    task_id=slot.task_id,
                    duplicate_sequence=slot.duplicate_sequence,
                    outcome=attempt.outcome,
                )
                for slot in sources
            )
            if corrected_file is not None:
                CorrectedFile.objects.filter(pk=corrected_file.pk, retry=None).update(retry=attempt)
            return attempt

        try:
            with transaction.atomic():
                return record()
        except IntegrityError:
            existing = cls.objects.filter(form_token=form_token).first()
            if existing is not None:
                raise DuplicateToken(existing) from None
        # The database refused a second import of the same kickouts. The request
        # still leaves a record, so the history shows who asked and why nothing
        # was sent.
        with transaction.atomic():
            refused = record(
                outcome=Outcome.NOT_SENT,
                answered_at=timezone.now(),
                upstream_message=(
                    "Not sent: another retry of this task was being sent or had just been "
                    "made. Check the task's retries before trying again."
                    if kind == Kind.REIMPORT
                    else "Not sent: another import of these kickouts (a re-import or a "
                    "corrected file) was being sent or had just been made. Check the "
                    "imports' retries before trying again."
                ),
            )
        raise RetryInFlight(refused)

    def mark_sending(self) -> None:
        self.sent_at = timezone.now()
        self.save(update_fields=["sent_at"])

    def _finish(self, outcome: str, *, status_code=None, message="", new_task_guid="") -> bool:
        """Record the answer, unless the record is no longer "submitting": its lease ran out
        and it was settled as "outcome unknown" meanwhile. That stays; nothing is re-sent."""
        values = {
            "outcome": outcome,
            "upstream_status_code": status_code,
            "upstream_message": message,
            "new_task_guid": new_task_guid,
            "answered_at": timezone.now(),
        }
        recorded = set_outcome(self.pk, expected=Outcome.SUBMITTING, **values)
        if recorded:
            for name, value in values.items():
                setattr(self, name, value)
        else:
            self.refresh_from_db()
        return bool(recorded)

    def mark_submitted(self, new_task_guid: str) -> bool:
        return self._finish(Outcome.SUBMITTED, status_code=200, new_task_guid=new_task_guid)

    def mark_rejected(self, status_code: int | None, message: str) -> bool:
        return self._finish(Outcome.REJECTED, status_code=status_code, message=message)

    def mark_not_sent(self, message: str) -> bool:
        return self._finish(Outcome.NOT_SENT, message=message)

    def mark_unknown(self, message: str) -> bool:
        return self._finish(Outcome.UNKNOWN, message=message)

    def mark_imported_nothing(self) -> bool:
        """The new import ended "Failed" and its counts prove no bill was imported: the task
        may be retried again without the duplicate confirmation (kickouts/compare.py)."""
        changed = set_outcome(self.pk, expected=Outcome.SUBMITTED, outcome=Outcome.NONE_IMPORTED)
        if changed:
            self.outcome = Outcome.NONE_IMPORTED
        return bool(changed)

    # -- settling "outcome unknown" (kickouts/reconcile.py decides who may, and when) --

    def mark_reconciled(self, decision: str, *, user, note: str, new_task_guid: str = "") -> None:
        """A supervisor's decision on an "outcome unknown" retry: LINKED makes it submitted
        with the task found in EnergyCAP's list; NONE_STARTED frees the task to retry."""
        self.outcome = Outcome.SUBMITTED if decision == Reconciled.LINKED else Outcome.NONE_IMPORTED
        if decision == Reconciled.LINKED:
            self.new_task_guid = new_task_guid
        self.reconciled = decision
        self.reconciled_by = user
        self.reconciled_at = timezone.now()
        self.reconciled_note = note
        set_outcome(
            self.pk,
            outcome=self.outcome,
            new_task_guid=self.new_task_guid,
            reconciled=self.reconciled,
            reconciled_by=self.reconciled_by,
            reconciled_at=self.reconciled_at,
            reconciled_note=self.reconciled_note,
        )

    def unmark_reconciled(self) -> None:
        """Back to "outcome unknown", as EnergyCAP left it. A link's follow-up and its before
        and after are records of their own: deleting them leaves no trace of the link."""
        values: dict = {
            "outcome": Outcome.UNKNOWN,
            "reconciled": Reconciled.UNDECIDED,
            "reconciled_by": None,
            "reconciled_at": None,
            "reconciled_note": "",
        }
        if self.reconciled == Reconciled.LINKED:
            values.update(new_task_guid="", new_task_id=None)
            FollowUp.objects.filter(retry=self).delete()
            Comparison.objects.filter(retry=self).delete()
        set_outcome(self.pk, **values)
        self.refresh_from_db()
        for name in ("follow_up", "comparison"):
            self._state.fields_cache.pop(name, None)
        for name in ("follow", "compared"):
            self.__dict__.pop(name, None)

    # -- reading --

    def form_initial(self) -> dict:
        """The retry form's values that would send this payload again (to try again)."""
        return batch_modes.form_initial(self.payload, self.batch_mode)

    @property
    def may_have_imported(self) -> bool:
        return self.outcome in MAY_HAVE_IMPORTED

    @property
    def is_corrected_file(self) -> bool:
        return self.kind == Kind.CORRECTED_FILE

    @property
    def noun(self) -> str:
        """How pages and emails name what was sent: "re-import", "corrected-file import"."""
        return KIND_NOUNS.get(self.kind, "import")

    @property
    def chain_label(self) -> str:
        """How the retry chain names it: "retry #12", "corrected file #13 (bills.csv)"."""
        if not self.is_corrected_file:
            return f"retry #{self.pk}"
        return f"corrected file #{self.pk}" + (f" ({self.file.name})" if self.file else "")

    @property
    def handled_reason(self) -> str:
        """The handled reason this retry gives its source imports in the kickout queue."""
        return KIND_REASONS.get(self.kind, HandledReason.REIMPORTED)

    @cached_property
    def source_list(self) -> list[RetrySource]:
        """Every source import, the first first (a record without rows: its one source)."""
        found = list(self.sources.all())
        return found or [
            RetrySource(
                retry=self,
                task_guid=self.source_task_guid,
                task_id=self.source_task_id,
                duplicate_sequence=self.duplicate_sequence,
                outcome=self.outcome,
            )
        ]

    @property
    def source_guids(self) -> list[str]:
        return [source.task_guid for source in self.source_list]

    @property
    def sources_label(self) -> str:
        """ "Import 47223" or "Import 47223, Import 47224 and Import 47230"."""
        labels = [import_label(s.task_id, s.task_guid) for s in self.source_list]
        return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]

    def sequence_of(self, guid: str) -> int:
        """This retry's number among the imports of source `guid` that may have imported."""
        return next(
            (s.duplicate_sequence for s in self.source_list if s.task_guid == guid),
            self.duplicate_sequence,
        )

    @cached_property
    def file(self) -> CorrectedFile | None:
        """A corrected file's stored file, or None (a re-import)."""
        if not self.is_corrected_file:
            return None
        try:
            return self.corrected_file
        except CorrectedFile.DoesNotExist:
            return None

    @property
    def source_label(self) -> str:
        """ "Import 47223", as clerks know it (its GUID while the number is unknown)."""
        return import_label(self.source_task_id, self.source_task_guid)

    @property
    def new_task_label(self) -> str:
        return import_label(self.new_task_id, self.new_task_guid) if self.new_task_guid else ""

    @cached_property
    def follow(self) -> FollowUp | None:
        """The new task's follow-up, or None (not followed, or the link was reversed)."""
        try:
            return self.follow_up
        except FollowUp.DoesNotExist:
            return None

    @cached_property
    def compared(self) -> Comparison | None:
        """The before and after, or None while not compared."""
        try:
            return self.comparison
        except Comparison.DoesNotExist:
            return None

    @property
    def imported_nothing(self) -> bool:
        """The new import ended "Failed" and EnergyCAP's counts prove it imported no bill
        (not a supervisor's "nothing was imported" for a lost answer)."""
        return self.outcome == Outcome.NONE_IMPORTED and self.reconciled != Reconciled.NONE_STARTED


def import_label(task_id: int | None, guid: str) -> str:
    """How clerks name an import: by its number, "Import 47223"."""
    return f"Import {task_id}" if task_id is not None else f"Import {guid}"


def send_lease() -> timedelta:
    """The longest a submission can take: the re-check of the task (with its retries) and the
    POST. A record still "submitting" after that was left by a process that died."""
    one_call = settings.ENERGYCAP_CONNECT_TIMEOUT + settings.ENERGYCAP_READ_TIMEOUT
    recheck = settings.ENERGYCAP_GET_ATTEMPTS * one_call + settings.ENERGYCAP_MAX_RETRY_AFTER
    return timedelta(seconds=recheck + one_call + 2 * settings.STATUS_POLL_SECONDS)


STALE_SENT = (
    "The dashboard stopped while this import was being sent; EnergyCAP may have started it. "
    "It is never re-sent: check the task list before retrying."
)
STALE_NOT_SENT = (
    "Not sent: the dashboard stopped before it sent anything to EnergyCAP. Nothing was "
    "imported: you may try again."
)


def set_outcome(pk: int, *, expected: str | None = None, **values) -> bool:
    """Change a retry's fields (its outcome among them) from the `expected` outcome (any when
    None), and its sources' copy of the outcome, in one transaction. Raises IntegrityError
    when a source's constraint refuses the new outcome (another import took its place)."""
    with transaction.atomic():
        retries = RetryAttempt.objects.filter(pk=pk)
        if expected is not None:
            retries = retries.filter(outcome=expected)
        changed = retries.update(**values)
        if changed and "outcome" in values:
            RetrySource.objects.filter(retry_id=pk).update(outcome=values["outcome"])
    return bool(changed)


def expire_stale_submissions(retries=None, now=None) -> list[int]:
    """Settle "submitting" records whose process died mid-call, once their lease has passed:
    one whose POST had begun is "outcome unknown" (EnergyCAP may have acted), never "not
    sent"; one whose POST never began is "not sent", unless a bulk retry owns it (the bulk
    resumes it with the same record, kickouts/bulk.py). Returns the retries settled."""
    now = now or timezone.now()
    stale = (retries if retries is not None else RetryAttempt.objects.all()).filter(
        outcome=Outcome.SUBMITTING, requested_at__lt=now - send_lease()
    )
    settled = []
    for pk, sent_at, bulk_id in stale.values_list("pk", "sent_at", "bulk_id"):
        if sent_at is not None:
            values = {"outcome": Outcome.UNKNOWN, "upstream_message": STALE_SENT}
        elif bulk_id is None:
            values = {"outcome": Outcome.NOT_SENT, "upstream_message": STALE_NOT_SENT}
        else:
            continue
        if set_outcome(pk, expected=Outcome.SUBMITTING, answered_at=now, **values):
            settled.append(pk)
    return settled


class Comparison(models.Model):
    """The before and after of a retry whose new task ended (kickouts/compare.py): each of
    the source's kickout rows fixed or still kicked out, and the rows only the new task has."""

    retry = models.OneToOneField(
        RetryAttempt, primary_key=True, on_delete=models.CASCADE, related_name="comparison"
    )
    state = models.CharField(max_length=10, choices=CompareState.choices)
    compared_at = models.DateTimeField(default=timezone.now)
    error = models.TextField(blank=True)
    before_count = models.PositiveIntegerField(null=True, blank=True)
    fixed_count = models.PositiveIntegerField(null=True, blank=True)
    still_count = models.PositiveIntegerField(null=True, blank=True)
    new_count = models.PositiveIntegerField(null=True, blank=True)
    # One dict per row: change ("fixed", "still", "new"), message, was (the source's message when
    # it differs), account, meter, vendor, start, end.
    rows = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [
            # The history's "still kicking out" filter.
            models.Index(fields=["retry"], condition=Q(still_count__gt=0), name="comparison_still")
        ]

    def __str__(self) -> str:
        return f"{self.get_state_display()} (retry #{self.retry_id})"

    @property
    def fixed_label(self) -> str:
        """ "9 of 12" once compared, else empty."""
        if self.state != CompareState.COMPARED or self.before_count is None:
            return ""
        return f"{self.fixed_count} of {self.before_count}"

    @property
    def counts_words(self) -> str:
        """ "1 of 3 kicked-out rows fixed, 2 still kicked out, 1 new" """
        return (
            f"{self.fixed_count} of {self.before_count} kicked-out rows fixed, "
            f"{self.still_count} still kicked out, {self.new_count} new"
        )

    @property
    def rows_left(self) -> int | None:
        """How many of the source's rows the new task still kicked out (plus new ones)."""
        if self.state != CompareState.COMPARED:
            return None
        return (self.still_count or 0) + (self.new_count or 0)


class ReconcileDecision(models.Model):
    """One supervisor's decision on an "outcome unknown" retry, or its reversal."""

    retry = models.ForeignKey(
        RetryAttempt, on_delete=models.CASCADE, related_name="reconcile_decisions"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(default=timezone.now)
    # The decision made ("linked", "none_started"), or "" for a reversal to undecided.
    decision = models.CharField(max_length=20, choices=Reconciled.choices, blank=True)
    task_guid = models.CharField(max_length=36, blank=True)
    task_id = models.IntegerField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-decided_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} (retry #{self.retry_id})"


class UserSettings(models.Model):
    """One user's own choices ("Your settings"); a user without a row has the defaults."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="dashboard_settings",
    )
    email_when_retry_ends = models.BooleanField(
        default=True,
        help_text="Email me when the new import of a retry I asked for ends.",
    )
    # Supervisors only (kickouts/weekly.py): the week's overview, every Monday.
    weekly_summary = models.BooleanField(
        default=False, help_text="Email me a summary of the team's kickouts every week."
    )

    class Meta:
        verbose_name = "user settings"
        verbose_name_plural = "user settings"

    def __str__(self) -> str:
        return f"Settings of {self.user}"

    @classmethod
    def of(cls, user) -> UserSettings:
        """The user's settings, unsaved defaults when they never changed any."""
        found = cls.objects.filter(user=user).first()
        return found if found is not None else cls(user=user)


# -- the kickout queue and bulk retries (their own modules, kept apart from the retry record) --

from .bulk_models import BulkLine, BulkRetry, BulkState, LineState  # noqa: E402, F401
from .follow_up_models import FollowState, FollowUp  # noqa: E402, F401
from .overview_models import ComparisonCause, ImportCause, WeeklySummary  # noqa: E402, F401
from .queue_models import (  # noqa: E402, F401
    HandledChange,
    HandledReason,
    ImportSnapshot,
    KickoutRow,
    SnapshotState,
)
from .sweeps import Sweep  # noqa: E402, F401
