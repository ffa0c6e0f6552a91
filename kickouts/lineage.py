"""The chain original task → retry → new task → its retry …, from our own records.

EnergyCAP keeps no link from a re-import task (or a corrected file's import) back to its
source, so the dashboard's retry records are the only lineage there is. A corrected file for
several imports is in the chain of each of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .models import RetryAttempt

MAX_DEPTH = 20


@dataclass
class Lineage:
    ancestors: list[RetryAttempt] = field(default_factory=list)  # oldest first
    descendants: list[tuple[int, RetryAttempt]] = field(default_factory=list)  # (depth, retry)

    @property
    def is_empty(self) -> bool:
        return not self.ancestors and not self.descendants

    @property
    def root_guid(self) -> str | None:
        return self.ancestors[0].source_task_guid if self.ancestors else None


def for_task(guid: str) -> Lineage:
    """The retries that led to this task and the retries made of it and its offspring."""
    result = Lineage()
    seen = {guid}
    current = guid
    for _ in range(MAX_DEPTH):
        parent = (
            RetryAttempt.objects.filter(new_task_guid=current)
            .select_related("requested_by", "follow_up", "comparison", "corrected_file")
            .first()
        )
        if parent is None or parent.source_task_guid in seen:
            break
        result.ancestors.insert(0, parent)
        seen.add(parent.source_task_guid)
        current = parent.source_task_guid
    # Three queries per generation (the retries, their other sources), not per retry.
    frontier = [guid]
    listed: set[int] = set()
    parents: dict[int, str] = {}  # each retry: the task it hangs under in the chain
    for depth in range(MAX_DEPTH):
        children = [
            retry
            for retry in RetryAttempt.objects.touching(frontier)
            .select_related("requested_by", "follow_up", "comparison", "corrected_file")
            .prefetch_related("sources")
            .order_by("requested_at", "id")
            if retry.pk not in listed
        ]
        if not children:
            break
        next_frontier = []
        for retry in children:
            listed.add(retry.pk)
            # Its place in the chain: under the first of its sources in this generation.
            parents[retry.pk] = next(
                (g for g in retry.source_guids if g in frontier), retry.source_task_guid
            )
            result.descendants.append((depth, retry))
            if retry.new_task_guid and retry.new_task_guid not in seen:
                seen.add(retry.new_task_guid)
                next_frontier.append(retry.new_task_guid)
        frontier = next_frontier
        if not frontier:
            break
    result.descendants = _depth_first(result.descendants, parents)
    return result


def _depth_first(
    flat: list[tuple[int, RetryAttempt]], parents: dict[int, str]
) -> list[tuple[int, RetryAttempt]]:
    """Order generations so each retry is followed by the retries of its new task (`parents`:
    the task each retry hangs under)."""
    children: dict[str, list[tuple[int, RetryAttempt]]] = {}
    for depth, retry in flat:
        children.setdefault(parents[retry.pk], []).append((depth, retry))
    roots = [item for item in flat if item[0] == 0]
    ordered: list[tuple[int, RetryAttempt]] = []

    def walk(item):
        ordered.append(item)
        for child in children.get(item[1].new_task_guid, []) if item[1].new_task_guid else []:
            if child[0] == item[0] + 1:
                walk(child)

    for root in roots:
        walk(root)
    return ordered
