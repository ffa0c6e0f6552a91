"""What the pages that call EnergyCAP load: one loader per page starts the page's independent
calls at once (`EnergyCap.at_once`) and returns a dataclass of values; views and helpers take
those values, never a bag of answers by name."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from . import choices, energycap, snapshots
from .energycap import Answer, EnergyCapError
from .forms import BatchChoices, RetryForm
from .models import RetryAttempt
from .payloads import KickoutGrid, KickoutSummary, Task


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

    def retry_form(self, data=None, *, user, initial=None, choices=None) -> RetryForm:
        """The retry form for this task: its rules checked against the loaded choices (or
        `choices`, when EnergyCAP could not give them) and the earlier retry."""
        return RetryForm(
            data,
            initial=initial,
            choices=choices or self.choices,
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
    calls = [partial(api.get_task, guid)]
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


def _kickouts(api, task: Task, stored, answered, message: str) -> Kickouts | EnergyCapError:
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
    needed: choices.ChoiceCalls | None, answers: list[Answer]
) -> BatchChoices | EnergyCapError | None:
    if needed is None:
        return None
    try:
        return needed.choices(answers)
    except EnergyCapError as exc:
        return exc
