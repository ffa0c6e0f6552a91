"""The retry record and its life cycle.

A `RetryAttempt` is written *before* the kickout re-import is sent and updated
with the outcome after it, so a crash between the two leaves an honest
"submitting" row that later turns into "outcome unknown", never a silent gap.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from . import batch_modes


class Outcome(models.TextChoices):
    SUBMITTING = "submitting", "Submitting"
    SUBMITTED = "submitted", "Submitted"
    REJECTED = "rejected", "Rejected by EnergyCAP"
    NOT_SENT = "not_sent", "Not sent"
    UNKNOWN = "unknown", "Outcome unknown"
    # An "outcome unknown" a supervisor settled from EnergyCAP's task list (kickouts/reconcile.py).
    NONE_IMPORTED = "none_imported", "Nothing imported"


# Outcomes after which EnergyCAP may hold a new import of the same kickouts:
# another retry of the same task would import the bills twice.
MAY_HAVE_IMPORTED = [Outcome.SUBMITTING, Outcome.SUBMITTED, Outcome.UNKNOWN]


class FollowState(models.TextChoices):
    """Whether a worker follows the new task (kickouts/tasks.py) until it ends."""

    NOT_FOLLOWED = "", "Not followed"
    FOLLOWING = "following", "Following"
    ENDED = "ended", "Ended"
    STOPPED = "stopped", "Stopped following"


class CompareState(models.TextChoices):
    """Whether the source's kickout rows were compared with the new task's (kickouts/compare.py)."""

    NOT_COMPARED = "", "Not compared"
    COMPARED = "compared", "Compared"
    NEW_TASK_FAILED = "failed", "New import failed"
    ERROR = "error", "Could not compare"


class Reconciled(models.TextChoices):
    """A supervisor's decision on an "outcome unknown" retry (kickouts/reconcile.py)."""

    UNDECIDED = "", "Undecided"
    LINKED = "linked", "Linked to an EnergyCAP task"
    NONE_STARTED = "none_started", "Nothing was imported"


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

    def summary_by_source(self, guids: list[str]) -> dict[str, RetrySummary]:
        """Retry count and latest outcome per source task, in one query."""
        summaries: dict[str, RetrySummary] = {}
        rows = (
            self.filter(source_task_guid__in=guids)
            .order_by("-requested_at", "-id")
            .values_list("source_task_guid", "outcome", "pk")
        )
        for guid, outcome, pk in rows:
            if guid in summaries:
                summaries[guid].count += 1
            else:
                summaries[guid] = RetrySummary(count=1, latest_outcome=outcome, latest_pk=pk)
        return summaries

    def unfinished(self) -> RetryAttemptQuerySet:
        """Retries whose new task may still be running (worth asking EnergyCAP about)."""
        return self.filter(outcome=Outcome.SUBMITTED, new_task_finished=False)

    def expire_stale_submissions(self, older_than: timedelta) -> int:
        """Turn "submitting" rows whose process died mid-call into "outcome unknown"."""
        cutoff = timezone.now() - older_than
        return self.filter(outcome=Outcome.SUBMITTING, requested_at__lt=cutoff).update(
            outcome=Outcome.UNKNOWN,
            upstream_message=(
                "The dashboard stopped before EnergyCAP's answer was recorded; "
                "check the task list before retrying."
            ),
            answered_at=timezone.now(),
        )


# What a linked retry gained from following its task, cleared when the link is reversed.
_FOLLOWED_FIELDS = {
    "new_task_guid": "",
    "new_task_status": "",
    "new_task_finished": False,
    "new_task_begin_date": None,
    "new_task_end_date": None,
    "new_task_success_count": None,
    "new_task_analyzing_count": None,
    "new_task_flag_count": None,
    "new_task_batch_code": "",
    "new_task_message": "",
    "new_task_checked_at": None,
    "new_task_batch_id": None,
    "follow_state": FollowState.NOT_FOLLOWED,
    "follower_task_id": "",
    "follow_next_at": None,
    "follow_lease_until": None,
    "follow_busy_until": None,
    "compare_state": CompareState.NOT_COMPARED,
    "compared_at": None,
    "compare_error": "",
    "before_count": None,
    "fixed_count": None,
    "still_count": None,
    "new_count": None,
    "compare_rows": [],
    "notified_at": None,
    "notification": "",
}


class RetryAttempt(models.Model):
    """One request by a dashboard user to re-import a task's kickouts."""

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="retry_attempts"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    form_token = models.UUIDField(unique=True, help_text="One-time token of the submitted form.")

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
    payload = models.JSONField(help_text="The exact JSON body sent to EnergyCAP.")

    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.SUBMITTING)
    sent_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    upstream_status_code = models.IntegerField(null=True, blank=True)
    upstream_message = models.TextField(blank=True)
    new_task_guid = models.CharField(max_length=36, blank=True)

    # What the dashboard last saw of the new task.
    new_task_status = models.CharField(max_length=100, blank=True)
    new_task_finished = models.BooleanField(default=False)
    new_task_begin_date = models.DateTimeField(null=True, blank=True)
    new_task_end_date = models.DateTimeField(null=True, blank=True)
    new_task_success_count = models.IntegerField(null=True, blank=True)
    new_task_analyzing_count = models.IntegerField(null=True, blank=True)
    new_task_flag_count = models.IntegerField(null=True, blank=True)
    new_task_batch_code = models.CharField(max_length=255, blank=True)
    new_task_message = models.TextField(blank=True)
    new_task_checked_at = models.DateTimeField(null=True, blank=True)
    new_task_batch_id = models.IntegerField(null=True, blank=True)
    # The bulk retry this retry was one import of (kickouts/bulk.py), if any.
    bulk = models.ForeignKey(
        "kickouts.BulkRetry",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="retries",
    )

    # Following the new task in the background (kickouts/tasks.py).
    follow_state = models.CharField(
        max_length=20, choices=FollowState.choices, default=FollowState.NOT_FOLLOWED, blank=True
    )
    follow_stopped_reason = models.TextField(blank=True)
    follow_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the follower last asked EnergyCAP."
    )
    follow_succeeded_at = models.DateTimeField(
        null=True, blank=True, help_text="When EnergyCAP last answered the follower."
    )
    follow_failures = models.PositiveIntegerField(
        default=0, help_text="Failed asks in a row (the follower backs off)."
    )
    follow_error = models.TextField(blank=True)
    follow_next_at = models.DateTimeField(
        null=True, blank=True, help_text="When the follower's next step is due."
    )
    # The guard against two followers: the id of the one follow step allowed to run next.
    # A step that finds another id here (with its lease still valid) ends its chain.
    follower_task_id = models.CharField(max_length=64, blank=True)
    follow_lease_until = models.DateTimeField(null=True, blank=True)
    # A step asking EnergyCAP right now, and on which worker: the next step waits for it,
    # unless it runs on that same worker (restarted, so the ask died with it).
    follow_busy_until = models.DateTimeField(null=True, blank=True)
    follow_worker_id = models.CharField(max_length=64, blank=True)
    # Claimed by one conditional UPDATE before the email goes out: sent once, even when
    # two workers race.
    notified_at = models.DateTimeField(null=True, blank=True)
    notification = models.CharField(
        max_length=200, blank=True, help_text="What became of the email to the requester."
    )

    # Before and after (kickouts/compare.py): the source's kickout rows against the new task's.
    compare_state = models.CharField(
        max_length=10, choices=CompareState.choices, default=CompareState.NOT_COMPARED, blank=True
    )
    compared_at = models.DateTimeField(null=True, blank=True)
    compare_error = models.TextField(blank=True)
    before_count = models.PositiveIntegerField(null=True, blank=True)
    fixed_count = models.PositiveIntegerField(null=True, blank=True)
    still_count = models.PositiveIntegerField(null=True, blank=True)
    new_count = models.PositiveIntegerField(null=True, blank=True)
    # One dict per row: change ("fixed", "still", "new"), message, was (the source's message when
    # it differs), account, meter, start, end.
    compare_rows = models.JSONField(default=list, blank=True)

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
            models.Index(fields=["new_task_status", "-requested_at"], name="retry_final_time"),
            models.Index(fields=["-requested_at", "-id"], name="retry_time"),
            models.Index(fields=["batch_code"], name="retry_batch_code"),
            # The few retries whose new task may still run: the history's "still running"
            # filter, and refresh_retries. Without it both read every retry when few match.
            models.Index(
                fields=["-requested_at", "-id"],
                condition=Q(outcome="submitted", new_task_finished=False),
                name="retry_running_time",
            ),
            # Followed retries whose follower may have been lost (kickouts/tasks.py), and the
            # health check's "last follow-up".
            models.Index(
                fields=["follow_lease_until"],
                condition=Q(follow_state="following"),
                name="retry_follow_lease",
            ),
            models.Index(fields=["-follow_checked_at"], name="retry_follow_checked"),
            # The history's "still kicking out" filter.
            models.Index(
                fields=["-requested_at", "-id"],
                condition=Q(still_count__gt=0),
                name="retry_still_kicking_time",
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
        stale_after: timedelta = timedelta(minutes=5),
    ) -> RetryAttempt:
        """Write the record in state "submitting", before anything is sent.

        Raises DuplicateToken when this form was already submitted, and
        RetryInFlight when the database refuses a second import of the task.
        """
        existing = cls.objects.filter(form_token=form_token).first()
        if existing is not None:
            raise DuplicateToken(existing)
        cls.objects.filter(source_task_guid=source_task.guid).expire_stale_submissions(stale_after)
        sequence = confirmed_duplicate_of.duplicate_sequence + 1 if confirmed_duplicate_of else 0
        fields = dict(
            requested_by=user,
            form_token=form_token,
            source_task_guid=source_task.guid,
            source_task_id=source_task.task_id,
            source_status=source_task.status,
            parent=cls.objects.filter(new_task_guid=source_task.guid).first(),
            confirmed_duplicate_of=confirmed_duplicate_of,
            duplicate_sequence=sequence,
            batch_mode=batch_mode,
            batch_code=batch_code,
            import_note=import_note,
            payload=payload,
            bulk=bulk,
        )
        try:
            with transaction.atomic():
                return cls.objects.create(**fields)
        except IntegrityError:
            existing = cls.objects.filter(form_token=form_token).first()
            if existing is not None:
                raise DuplicateToken(existing) from None
        # The database refused a second import of the same kickouts. The request
        # still leaves a record, so the history shows who asked and why nothing
        # was sent.
        refused = cls.objects.create(
            **fields,
            outcome=Outcome.NOT_SENT,
            answered_at=timezone.now(),
            upstream_message=(
                "Not sent: another retry of this task was being sent or had just been "
                "made. Check the task's retries before trying again."
            ),
        )
        raise RetryInFlight(refused)

    def mark_sending(self) -> None:
        self.sent_at = timezone.now()
        self.save(update_fields=["sent_at"])

    def _finish(self, outcome: str, *, status_code=None, message="", new_task_guid="") -> None:
        self.outcome = outcome
        self.upstream_status_code = status_code
        self.upstream_message = message
        self.new_task_guid = new_task_guid
        self.answered_at = timezone.now()
        self.save(
            update_fields=[
                "outcome",
                "upstream_status_code",
                "upstream_message",
                "new_task_guid",
                "answered_at",
            ]
        )

    def mark_submitted(self, new_task_guid: str) -> None:
        self._finish(Outcome.SUBMITTED, status_code=200, new_task_guid=new_task_guid)

    def mark_rejected(self, status_code: int | None, message: str) -> None:
        self._finish(Outcome.REJECTED, status_code=status_code, message=message)

    def mark_not_sent(self, message: str) -> None:
        self._finish(Outcome.NOT_SENT, message=message)

    def mark_unknown(self, message: str) -> None:
        self._finish(Outcome.UNKNOWN, message=message)

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
        self.save(
            update_fields=[
                "outcome",
                "new_task_guid",
                "reconciled",
                "reconciled_by",
                "reconciled_at",
                "reconciled_note",
            ]
        )

    def unmark_reconciled(self) -> None:
        """Back to "outcome unknown", as EnergyCAP left it; a link's follow-up is forgotten."""
        values: dict = {
            "outcome": Outcome.UNKNOWN,
            "reconciled": Reconciled.UNDECIDED,
            "reconciled_by": None,
            "reconciled_at": None,
            "reconciled_note": "",
        }
        if self.reconciled == Reconciled.LINKED:
            values.update(_FOLLOWED_FIELDS)
        RetryAttempt.objects.filter(pk=self.pk).update(**values)
        self.refresh_from_db()

    def record_task_status(self, task, checked_at=None) -> bool:
        """Store what the status panel (or refresh_retries) saw of the new task.

        One conditional UPDATE: of many watchers holding the same shared reading, only
        the first stores it, and an older reading never overwrites a newer one.
        """
        checked_at = checked_at or timezone.now()
        if self.new_task_checked_at is not None and self.new_task_checked_at >= checked_at:
            return False  # already stored: a polled panel then writes nothing
        values = {
            "new_task_status": task.status[:100],
            "new_task_finished": not task.is_running,
            "new_task_begin_date": task.begin_date,
            "new_task_end_date": task.end_date,
            "new_task_success_count": task.current_success_count,
            "new_task_analyzing_count": task.analyzing_count,
            "new_task_flag_count": task.unresolved_flag_count,
            "new_task_batch_code": task.batch.batch_code[:255] if task.batch else "",
            "new_task_batch_id": task.batch.batch_id if task.batch else None,
            "new_task_message": task.message,
            "new_task_checked_at": checked_at,
        }
        older = Q(new_task_checked_at__isnull=True) | Q(new_task_checked_at__lt=checked_at)
        stored = RetryAttempt.objects.filter(older, pk=self.pk).update(**values)
        for name, value in values.items():
            setattr(self, name, value)
        return bool(stored)

    # -- reading --

    def form_initial(self) -> dict:
        """The retry form's values that would send this payload again (to try again)."""
        body = self.payload or {}
        settings = body.get("batchSettings") or {}
        return {
            "batch_mode": settings.get("batchMode", self.batch_mode),
            **batch_modes.form_values(settings),
            "import_note": body.get("importNote", ""),
            "comment": body.get("comment", ""),
            "save_as_resolved": bool(body.get("saveAsResolved")),
        }

    @property
    def may_have_imported(self) -> bool:
        return self.outcome in MAY_HAVE_IMPORTED

    @property
    def is_followed(self) -> bool:
        return self.follow_state != FollowState.NOT_FOLLOWED

    @property
    def new_task_has_kickouts(self) -> bool:
        return self.new_task_finished and self.new_task_status.lower() == "completed with kickouts"

    @property
    def fixed_label(self) -> str:
        """ "9 of 12" once compared, else empty."""
        if self.compare_state != CompareState.COMPARED or self.before_count is None:
            return ""
        return f"{self.fixed_count} of {self.before_count}"

    @property
    def rows_left(self) -> int | None:
        """How many of the source's rows the new task still kicked out (plus new ones)."""
        if self.compare_state != CompareState.COMPARED:
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
from .queue_models import (  # noqa: E402, F401
    HandledChange,
    HandledReason,
    ImportSnapshot,
    KickoutRow,
    SnapshotState,
)
