"""What the supervisor's overview counts by cause, and its weekly email's once-only record.

A kickout row's cause (`KickoutRow.cause`, from kickouts/causes.py) is stored with the row, so
the database can group by it. Two small tables keep the per-cause counts the overview adds up,
written once with what they count: an import's rows per cause (`ImportCause`, with its rows)
and a comparison's source rows per cause (`ComparisonCause`, with the comparison). Summing
them reads a few rows per import or retry instead of every kickout row or the comparisons'
JSON. `manage.py classify_kickouts` writes all three again from the stored rows (after an
upgrade, or when the causes table changes). Imported by `kickouts.models`, so Django sees
these models as the app's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.conf import settings
from django.db import models

from .causes import cause_key


class ImportCause(models.Model):
    """How many of one stored import's kickout rows have one cause."""

    snapshot = models.ForeignKey(
        "kickouts.ImportSnapshot", on_delete=models.CASCADE, related_name="causes"
    )
    cause = models.CharField(max_length=40)
    rows = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "cause"], name="import_cause_once")
        ]

    def __str__(self) -> str:
        return f"{self.rows} × {self.cause} (snapshot {self.snapshot_id})"


class ComparisonCause(models.Model):
    """How many of a retry's source rows had one cause, and how many of those it fixed."""

    comparison = models.ForeignKey(
        "kickouts.Comparison", on_delete=models.CASCADE, related_name="causes"
    )
    cause = models.CharField(max_length=40)
    before = models.PositiveIntegerField()
    fixed = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "cause"], name="comparison_cause_once")
        ]
        indexes = [models.Index(fields=["cause", "comparison"], name="comparison_cause")]

    def __str__(self) -> str:
        return f"{self.fixed} of {self.before} × {self.cause} (retry #{self.comparison_id})"


class WeeklySummary(models.Model):
    """One supervisor's summary email of one week: made once (the unique pair), claimed by the
    sweep that sends it with a conditional UPDATE of `due_at`, and recorded once sent."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="weekly_summaries"
    )
    week = models.DateField(help_text="The Monday the week begins.")
    due_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "week"], name="weekly_summary_once")]
        indexes = [
            models.Index(
                fields=["due_at"], condition=models.Q(due_at__isnull=False), name="weekly_due"
            )
        ]

    def __str__(self) -> str:
        return f"Weekly summary of {self.week} for {self.user}"


def import_causes(snapshot, messages: Iterable[str]) -> list[ImportCause]:
    """The per-cause counts of an import whose rows have these messages (unsaved)."""
    counts = Counter(cause_key(message) for message in messages)
    return [ImportCause(snapshot=snapshot, cause=key, rows=n) for key, n in counts.items()]


def comparison_causes(comparison, rows: Iterable[dict]) -> list[ComparisonCause]:
    """The per-cause counts of a comparison's rows (kickouts/compare.py's dicts, unsaved): a
    source row's cause is its message in the source import (`was` when the new task gave it
    another); rows only the new task has are not the source's and are left out."""
    before: Counter[str] = Counter()
    fixed: Counter[str] = Counter()
    for row in rows:
        if row["change"] not in ("fixed", "still"):
            continue
        key = cause_key(row.get("was") or row["message"])
        before[key] += 1
        if row["change"] == "fixed":
            fixed[key] += 1
    return [
        ComparisonCause(comparison=comparison, cause=key, before=n, fixed=fixed[key])
        for key, n in before.items()
    ]
