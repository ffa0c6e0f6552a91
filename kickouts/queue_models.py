"""The kickout queue's records: snapshots of ended imports' kickouts, and their handled state.

An ended import's kickout summary and rows never change, so the dashboard fetches them once
(`kickouts.snapshots`) and from then on the queue, its groups and its downloads cost EnergyCAP
nothing. Imported by `kickouts.models`, so Django sees these models as the app's.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone


class SnapshotState(models.TextChoices):
    LOADING = "loading", "Loading"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class HandledReason(models.TextChoices):
    REIMPORTED = "reimported", "fixed in EnergyCAP, re-imported"
    CORRECTED_FILE = "corrected_file", "corrected file imported"
    DUPLICATE_BILLS = "duplicate_bills", "ignored: duplicate bills"
    OTHER = "other", "ignored: other"


class ImportSnapshotQuerySet(models.QuerySet["ImportSnapshot"]):
    def open(self) -> ImportSnapshotQuerySet:
        return self.filter(handled_reason="")

    def handled(self) -> ImportSnapshotQuerySet:
        return self.exclude(handled_reason="")

    def user_names(self) -> models.QuerySet[ImportSnapshot, str]:
        """The EnergyCAP users who ran the stored imports, for the user filters' choices."""
        return (
            self.exclude(user_full_name="")
            .order_by("user_full_name")
            .values_list("user_full_name", flat=True)
            .distinct()
        )


class ImportSnapshot(models.Model):
    """One bill import that ended "Completed with kickouts", as the dashboard stored it."""

    task_guid = models.CharField(max_length=36, unique=True)
    task_id = models.IntegerField(null=True, blank=True)
    status = models.CharField(max_length=100, blank=True)
    begin_date = models.DateTimeField(null=True, blank=True)
    end_date = models.DateTimeField(null=True, blank=True)
    user_full_name = models.CharField(max_length=255, blank=True)
    batch_code = models.CharField(max_length=255, blank=True)
    file_name = models.CharField(max_length=500, blank=True)
    # The grid's own column names, in EnergyCAP's order (they are not fixed).
    columns = models.JSONField(default=list, blank=True)
    row_count = models.PositiveIntegerField(default=0)

    state = models.CharField(
        max_length=10, choices=SnapshotState.choices, default=SnapshotState.LOADING
    )
    fetched_at = models.DateTimeField(null=True, blank=True)
    fetch_error = models.TextField(blank=True)

    # Empty while the import is open (in the queue).
    handled_reason = models.CharField(
        max_length=20, choices=HandledReason.choices, blank=True, default=""
    )
    handled_note = models.TextField(blank=True)
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    handled_at = models.DateTimeField(null=True, blank=True)

    objects = ImportSnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-begin_date", "-id"]
        permissions = [("mark_handled", "Can mark an import's kickouts handled, or reopen them")]
        indexes = [
            models.Index(fields=["-begin_date"], name="snapshot_begin"),
            models.Index(fields=["user_full_name", "-begin_date"], name="snapshot_user_begin"),
            models.Index(
                fields=["-begin_date"], condition=Q(handled_reason=""), name="snapshot_open_begin"
            ),
            models.Index(
                fields=["-begin_date"], condition=Q(state="loading"), name="snapshot_loading"
            ),
        ]

    def __str__(self) -> str:
        return f"Kickouts of import {self.task_id or self.task_guid}"

    @property
    def is_handled(self) -> bool:
        return bool(self.handled_reason)

    @property
    def handled_label(self) -> str:
        try:
            return HandledReason(self.handled_reason).label
        except ValueError:
            return self.handled_reason

    def mark_handled(self, *, user: Any, reason: str, note: str = "") -> HandledChange:
        """Take the import out of the queue, with a reason, and record the change."""
        return self._change(user=user, reason=reason, note=note)

    def reopen(self, *, user: Any, note: str = "") -> HandledChange:
        """Put a handled import back in the queue, and record the change."""
        return self._change(user=user, reason="", note=note)

    def _change(self, *, user: Any, reason: str, note: str) -> HandledChange:
        with transaction.atomic():
            # Lock the row so two clerks' clicks are recorded one after the other, each
            # with the state it really changed from.
            current = ImportSnapshot.objects.select_for_update().get(pk=self.pk)
            now = timezone.now()
            change = HandledChange.objects.create(
                snapshot=current,
                changed_by=user,
                changed_at=now,
                from_reason=current.handled_reason,
                to_reason=reason,
                note=note,
            )
            current.handled_reason = reason
            current.handled_note = note if reason else ""
            current.handled_by = user if reason else None
            current.handled_at = now if reason else None
            current.save(
                update_fields=["handled_reason", "handled_note", "handled_by", "handled_at"]
            )
        for name in ("handled_reason", "handled_note", "handled_by", "handled_at"):
            setattr(self, name, getattr(current, name))
        return change


class KickoutRow(models.Model):
    """One row of an import's kickout grid, with the columns the queue can recognise."""

    snapshot = models.ForeignKey(ImportSnapshot, on_delete=models.CASCADE, related_name="rows")
    position = models.PositiveIntegerField()
    message = models.TextField()
    # The message's cause (`causes.cause_key`), for grouping in the database (the overview).
    cause = models.CharField(max_length=40, blank=True, default="")
    # Column name -> value, EnergyCAP's own names.
    cells = models.JSONField(default=dict)
    account_code = models.CharField(max_length=255, blank=True)
    meter_code = models.CharField(max_length=255, blank=True)
    vendor_code = models.CharField(max_length=255, blank=True)
    bill_start = models.DateField(null=True, blank=True)
    bill_end = models.DateField(null=True, blank=True)
    total_cost = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)

    class Meta:
        ordering = ["snapshot", "position"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "position"], name="kickout_row_position")
        ]
        indexes = [
            models.Index(fields=["message", "snapshot"], name="kickout_row_message"),
            models.Index(fields=["cause", "snapshot"], name="kickout_row_cause"),
        ]

    def __str__(self) -> str:
        return f"{self.message} (row {self.position} of {self.snapshot_id})"


class HandledChange(models.Model):
    """Who changed an import's handled state, when, from what to what."""

    snapshot = models.ForeignKey(
        ImportSnapshot, on_delete=models.CASCADE, related_name="handled_changes"
    )
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    changed_at = models.DateTimeField(default=timezone.now)
    from_reason = models.CharField(max_length=20, blank=True)
    to_reason = models.CharField(max_length=20, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.from_reason or 'open'} → {self.to_reason or 'open'}"

    @staticmethod
    def _label(reason: str) -> str:
        if not reason:
            return "open"
        try:
            return HandledReason(reason).label
        except ValueError:
            return reason

    @property
    def from_label(self) -> str:
        return self._label(self.from_reason)

    @property
    def to_label(self) -> str:
        return self._label(self.to_reason)


class QueueListing(models.Model):
    """When the dashboard last asked EnergyCAP for a period's bill imports, and when such a
    listing last finished: one row per period (in days), shared by every process, so each
    page view can say whether the queue is complete and how fresh it is."""

    days = models.PositiveSmallIntegerField(unique=True)
    asked_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Why the last listing did not finish, until one does.
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"Listing of the last {self.days} days"

    @staticmethod
    def record(days: int, **fields: Any) -> None:
        """Set these fields on the period's row, made first if missing (race-free: two
        processes may both insert, one insert wins, both updates land)."""
        QueueListing.objects.bulk_create([QueueListing(days=days)], ignore_conflicts=True)
        QueueListing.objects.filter(days=days).update(**fields)
