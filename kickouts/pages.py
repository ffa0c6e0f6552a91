"""What the pages that call EnergyCAP load: one loader per page starts the page's independent
calls at once (`EnergyCap.at_once`) and returns a dataclass of values; views and helpers take
those values, never a bag of answers by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db.models import Count
from django.http import QueryDict

from . import choices, energycap, snapshots
from .energycap import Answer, EnergyCapError
from .forms import BatchChoices, RetryForm
from .models import RetryAttempt, import_label
from .payloads import ImportProfile, KickoutGrid, KickoutSummary, Task
from .queue_models import ImportSnapshot, KickoutRow, SnapshotState


@dataclass(frozen=True)
class Kickouts:
    """An import's kickout summary and grid (all rows, or those of one message): stored for
    an ended import with kickouts, as EnergyCAP answered for any other."""

    summary: KickoutSummary
    grid: KickoutGrid


@dataclass(frozen=True)
class TaskPageData:
    """A task page (and each step of its retry form): the task, its kickouts and the retry
    form's choices, each a value or the typed error that kept it from the page, and the
    earlier retry that may have imported its kickouts already."""

    task: Task
    kickouts: Kickouts | EnergyCapError | None  # None: not a bill import, or not asked for
    choices: BatchChoices | EnergyCapError | None  # None: not asked for (no retry form)
    earlier_retry: RetryAttempt | None = None

    def retry_form(
        self,
        data: QueryDict | None = None,
        *,
        user: Any,
        initial: dict[str, Any] | None = None,
        choices: BatchChoices | None = None,
    ) -> RetryForm:
        """The retry form for this task: its rules checked against the loaded choices (or
        `choices`, when EnergyCAP could not give them) and the earlier retry."""
        offered = choices or self.choices
        assert isinstance(offered, BatchChoices), "a retry form needs the batch choices"
        return RetryForm(
            data,
            initial=initial,
            choices=offered,
            earlier_retry=self.earlier_retry,
            may_repeat=user.has_perm("kickouts.confirm_duplicate_retry"),
        )


def load_task_page(
    guid: str, *, with_kickouts: bool = True, with_choices: bool = False, message: str = ""
) -> TaskPageData:
    """The task, its kickouts (unless stored, asked at once with it) and the form's choices.

    Raises the task's own typed error (`NotFound`, …): without the task there is no page."""
    api = energycap.client()
    stored = snapshots.stored(guid) if with_kickouts else None
    ask_kickouts = with_kickouts and stored is None
    needed = choices.choice_calls(api) if with_choices else None
    calls: list[Callable[[], object]] = [partial(api.get_task, guid)]
    if ask_kickouts:
        calls += [partial(api.kickout_summary, guid), partial(api.kickout_detail, guid)]
    if needed is not None:
        calls += needed.calls()
    task_answer, *answers = api.at_once(*calls)
    task = task_answer.get()
    answered = None
    if ask_kickouts:
        answered = snapshots.Answered(summary=answers[0], detail=answers[1])
        answers = answers[2:]
    kickouts = None
    if with_kickouts and task.is_bill_import:
        kickouts = _kickouts(api, task, stored, answered, message)
    earlier = RetryAttempt.objects.latest_import_of(task.guid) if with_choices else None
    return TaskPageData(
        task=task, kickouts=kickouts, choices=_choices(needed, answers), earlier_retry=earlier
    )


def _kickouts(
    api: energycap.EnergyCap,
    task: Task,
    stored: ImportSnapshot | None,
    answered: snapshots.Answered | None,
    message: str,
) -> Kickouts | EnergyCapError:
    try:
        if task.can_retry_kickouts:
            # An ended import's kickouts never change: stored once, then read from our tables.
            snapshot = stored or snapshots.ensure_snapshot(task, answered)
            return Kickouts(*snapshots.stored_kickouts(snapshot, message or None))
        summary = answered.summary.get() if answered else api.kickout_summary(task.guid)
        if message:
            grid = api.kickout_detail(task.guid, message)
        else:
            grid = answered.detail.get() if answered else api.kickout_detail(task.guid)
    except EnergyCapError as exc:
        return exc
    return Kickouts(summary, grid)


def _choices(
    needed: choices.ChoiceCalls | None, answers: list[Answer[Any]]
) -> BatchChoices | EnergyCapError | None:
    return None if needed is None else _offered(needed, answers)


def _offered(
    needed: choices.ChoiceCalls, answers: list[Answer[Any]]
) -> BatchChoices | EnergyCapError:
    try:
        return needed.choices(answers)
    except EnergyCapError as exc:
        return exc


@dataclass(frozen=True)
class Source:
    """One import a corrected file corrects: its stored kickouts, or why it cannot be one."""

    guid: str
    snapshot: ImportSnapshot | None = None  # an ended import with kickouts, as stored
    messages: tuple[tuple[str, int], ...] = ()  # (kickout message, rows), most rows first
    error: EnergyCapError | None = None  # EnergyCAP could not tell
    reason: str = ""  # why it is not an import with kickouts to correct

    @property
    def usable(self) -> bool:
        return self.snapshot is not None and not self.reason and self.error is None

    @property
    def task_id(self) -> int | None:
        return self.snapshot.task_id if self.snapshot is not None else None

    @property
    def label(self) -> str:
        return import_label(self.task_id, self.guid)

    @property
    def rows(self) -> int:
        return sum(count for _, count in self.messages)


@dataclass(frozen=True)
class CorrectedFilePageData:
    """The corrected-file form (each of its steps): the source imports, the batch-mode form's
    choices and EnergyCAP's import profiles, each a value or the typed error that kept it."""

    sources: list[Source]
    choices: BatchChoices | EnergyCapError
    profiles: list[ImportProfile] | EnergyCapError

    @property
    def usable_sources(self) -> list[Source]:
        return [source for source in self.sources if source.usable]


def load_corrected_file_page(guids: list[str]) -> CorrectedFilePageData:
    """The sources (stored kickouts first: only those not stored yet are asked for, their
    task and kickouts at once), the batches and the profiles, all asked at once."""
    api = energycap.client()
    stored = {
        snapshot.task_guid: snapshot
        for snapshot in ImportSnapshot.objects.filter(
            task_guid__in=guids, state=SnapshotState.READY
        )
    }
    missing = [guid for guid in guids if guid not in stored]
    needed = choices.choice_calls(api)
    calls: list[Callable[[], object]] = [api.import_profiles, *needed.calls()]
    for guid in missing:
        calls += [partial(api.get_task, guid), *snapshots.kickout_calls(api, guid)]
    profiles_answer, *answers = api.at_once(*calls)
    choice_answers = answers[: len(needed.calls())]
    asked = answers[len(needed.calls()) :]
    found: dict[str, Source] = {}
    for index, guid in enumerate(missing):
        task_answer, summary, detail = asked[3 * index : 3 * index + 3]
        found[guid] = _new_source(
            guid, task_answer, snapshots.Answered(summary=summary, detail=detail)
        )
    counts = _message_counts([s.pk for s in stored.values()])
    for guid, snapshot in stored.items():
        found[guid] = Source(guid, snapshot, counts.get(snapshot.pk, ()))
    try:
        profiles: list[ImportProfile] | EnergyCapError = profiles_answer.get()
    except EnergyCapError as exc:
        profiles = exc
    return CorrectedFilePageData(
        sources=[found[guid] for guid in guids],
        choices=_offered(needed, choice_answers),
        profiles=profiles,
    )


def _new_source(guid: str, task_answer: Answer[Task], answered: snapshots.Answered) -> Source:
    try:
        task = task_answer.get()
        if not task.can_retry_kickouts:
            return Source(guid, reason=_why_not_a_source(task))
        snapshot = snapshots.ensure_snapshot(task, answered)
    except EnergyCapError as exc:
        return Source(guid, error=exc)
    return Source(guid, snapshot, _message_counts([snapshot.pk]).get(snapshot.pk, ()))


def _why_not_a_source(task: Task) -> str:
    if not task.is_bill_import:
        return "it is not a bill import, so it has no kickouts"
    if task.is_running:
        return "it is still running: its kickouts are known once it ends"
    return f"it ended “{task.status or 'without a status'}”, without kickouts to correct"


def _message_counts(snapshot_ids: list[int]) -> dict[int, tuple[tuple[str, int], ...]]:
    """Each stored import's kickout messages with their rows, in one query."""
    counts: dict[int, list[tuple[str, int]]] = {}
    rows = (
        KickoutRow.objects.filter(snapshot_id__in=snapshot_ids)
        .values_list("snapshot_id", "message")
        .annotate(rows=Count("id"))
        .order_by("snapshot_id", "-rows", "message")
    )
    for snapshot_id, message, count in rows:
        counts.setdefault(snapshot_id, []).append((message, count))
    return {pk: tuple(items) for pk, items in counts.items()}
