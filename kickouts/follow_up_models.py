"""The follow-up of a retry's new task: a row of its own, swept by one background task.

A `FollowUp` is made when EnergyCAP names the new task (at submit, or when a supervisor links
the task a lost answer started) and deleted when that link is reversed. It holds the schedule
(`started_at`, `due_at`, failures, the last error, when it last asked and was answered), the
last reading of the new task, and the email's once-only record. `kickouts/follow_up.py` claims
due rows, asks, records and reports; imported by `kickouts.models`, so Django sees it as the
app's.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from .payloads import STATUS_KEYS


class FollowState(models.TextChoices):
    FOLLOWING = "following", "Following"
    # The new task ended (or following stopped): the before and after and the email are due.
    REPORTING = "reporting", "Reporting"
    ENDED = "ended", "Ended"
    STOPPED = "stopped", "Stopped following"


# States whose `due_at` a sweep claims.
SWEPT = [FollowState.FOLLOWING, FollowState.REPORTING]


class FollowUp(models.Model):
    """One followed new task: when to ask next, what it last said, and who was told."""

    retry = models.OneToOneField(
        "kickouts.RetryAttempt",
        primary_key=True,
        on_delete=models.CASCADE,
        related_name="follow_up",
    )
    task_guid = models.CharField(max_length=36)
    state = models.CharField(max_length=20, choices=FollowState.choices)
    # Submit or link: the follow-up's age (and so how often it asks) counts from here.
    started_at = models.DateTimeField()
    # When the next step is due. A worker claims a row by moving it (a conditional UPDATE
    # from the value it read); a worker that dies leaves it to come due again.
    due_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Failed asks in a row.")
    error = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True, help_text="Last asked.")
    succeeded_at = models.DateTimeField(null=True, blank=True, help_text="Last answered.")
    stopped_reason = models.TextField(blank=True)

    # The last reading of the new task, and when it was taken.
    read_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=100, blank=True)
    finished = models.BooleanField(default=False)
    begin_date = models.DateTimeField(null=True, blank=True)
    end_date = models.DateTimeField(null=True, blank=True)
    success_count = models.IntegerField(null=True, blank=True)
    analyzing_count = models.IntegerField(null=True, blank=True)
    flag_count = models.IntegerField(null=True, blank=True)
    batch_id = models.IntegerField(null=True, blank=True)
    batch_code = models.CharField(max_length=255, blank=True)
    message = models.TextField(blank=True)

    # Reporting: comparisons EnergyCAP did not answer are tried again a few times.
    compare_attempts = models.PositiveSmallIntegerField(default=0)
    # Written once the email went out (or was not to be sent), with what became of it.
    notified_at = models.DateTimeField(null=True, blank=True)
    notification = models.CharField(max_length=200, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["due_at"], condition=Q(state__in=SWEPT), name="follow_up_due"),
            models.Index(fields=["-checked_at"], name="follow_up_checked"),
            # The history's final-status and "still running" filters.
            models.Index(fields=["status", "finished"], name="follow_up_status"),
        ]

    def __str__(self) -> str:
        return f"Follow-up of retry #{self.retry_id}: {self.state}"

    @property
    def is_following(self) -> bool:
        return self.state == FollowState.FOLLOWING

    @property
    def has_kickouts(self) -> bool:
        return self.finished and self.status.strip().lower() == "completed with kickouts"

    @property
    def failed(self) -> bool:
        return self.finished and "fail" in self.status.strip().lower()

    @property
    def proves_nothing_imported(self) -> bool:
        """Ended "Failed" and EnergyCAP's counts show no bill imported or analyzing. Missing
        counts prove nothing."""
        return self.failed and self.success_count == 0 and self.analyzing_count == 0

    @property
    def status_key(self) -> str:
        """The status's CSS key for its badge, as a task's (`payloads.Task.status_key`)."""
        return STATUS_KEYS.get(self.status.strip().lower(), "other")

    @property
    def end_label(self) -> str:
        """How the new import ended, in a word or three ("Completed with kickouts"), or
        "still running"."""
        if not self.finished:
            return "still running" if self.state != FollowState.STOPPED else "not ended"
        return self.status or "ended"
