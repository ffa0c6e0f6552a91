"""Where a bulk retry stands: each import's send, how each new import ended, and the rows
fixed, counted in one query; the same counts on its page, in the supervisors' list of bulks
and in the requester's email."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from .bulk_models import BulkRetry, LineState


def _counts(prefix: str = "") -> dict[str, Any]:
    """Aggregate expressions over a bulk's lines; `prefix` reaches them from the bulk."""
    p = prefix
    sent = Q(**{f"{p}state": LineState.SENT})
    ended = sent & Q(**{f"{p}retry__follow_up__finished": True})
    status = f"{p}retry__follow_up__status"
    completed = Q(**{f"{status}__iexact": "completed"})
    kickouts = Q(**{f"{status}__iexact": "completed with kickouts"})
    failed = Q(**{f"{status}__icontains": "fail"})
    return {
        "total": Count(f"{p}id"),
        "sent": Count(f"{p}id", filter=sent),
        "refused": Count(f"{p}id", filter=Q(**{f"{p}state": LineState.REFUSED})),
        "skipped": Count(f"{p}id", filter=Q(**{f"{p}state": LineState.SKIPPED})),
        "unknown": Count(f"{p}id", filter=Q(**{f"{p}state": LineState.UNKNOWN})),
        "not_sent": Count(f"{p}id", filter=Q(**{f"{p}state": LineState.NOT_SENT})),
        "waiting": Count(f"{p}id", filter=Q(**{f"{p}state": LineState.WAITING})),
        "completed": Count(f"{p}id", filter=ended & completed),
        "with_kickouts": Count(f"{p}id", filter=ended & kickouts),
        "failed": Count(f"{p}id", filter=ended & failed),
        "ended": Count(f"{p}id", filter=ended),
        "rows_fixed": Coalesce(Sum(f"{p}retry__comparison__fixed_count"), 0),
        "rows_before": Coalesce(Sum(f"{p}retry__comparison__before_count"), 0),
    }


@dataclass(frozen=True)
class BulkSummary:
    total: int
    sent: int
    refused: int
    skipped: int
    unknown: int
    not_sent: int
    waiting: int
    completed: int
    with_kickouts: int
    failed: int
    ended: int
    rows_fixed: int
    rows_before: int

    @property
    def done(self) -> int:
        """Imports whose send is settled (sent, refused, skipped, unknown or not sent)."""
        return self.total - self.waiting

    @property
    def running(self) -> int:
        """New imports still running (or whose end is not known yet)."""
        return self.sent - self.ended

    @property
    def other_end(self) -> int:
        """New imports that ended with a status the dashboard does not know."""
        return self.ended - self.completed - self.with_kickouts - self.failed

    @property
    def sent_words(self) -> str:
        """ "7 of 12 sent, 1 refused" """
        parts = [f"{self.sent} of {self.total} sent"]
        for count, word in (
            (self.refused, "refused"),
            (self.skipped, "skipped"),
            (self.unknown, "outcome unknown"),
            (self.not_sent, "not sent"),
        ):
            if count:
                parts.append(f"{count} {word}")
        return ", ".join(parts)

    @property
    def end_words(self) -> str:
        """ "12 sent: 9 completed, 2 with kickouts, 1 failed; 131 of 150 rows fixed" """
        if not self.sent:
            return "none sent"
        parts = [
            f"{count} {word}"
            for count, word in (
                (self.completed, "completed"),
                (self.with_kickouts, "with kickouts"),
                (self.failed, "failed"),
                (self.other_end, "ended otherwise"),
                (self.running, "still running"),
            )
            if count
        ]
        words = f"{self.sent} sent: " + ", ".join(parts)
        if self.rows_before:
            words += f"; {self.rows_fixed} of {self.rows_before} rows fixed"
        return words


def summarize(bulk: BulkRetry) -> BulkSummary:
    return BulkSummary(**bulk.lines.aggregate(**_counts()))


def with_counts(bulks: QuerySet[BulkRetry]) -> QuerySet[BulkRetry]:
    """Bulks with their summary's counts (`bulk.summary`), for the supervisors' list."""
    return bulks.annotate(**{f"n_{name}": value for name, value in _counts("lines__").items()})


def annotated_summary(bulk: BulkRetry) -> BulkSummary:
    """The summary of a bulk from `with_counts`."""
    names = BulkSummary.__dataclass_fields__
    return BulkSummary(**{name: getattr(bulk, f"n_{name}") for name in names})


@dataclass(frozen=True)
class Attention:
    """One import of a bulk that needs a person: which, and why, in words."""

    label: str
    words: str


def needs_attention(bulk: BulkRetry) -> list[Attention]:
    """The bulk's imports that did not simply end fixed: refused, not sent, skipped, outcome
    unknown, a new import that failed, kicked rows out again, or is not followed to its end."""
    found = []
    lines = bulk.lines.select_related("retry__follow_up", "retry__comparison").order_by("position")
    for line in lines:
        label = f"Import {line.task_id}" if line.task_id is not None else f"Import {line.task_guid}"
        retry = line.retry
        follow = retry.follow if retry is not None else None
        if line.state != LineState.SENT:
            if line.state != LineState.WAITING:
                found.append(Attention(label, f"{line.get_state_display().lower()}: {line.reason}"))
            continue
        if retry is None or follow is None or not follow.finished:
            if follow is not None and follow.stopped_reason:
                found.append(Attention(label, follow.stopped_reason))
            continue
        if follow.failed:
            proof = (
                "nothing was imported, and it may be retried again"
                if retry.imported_nothing
                else "not proven that nothing was imported"
            )
            found.append(Attention(label, f"the new import failed ({proof})"))
            continue
        comparison = retry.compared
        left = comparison.rows_left if comparison is not None else None
        if follow.has_kickouts and left:
            found.append(
                Attention(
                    label,
                    f"its new import, {retry.new_task_label}, completed with kickouts: "
                    f"{left} row{'s' if left != 1 else ''} still kicked out",
                )
            )
    return found
