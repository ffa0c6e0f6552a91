"""What the batch-mode form offers: the key's EnergyCAP user (cached) and the open and pending
batches, asked at once beside a page's own calls."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.core.cache import cache

from . import energycap
from .energycap import Answer
from .forms import BatchChoices
from .payloads import CurrentUser

API_USER_CACHE_SECONDS = 300


def _api_user_key(api: energycap.EnergyCap) -> str:
    return "energycap:me:" + hashlib.sha256(api.base_url.encode()).hexdigest()[:16]


def api_user(api: energycap.EnergyCap) -> CurrentUser:
    """The key's EnergyCAP user, cached: its identity and permissions rarely change."""
    key = _api_user_key(api)
    user: CurrentUser | None = cache.get(key)
    if user is None:
        user = api.current_user()
        cache.set(key, user, API_USER_CACHE_SECONDS)
    return user


@dataclass(frozen=True)
class ChoiceCalls:
    """The calls the form needs, made at once with a page's others (`EnergyCap.at_once`):
    the open and pending batches, and the key's user unless it is cached."""

    api: energycap.EnergyCap
    cached_user: CurrentUser | None

    def calls(self) -> list[Callable[[], object]]:
        batches = partial(
            self.api.list_batches,
            filter_clauses=[("batchStatus", "one of", ["Open", "Pending"])],
        )
        return [batches] if self.cached_user is not None else [batches, self.api.current_user]

    def choices(self, answers: Sequence[Answer[Any]]) -> BatchChoices:
        """The choices from the answers to `calls()`, in their order; raises a call's typed
        error (the user's first)."""
        user = self.cached_user
        if user is None:
            user = answers[1].get()
            cache.set(_api_user_key(self.api), user, API_USER_CACHE_SECONDS)
        return BatchChoices(
            api_user=user, batches=answers[0].get().items, find_by_code=self.api.batches_with_code
        )


def choice_calls(api: energycap.EnergyCap) -> ChoiceCalls:
    return ChoiceCalls(api, cache.get(_api_user_key(api)))


def load_batch_choices(api: energycap.EnergyCap) -> BatchChoices:
    """The choices, asked now (at once). Smart batch's look-up by code comes later: the code
    must be valid first."""
    needed = choice_calls(api)
    return needed.choices(api.at_once(*needed.calls()))


def unavailable_batch_choices() -> BatchChoices:
    """No batches known (EnergyCAP did not answer): the form can only show what was typed."""
    return BatchChoices(
        api_user=CurrentUser(
            user_id=None,
            user_code="",
            full_name="",
            can_view_bills=False,
            can_create_bills=False,
            can_manage_bills=False,
        ),
        batches=[],
        find_by_code=lambda code: [],
    )
