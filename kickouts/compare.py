"""Before and after: did a retry fix its kickouts?

When a retry's new task ends, the source import's kickout rows (its snapshot; for a corrected
file, the rows of all of its source imports together) are compared with the new task's: a row
is *fixed* when the new task no longer kicks it out (or imported everything), *still kicked
out* when the new task kicks out the same row (possibly with another message), and *new* when
the new task kicks out a row the source did not have.

Rows are matched by `row_key` alone: file row numbers change between imports, the bill does
not. Snapshots are fetched once (kickouts/snapshots.py), so a comparison costs EnergyCAP at
most two summaries and two grids, and nothing after that.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from . import energycap, snapshots, status
from .energycap import EnergyCapError
from .follow_up_models import FollowUp
from .models import CompareState, Comparison, RetryAttempt
from .overview_models import ComparisonCause, comparison_causes
from .queue_models import ImportSnapshot, KickoutRow

logger = logging.getLogger(__name__)

FIXED = "fixed"
STILL = "still"
NEW = "new"
CHANGE_LABELS = {FIXED: "fixed", STILL: "still kicked out", NEW: "new"}
# What `compare_retry` returns for an error that asking again cannot mend (stored as an error).
GAVE_UP = "gave up"

RowKey = tuple[str, str, date | None, date | None]


def row_key(row: KickoutRow) -> RowKey:
    """The one definition of "the same row" in two imports: account code, meter code, bill
    start and end dates (codes compared without case or surrounding spaces)."""
    return (
        row.account_code.strip().casefold(),
        row.meter_code.strip().casefold(),
        row.bill_start,
        row.bill_end,
    )


@dataclass
class Compared:
    """The rows of a comparison, each with its change."""

    rows: list[dict] = field(default_factory=list)

    def count(self, change: str) -> int:
        return sum(1 for row in self.rows if row["change"] == change)


def _describe(row: KickoutRow, change: str, message: str, was: str = "") -> dict:
    return {
        "change": change,
        "message": message,
        "was": was,
        "account": row.account_code,
        "meter": row.meter_code,
        "vendor": row.vendor_code,
        "start": row.bill_start.isoformat() if row.bill_start else "",
        "end": row.bill_end.isoformat() if row.bill_end else "",
    }


def compare_rows(before: Iterable[KickoutRow], after: Iterable[KickoutRow]) -> Compared:
    """Each source row fixed or still kicked out, and each row only the new task has.

    Rows with the same key are paired in file order, so a bill that appears twice in the
    source and once in the new task counts once as still kicked out and once as fixed.
    """
    waiting: dict[RowKey, list[KickoutRow]] = defaultdict(list)
    for row in after:
        waiting[row_key(row)].append(row)
    result = Compared()
    for row in before:
        matches = waiting.get(row_key(row))
        if matches:
            now = matches.pop(0)
            was = row.message if row.message != now.message else ""
            result.rows.append(_describe(now, STILL, now.message, was))
        else:
            result.rows.append(_describe(row, FIXED, row.message))
    for rows in waiting.values():
        result.rows.extend(_describe(row, NEW, row.message) for row in rows)
    return result


def by_message(rows: list[dict]) -> list[dict]:
    """The compared rows grouped by message (the new message for rows still kicked out),
    largest group first, each with its counts per change, in words too: every change
    ("1 fixed, 2 still kicked out"), and what is left ("2 still kicked out, 1 new")."""
    groups: dict[str, dict] = {}
    for row in rows:
        group = groups.setdefault(
            row["message"], {"message": row["message"], "rows": [], FIXED: 0, STILL: 0, NEW: 0}
        )
        group["rows"].append({**row, "label": CHANGE_LABELS[row["change"]]})
        group[row["change"]] += 1
    for group in groups.values():
        group["change_words"] = _in_words(group, (FIXED, STILL, NEW))
        group["left_words"] = _in_words(group, (STILL, NEW))
    return sorted(groups.values(), key=lambda g: (-len(g["rows"]), g["message"]))


def _in_words(group: dict, changes: tuple[str, ...]) -> str:
    return ", ".join(f"{group[c]} {CHANGE_LABELS[c]}" for c in changes if group[c])


def _ended(status: str) -> str:
    status = status.strip().lower()
    if status == "completed with kickouts":
        return "kickouts"
    if status == "completed":
        return "completed"
    if "fail" in status:
        return "failed"
    return "other"


def compare_retry(attempt: RetryAttempt, follow: FollowUp) -> str:
    """Compare once the new task ended, and store it as the retry's `Comparison`.

    `follow` holds the end as the follow-up read it: the new task is not asked about again.
    Idempotent: a retry already compared (or whose new task failed) is left as it is; one
    whose comparison failed (EnergyCAP did not answer) is tried again.
    """
    done = Comparison.objects.filter(
        retry=attempt, state__in=[CompareState.COMPARED, CompareState.NEW_TASK_FAILED]
    ).first()
    if done is not None:
        return done.state
    if not follow.finished:
        return "not ended"
    kind = _ended(follow.status)
    if kind == "failed":
        state = _store(attempt, state=CompareState.NEW_TASK_FAILED)
        _back_in_the_queue(attempt, follow)
        return state
    if kind == "other":
        return _store(
            attempt,
            state=CompareState.ERROR,
            error=(
                f"EnergyCAP's status “{follow.status}” is not one the dashboard "
                "compares (only “Completed” and “Completed with kickouts”)."
            ),
        )
    api = energycap.client()
    try:
        sources = []
        for guid in attempt.source_guids:
            source = snapshots.stored(guid)
            if source is None:
                source = snapshots.ensure_snapshot(api.get_task(guid))
            if source is None:
                raise EnergyCapError("The source import's kickouts could not be stored.")
            sources.append(source)
        after: list[KickoutRow] = []
        if kind == "kickouts":
            new = snapshots.ensure_snapshot(
                status.recorded_task(follow, task_id=attempt.new_task_id)
            )
            if new is None:
                raise EnergyCapError("The new import's kickouts could not be stored.")
            after = list(new.rows.order_by("position"))
    except EnergyCapError as exc:
        logger.warning("Retry #%s not compared: %s", attempt.pk, exc.message)
        _store(attempt, state=CompareState.ERROR, error=exc.message)
        # A missing task or a refused key will not answer later: not worth asking again.
        return GAVE_UP if exc.permanent else CompareState.ERROR
    # The queue follows: rows still kicked out are in the new import's snapshot (open);
    # the sources leave the queue as re-imported (or corrected), if nobody marked them yet.
    for source in sources:
        if not source.is_handled:
            source.mark_handled(
                user=attempt.requested_by,
                reason=attempt.handled_reason,
                note=(
                    f"Corrected file imported by retry #{attempt.pk}."
                    if attempt.is_corrected_file
                    else f"Re-imported by retry #{attempt.pk}."
                ),
            )
    before = [row for source in sources for row in source.rows.order_by("position")]
    result = compare_rows(before, after)
    return _store(attempt, state=CompareState.COMPARED, result=result)


def _back_in_the_queue(attempt: RetryAttempt, follow: FollowUp) -> None:
    """A re-import (or corrected file) that failed: the source imports' kickouts are still to
    do, so the queue shows them again. Only the mark this kind of retry makes by itself is
    undone ("re-imported", "corrected file imported"); a reason a person chose otherwise
    stays. When EnergyCAP's counts prove that no bill was imported, the retry says "nothing
    imported": the task may be retried by a clerk, without the duplicate warning (the counts
    missing or showing bills keep it)."""
    if follow.proves_nothing_imported:
        attempt.mark_imported_nothing()
    proof = (
        "EnergyCAP's counts show no bill imported"
        if follow.proves_nothing_imported
        else "its kickouts are to do again"
    )
    for source in ImportSnapshot.objects.filter(task_guid__in=attempt.source_guids):
        if source.handled_reason == attempt.handled_reason:
            source.reopen(
                user=None,
                note=f"The {attempt.noun} of retry #{attempt.pk} ended “{follow.status}”: "
                f"{proof}, so its kickouts are open again.",
            )


def worth_trying_again(attempt: RetryAttempt) -> bool:
    """A failed comparison of an ended "Completed …" task: EnergyCAP may answer later."""
    found = Comparison.objects.filter(retry=attempt).first()
    follow = FollowUp.objects.filter(retry=attempt).first()
    return (
        found is not None
        and found.state == CompareState.ERROR
        and follow is not None
        and _ended(follow.status) in ("kickouts", "completed")
    )


def _store(
    attempt: RetryAttempt, *, state: str, result: Compared | None = None, error: str = ""
) -> str:
    values: dict[str, Any] = {
        "state": state,
        "compared_at": timezone.now(),
        "error": error[:2000],
        "rows": result.rows if result else [],
        "before_count": None,
        "fixed_count": None,
        "still_count": None,
        "new_count": None,
    }
    if result is not None:
        values.update(
            before_count=result.count(FIXED) + result.count(STILL),
            fixed_count=result.count(FIXED),
            still_count=result.count(STILL),
            new_count=result.count(NEW),
        )
    # Only a missing or failed comparison is (re)written: a finished one never changes.
    try:
        with transaction.atomic():
            stored = Comparison.objects.filter(retry=attempt, state=CompareState.ERROR).update(
                **values
            )
            if not stored:
                Comparison.objects.create(retry=attempt, **values)
            # The rows per cause, for the overview's sums (kickouts/overview_models.py).
            ComparisonCause.objects.bulk_create(
                comparison_causes(Comparison(retry=attempt), values["rows"])
            )
    except IntegrityError:
        pass  # compared meanwhile by another step
    attempt.__dict__.pop("compared", None)
    attempt._state.fields_cache.pop("comparison", None)
    return state
