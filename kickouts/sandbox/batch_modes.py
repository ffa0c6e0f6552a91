"""The body of the kickout re-import and the rules of its five batch modes.

``parse_kickout_request`` checks the JSON shape of a ``BillKickoutImportRequest`` the way
ASP.NET model binding would: every known field is type-checked whatever the mode (binding happens
before any mode logic), and ``newBatchCode`` is limited to 255 characters. ``plan_batch`` then
applies the documented rules of the chosen mode; fields a mode does not use are ignored.

Where the documentation is silent, the sandbox decides (each a guess, marked here):

- every refusal is 400 with a ``message``; the documentation only says "it fails";
- a missing ``batchSettings`` or ``batchMode`` is refused;
- ``new batch`` and ``new self-contained batch`` refuse a code that an existing batch already has
  (compared case-insensitively): EnergyCAP's smart batch renames a closed duplicate, which
  suggests codes must be unique;
- an empty ``newBatchCode`` means "generate one" (``KO-<yyyymmdd>-<n>``), since 0 characters is
  documented as valid;
- ``use pending batch`` accepts a pending batch of any owner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .state import Batch, SandboxState

USE_EXISTING_BATCH = "use existing batch"
NEW_BATCH = "new batch"
NEW_SELF_CONTAINED_BATCH = "new self-contained batch"
USE_PENDING_BATCH = "use pending batch"
SMART_BATCH = "smart batch"
BATCH_MODES = (
    USE_EXISTING_BATCH,
    NEW_BATCH,
    NEW_SELF_CONTAINED_BATCH,
    USE_PENDING_BATCH,
    SMART_BATCH,
)
MAX_BATCH_CODE_LENGTH = 255
INT32_MAX = 2**31 - 1


class KickoutRequestError(ValueError):
    """The re-import cannot be done as asked; the API answers 400 with this message."""


@dataclass(frozen=True)
class BatchSettings:
    batch_mode: str
    existing_open_batch_id: int | None = None
    pending_batch_id: int | None = None
    leave_existing_batches_open: bool | None = None
    new_batch_code: str | None = None


@dataclass(frozen=True)
class KickoutImportRequest:
    batch_settings: BatchSettings
    import_note: str | None = None
    comment: str | None = None
    save_as_resolved: bool | None = None


@dataclass(frozen=True)
class ApiUserView:
    """What the rules need to know about the key's user."""

    user_id: int
    user_code: str
    can_manage: bool


@dataclass(frozen=True)
class BatchPlan:
    """Where the bills go. Exactly one of ``target_batch_id`` / ``new_batch_code`` is set."""

    effective_mode: str
    target_batch_id: int | None = None
    new_batch_code: str | None = None
    close_batch_ids: tuple[int, ...] = ()  # closed when the import starts
    close_when_done: bool = False  # the new batch closes when the import task ends


def parse_kickout_request(body: Any) -> KickoutImportRequest:
    if not isinstance(body, dict):
        raise KickoutRequestError("The request body must be a JSON object.")
    settings = body.get("batchSettings")
    if settings is None:
        raise KickoutRequestError("batchSettings is required.")
    if not isinstance(settings, dict):
        raise KickoutRequestError("batchSettings must be an object.")
    mode = settings.get("batchMode")
    if mode is None:
        raise KickoutRequestError("batchSettings.batchMode is required.")
    if not isinstance(mode, str) or mode not in BATCH_MODES:
        allowed = ", ".join(f"'{m}'" for m in BATCH_MODES)
        raise KickoutRequestError(f"batchMode {mode!r} is not one of {allowed}.")
    code = _optional(settings, "newBatchCode", str, "batchSettings.")
    if code is not None and len(code) > MAX_BATCH_CODE_LENGTH:
        raise KickoutRequestError(
            f"newBatchCode is {len(code)} characters long; "
            f"at most {MAX_BATCH_CODE_LENGTH} are allowed."
        )
    return KickoutImportRequest(
        batch_settings=BatchSettings(
            batch_mode=mode,
            existing_open_batch_id=_optional_int32(settings, "existingOpenBatchId"),
            pending_batch_id=_optional_int32(settings, "pendingBatchId"),
            leave_existing_batches_open=_optional(
                settings, "leaveExistingBatchesOpen", bool, "batchSettings."
            ),
            new_batch_code=code,
        ),
        import_note=_optional(body, "importNote", str, ""),
        comment=_optional(body, "comment", str, ""),
        save_as_resolved=_optional(body, "saveAsResolved", bool, ""),
    )


def plan_batch(
    settings: BatchSettings,
    batches: Iterable[Batch],
    user: ApiUserView,
    *,
    auto_code: Callable[[], str],
    new_guid: Callable[[], str],
) -> BatchPlan:
    """Decide the target batch by the documented rules of ``settings.batch_mode``."""
    all_batches = list(batches)
    mode = settings.batch_mode
    if mode == USE_EXISTING_BATCH:
        return _use_existing(settings.existing_open_batch_id, all_batches, user)
    if mode == NEW_BATCH:
        return _new_batch(settings, all_batches, user, auto_code)
    if mode == NEW_SELF_CONTAINED_BATCH:
        code = _new_code(settings.new_batch_code, all_batches, auto_code)
        return BatchPlan(NEW_SELF_CONTAINED_BATCH, new_batch_code=code, close_when_done=True)
    if mode == USE_PENDING_BATCH:
        return _use_pending(settings.pending_batch_id, all_batches)
    return _smart(settings.new_batch_code, all_batches, user, new_guid)


def place_bills(state: SandboxState, settings: BatchSettings, now: datetime) -> tuple[Batch, bool]:
    """Carry out the plan of ``settings`` for a new import (a re-import or a file import).

    Closes the batches the plan closes, makes its new batch, and answers the target batch and
    whether it closes when the import ends. Raises ``KickoutRequestError`` before changing
    anything when the rules refuse.
    """
    user = ApiUserView(
        user_id=state.api_user_id,
        user_code=state.api_user.user_code,
        can_manage=state.permissions.manage,
    )
    plan = plan_batch(
        settings,
        state.batches.values(),
        user,
        auto_code=lambda: state.auto_batch_code(now),
        new_guid=state.new_guid,
    )
    for batch_id in plan.close_batch_ids:
        state.close_batch(state.batches[batch_id], now)
    if plan.target_batch_id is not None:
        return state.batches[plan.target_batch_id], plan.close_when_done
    assert plan.new_batch_code is not None
    return state.create_batch(plan.new_batch_code, state.api_user_id, now), plan.close_when_done


def _use_existing(batch_id: int | None, batches: list[Batch], user: ApiUserView) -> BatchPlan:
    if batch_id is None:
        own_open = [b for b in batches if b.is_open and b.owner_id == user.user_id]
        if len(own_open) != 1:
            raise KickoutRequestError(
                f"'{USE_EXISTING_BATCH}' without existingOpenBatchId needs exactly one open "
                f"batch owned by {user.user_code}; there are {len(own_open)}."
            )
        return BatchPlan(USE_EXISTING_BATCH, target_batch_id=own_open[0].batch_id)
    batch = _by_id(batches, batch_id)
    if batch is None:
        raise KickoutRequestError(f"Batch {batch_id} was not found.")
    _require_usable_open(batch, user, USE_EXISTING_BATCH)
    return BatchPlan(USE_EXISTING_BATCH, target_batch_id=batch.batch_id)


def _new_batch(
    settings: BatchSettings,
    batches: list[Batch],
    user: ApiUserView,
    auto_code: Callable[[], str],
) -> BatchPlan:
    closing: tuple[int, ...] = ()
    if not settings.leave_existing_batches_open:
        own_open = [b for b in batches if b.is_open and b.owner_id == user.user_id]
        if len(own_open) > 1:
            raise KickoutRequestError(
                f"'{NEW_BATCH}' closes the open batch of {user.user_code}, but there are "
                f"{len(own_open)} open batches; set leaveExistingBatchesOpen or close all "
                "but one."
            )
        closing = tuple(b.batch_id for b in own_open)
    code = _new_code(settings.new_batch_code, batches, auto_code)
    return BatchPlan(NEW_BATCH, new_batch_code=code, close_batch_ids=closing)


def _use_pending(batch_id: int | None, batches: list[Batch]) -> BatchPlan:
    if batch_id is None:
        raise KickoutRequestError(f"'{USE_PENDING_BATCH}' requires pendingBatchId.")
    batch = _by_id(batches, batch_id)
    if batch is None:
        raise KickoutRequestError(f"Pending batch {batch_id} was not found.")
    if batch.status != "Pending":
        raise KickoutRequestError(
            f"Batch {batch_id} ({batch.batch_code}) is not pending; its status is {batch.status}."
        )
    return BatchPlan(USE_PENDING_BATCH, target_batch_id=batch.batch_id)


def _smart(
    code: str | None,
    batches: list[Batch],
    user: ApiUserView,
    new_guid: Callable[[], str],
) -> BatchPlan:
    if code is None or not code.strip():
        raise KickoutRequestError(f"'{SMART_BATCH}' requires newBatchCode.")
    same_code = [b for b in batches if b.batch_code.lower() == code.lower()]
    if any(b.status == "Closed" for b in same_code):
        # EnergyCAP: a closed batch with the code makes a new batch named code + GUID, and
        # the mode becomes "new batch" with the other open batches left open.
        return BatchPlan(NEW_BATCH, new_batch_code=f"{code}-{new_guid()}")
    open_batches = [b for b in same_code if b.is_open]
    if open_batches:
        batch = next((b for b in open_batches if b.owner_id == user.user_id), open_batches[0])
        _require_usable_open(batch, user, USE_EXISTING_BATCH, rewritten_from=SMART_BATCH)
        return BatchPlan(USE_EXISTING_BATCH, target_batch_id=batch.batch_id)
    pending = [b for b in same_code if b.status == "Pending"]
    if pending:
        return BatchPlan(USE_PENDING_BATCH, target_batch_id=pending[0].batch_id)
    return BatchPlan(NEW_BATCH, new_batch_code=code)


def _require_usable_open(
    batch: Batch, user: ApiUserView, mode: str, rewritten_from: str | None = None
) -> None:
    prefix = f"'{rewritten_from}' became '{mode}': " if rewritten_from else f"'{mode}': "
    if not batch.is_open:
        raise KickoutRequestError(
            f"{prefix}batch {batch.batch_id} ({batch.batch_code}) is not open; its status is "
            f"{batch.status}."
        )
    if batch.owner_id != user.user_id and not user.can_manage:
        raise KickoutRequestError(
            f"{prefix}batch {batch.batch_id} ({batch.batch_code}) belongs to another user; "
            "using it needs the Bills and Batches Manage permission."
        )


def _new_code(code: str | None, batches: list[Batch], auto_code: Callable[[], str]) -> str:
    if code is None or not code.strip():
        return auto_code()
    if any(b.batch_code.lower() == code.lower() for b in batches):
        raise KickoutRequestError(f"A batch with code '{code}' already exists.")
    return code


def _by_id(batches: list[Batch], batch_id: int) -> Batch | None:
    return next((b for b in batches if b.batch_id == batch_id), None)


def _optional(source: dict[str, Any], name: str, kind: type, prefix: str) -> Any:
    value = source.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise KickoutRequestError(
            f"{prefix}{name} must be a {_type_name(kind)}, not {_json_type(value)}."
        )
    return value


def _optional_int32(settings: dict[str, Any], name: str) -> int | None:
    value = _optional(settings, name, int, "batchSettings.")
    if value is not None and not -(2**31) <= value <= INT32_MAX:
        raise KickoutRequestError(f"batchSettings.{name} {value} is out of the int32 range.")
    return value


def _type_name(kind: type) -> str:
    return {str: "string", bool: "boolean", int: "whole number"}.get(kind, kind.__name__)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
