"""The chain original task → retry → new task → its retry …, from our own records.

EnergyCAP keeps no link from a re-import task back to its source, so the
dashboard's retry records are the only lineage there is.
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
            .select_related("requested_by", "follow_up", "comparison")
            .first()
        )
        if parent is None or parent.source_task_guid in seen:
            break
        result.ancestors.insert(0, parent)
        seen.add(parent.source_task_guid)
        current = parent.source_task_guid
    # One query per generation, not per retry.
    frontier = [guid]
    for depth in range(MAX_DEPTH):
        children = list(
            RetryAttempt.objects.filter(source_task_guid__in=frontier)
            .select_related("requested_by", "follow_up", "comparison")
            .order_by("requested_at", "id")
        )
        if not children:
            break
        next_frontier = []
        for retry in children:
            result.descendants.append((depth, retry))
            if retry.new_task_guid and retry.new_task_guid not in seen:
                seen.add(retry.new_task_guid)
                next_frontier.append(retry.new_task_guid)
        frontier = next_frontier
        if not frontier:
            break
    result.descendants = _depth_first(result.descendants)
    return result


def _depth_first(flat: list[tuple[int, RetryAttempt]]) -> list[tuple[int, RetryAttempt]]:
    """Order generations so each retry is followed by the retries of its new task."""
    children: dict[str, list[tuple[int, RetryAttempt]]] = {}
    for depth, retry in flat:
        children.setdefault(retry.source_task_guid, []).append((depth, retry))
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
