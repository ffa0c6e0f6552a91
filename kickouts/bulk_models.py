"""The bulk retry record: one form's settings sent to several imports, one after another.

A `BulkRetry` holds who asked, when, the settings (the same JSON body for each import) and
where it stands; a `BulkLine` per import holds its place in the order, what became of it and
its own `RetryAttempt`. Each line's retry record, with its one-time token derived from the
bulk's, is what keeps an import from being sent twice (kickouts/bulk.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from . import batch_modes


class BulkState(models.TextChoices):
    SENDING = "sending", "Sending"
    DONE = "done", "Done"
    STOPPED = "stopped", "Stopped"
    CANCELLED = "cancelled", "Cancelled"


class LineState(models.TextChoices):
    WAITING = "waiting", "Waiting"
    SENT = "sent", "Sent"
    REFUSED = "refused", "Refused"
    SKIPPED = "skipped", "Skipped"
    UNKNOWN = "unknown", "Outcome unknown"
    NOT_SENT = "not_sent", "Not sent"


class BulkRetry(models.Model):
    """One clerk's request to re-import the kickouts of several imports with one form."""

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bulk_retries"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    form_token = models.UUIDField(unique=True, help_text="One-time token of the bulk form.")
    batch_mode = models.CharField(max_length=40, choices=batch_modes.CHOICES)
    batch_code = models.CharField(max_length=255, blank=True)
    import_note = models.TextField(blank=True)
    payload = models.JSONField(help_text="The exact JSON body sent for each import.")
    state = models.CharField(max_length=20, choices=BulkState.choices, default=BulkState.SENDING)
    stop_reason = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When its next import is due to be sent. The bulk's sweep (kickouts/bulk.py) claims it
    # by moving it (a conditional UPDATE) for as long as one import's re-check and POST may
    # take; a worker that dies leaves it to come due again.
    due_at = models.DateTimeField(null=True, blank=True)
    # The requester's one email, due to be looked at whenever the bulk stops sending or one
    # of its new imports ends (and sent once the last has ended): swept and claimed like a
    # follow-up (kickouts/follow_up.py), and recorded once sent.
    email_due_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    notification = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [
            # The supervisors' list, newest first, a page at a time.
            models.Index(fields=["-requested_at", "-id"], name="bulk_time"),
            models.Index(fields=["due_at"], condition=Q(state="sending"), name="bulk_due"),
            models.Index(
                fields=["email_due_at"],
                condition=Q(email_due_at__isnull=False),
                name="bulk_email_due",
            ),
        ]

    def __str__(self) -> str:
        return f"Bulk retry #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("bulk_detail", args=[self.pk])

    @property
    def is_running(self) -> bool:
        return self.state == BulkState.SENDING


class BulkLine(models.Model):
    """One import of a bulk retry, in its place in the order."""

    bulk = models.ForeignKey(BulkRetry, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    task_guid = models.CharField(max_length=36)
    task_id = models.IntegerField(null=True, blank=True)
    task_status = models.CharField(max_length=100, blank=True)
    # The earlier retry a supervisor confirmed re-importing again, for this import.
    confirmed_duplicate_of = models.ForeignKey(
        "kickouts.RetryAttempt", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    state = models.CharField(max_length=20, choices=LineState.choices, default=LineState.WAITING)
    reason = models.TextField(blank=True)
    retry = models.OneToOneField(
        "kickouts.RetryAttempt",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="bulk_line",
    )

    class Meta:
        ordering = ["bulk", "position"]
        constraints = [
            models.UniqueConstraint(fields=["bulk", "position"], name="one_line_per_position"),
            models.UniqueConstraint(fields=["bulk", "task_guid"], name="one_line_per_import"),
        ]

    def __str__(self) -> str:
        return f"{self.bulk} #{self.position}: {self.task_guid}"
