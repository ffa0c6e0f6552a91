"""EnergyCAP's five batch modes, each described once.

The retry form's fields and per-mode rules, the JSON body it sends, the review's sentence,
the history's labels and words, and the form's field switching are all read from `MODES`.
The modes come from the `BillKickoutImportRequest` documentation (see
../shared/energycap-api.md, "The kickout re-import").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModeField:
    """A form field a mode uses, and its place in the body's `batchSettings`."""

    name: str  # the RetryForm field
    json_name: str  # its key in batchSettings
    in_words: str  # the history's words for a value ("{}" stands for it)
    when_empty: str = ""  # the history's words when none was sent (or false)
    sent_when_empty: bool = False  # a false tick box is sent too: it changes what happens


@dataclass(frozen=True)
class BatchMode:
    value: str  # EnergyCAP's batchMode
    label: str  # what the form and the history call it
    sentence: str  # what EnergyCAP does, in one plain sentence for clerks
    fields: tuple[ModeField, ...]
    # What the review says EnergyCAP will do; {batch}, {code}, {closing}, {smart_path} and
    # {bills} (which bills: re-imported, or a corrected file's) come from the cleaned form
    # (RetryForm.review_values).
    review: str
    # What the bulk review says happens to the batches for the whole set of {count} imports
    # ({rest} = count - 1); {batch}, {code} and {smart_bulk} as in `review` (kickouts/bulk.py).
    bulk_review: str = ""
    # Why a bulk in this mode stops when one import's outcome is unknown: what the rest
    # depended on ({batch}: the batch code, or "the batch"). kickouts/bulk.py.
    unknown_stop: str = ""
    # The field whose typing shows, live, what EnergyCAP will do with it.
    previewed_field: str = ""

    @property
    def slug(self) -> str:
        """The mode as a Python name: RetryForm's `clean_<slug>` holds its own rules."""
        return self.value.replace(" ", "_").replace("-", "_")

    @property
    def field_names(self) -> list[str]:
        return [field.name for field in self.fields]


OPEN_BATCH_ID = ModeField(
    "existing_open_batch_id",
    "existingOpenBatchId",
    in_words="into open batch #{}",
    when_empty="into the API user's only open batch",
)
LEAVE_OPEN = ModeField(
    "leave_existing_batches_open",
    "leaveExistingBatchesOpen",
    in_words="other open batches left open",
    when_empty="the API user's open batch closed first",
    sent_when_empty=True,
)
NEW_CODE = ModeField(
    "new_batch_code",
    "newBatchCode",
    in_words="batch code {}",
    when_empty="batch code chosen by EnergyCAP",
)
PENDING_BATCH_ID = ModeField(
    "pending_batch_id", "pendingBatchId", in_words="into pending batch #{}"
)

MODES = (
    BatchMode(
        "use existing batch",
        label="use existing batch",
        sentence="Adds the bills to an open batch and leaves it open.",
        fields=(OPEN_BATCH_ID,),
        review=("EnergyCAP will add {bills} to the open batch {batch} and leave it open."),
        bulk_review="use existing batch: all {count} go into open batch {batch}, which stays open.",
        unknown_stop="the rest would go into open batch {batch} beside bills it may hold already",
    ),
    BatchMode(
        "new batch",
        label="new batch",
        sentence=(
            "Makes a new open batch; unless told to leave them open, the API user's open "
            "batch is closed first."
        ),
        fields=(LEAVE_OPEN, NEW_CODE),
        review="EnergyCAP will make a new open batch named {code} and {closing}.",
        # Only with "leave existing batches open" ticked (forms.BulkRetryForm.clean_new_batch).
        bulk_review=(
            "new batch: makes {count} new open batches, one per import, each named {code}; "
            "the other open batches stay open."
        ),
        unknown_stop="each of the rest would make one more open batch while it is unclear",
    ),
    BatchMode(
        "new self-contained batch",
        label="new self-contained batch",
        sentence="Makes a new batch, adds the bills and closes it; other open batches stay open.",
        fields=(NEW_CODE,),
        review=(
            "EnergyCAP will make a new batch named {code}, add {bills} and "
            "close it; other open batches stay open."
        ),
        bulk_review=(
            "new self-contained batch: makes {count} separate batches, each named {code} and "
            "closed with its import."
        ),
        unknown_stop="EnergyCAP failing to answer may fail the rest the same way",
    ),
    BatchMode(
        "use pending batch",
        label="use pending batch",
        sentence="Adds the bills to a pending batch and leaves it pending.",
        fields=(PENDING_BATCH_ID,),
        review=("EnergyCAP will add {bills} to the pending batch {batch} and leave it pending."),
        bulk_review="use pending batch: all {count} go into pending batch {batch}.",
        unknown_stop=(
            "the rest would go into pending batch {batch} beside bills it may hold already"
        ),
    ),
    BatchMode(
        "smart batch",
        label="smart batch",
        sentence=(
            "Finds a batch by its code: uses a matching open or pending batch, or makes a new one."
        ),
        fields=(NEW_CODE,),
        review="{smart_path}",
        bulk_review="smart batch with code {code}: {smart_bulk}",
        unknown_stop=(
            "smart batch makes batch {batch} with the first import and adds the rest to it"
        ),
        previewed_field="new_batch_code",
    ),
)

BY_VALUE = {mode.value: mode for mode in MODES}
# (value, label), for the model field's and the forms' choices.
CHOICES = [(mode.value, mode.label) for mode in MODES]
# Every field some mode uses, once, in the order the form shows them.
MODE_FIELDS = list({field.name: field for mode in MODES for field in mode.fields}.values())


def used_by(field_name: str) -> list[str]:
    """The modes that use a field, by label."""
    return [mode.label for mode in MODES if field_name in mode.field_names]


def batch_settings(mode: BatchMode, values: dict) -> dict:
    """The body's `batchSettings` for `mode`: only the fields it uses, by their JSON names."""
    settings: dict = {"batchMode": mode.value}
    for field in mode.fields:
        value = values.get(field.name)
        if field.sent_when_empty:
            settings[field.json_name] = bool(value)
        elif value not in (None, ""):
            settings[field.json_name] = value
    return settings


def form_values(settings: dict) -> dict:
    """The form's values for a body's `batchSettings` (the reverse of `batch_settings`)."""
    return {
        field.name: (
            bool(settings.get(field.json_name))
            if field.sent_when_empty
            else settings.get(field.json_name)
        )
        for field in MODE_FIELDS
    }


def form_initial(body: dict, mode_value: str) -> dict:
    """The retry form's values that would send this JSON body again (try again, send the
    lines not sent again)."""
    body = body or {}
    settings = body.get("batchSettings") or {}
    return {
        "batch_mode": settings.get("batchMode", mode_value),
        **form_values(settings),
        "import_note": body.get("importNote", ""),
        "comment": body.get("comment", ""),
        "save_as_resolved": bool(body.get("saveAsResolved")),
    }


def settings_in_words(mode_value: str, settings: dict) -> list[str]:
    """A sent `batchSettings` in the history's words, field by field."""
    mode = BY_VALUE.get(mode_value)
    if mode is None:
        return []
    words = []
    for field in mode.fields:
        value = settings.get(field.json_name)
        if value not in (None, "", False):
            words.append(field.in_words.format(value))
        elif field.when_empty:
            words.append(field.when_empty)
    return words
