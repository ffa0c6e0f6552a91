"""The retry form: every batch-mode rule of EnergyCAP's kickout re-import lives here.

The rules come from the `BillKickoutImportRequest` documentation (see
../shared/energycap-api.md, "The kickout re-import"). They are checked on the
server before anything is sent, each message on the field it concerns. What each mode
is, uses and sends is described once, in `batch_modes.MODES`; the rules a mode adds are
the method named after it (`clean_smart_batch`).
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django import forms
from django.core.exceptions import ValidationError
from django.template.defaultfilters import date as date_filter
from django.utils import timezone

from . import batch_modes, uploads
from .energycap import EnergyCapError
from .models import Outcome, RetryAttempt
from .payloads import Batch, CurrentUser, ImportProfile

INT32_MAX = 2_147_483_647
BATCH_CODE_MAX = 255  # EnergyCAP: newBatchCode is 0-255 characters.
NOTE_MAX = 1000  # Our own limit, stated on the form; EnergyCAP publishes none.
SMART_LOOKUP_FAILED = (
    "EnergyCAP's batches could not be looked up just now; the path is checked again when you "
    "review."
)


@dataclass
class BatchChoices:
    """What the form needs to know about EnergyCAP's batches and the API key's user."""

    api_user: CurrentUser
    batches: list[Batch]  # open and pending batches
    find_by_code: Callable[[str], list[Batch]]

    @property
    def open_batches(self) -> list[Batch]:
        return [b for b in self.batches if b.is_open]

    @property
    def pending_batches(self) -> list[Batch]:
        return [b for b in self.batches if b.is_pending]

    @property
    def own_open_batches(self) -> list[Batch]:
        return [b for b in self.open_batches if b.is_owned_by(self.api_user.user_id)]


@dataclass
class SmartPath:
    """What smart batch will do with a code: a sentence, the batch used, or why it fails."""

    sentence: str
    target: Batch | None = None
    error: str = ""
    # The code's batch is closed: every import makes a batch of its own (a bulk retry's review).
    new_batch_each_time: bool = False


def refuse_control_characters(value: str, *, allow_line_breaks: bool = False) -> None:
    allowed = {"\n", "\r", "\t"} if allow_line_breaks else set()
    for char in value:
        if char not in allowed and unicodedata.category(char) in {"Cc", "Cf"}:
            raise ValidationError(
                "Remove the invisible control character (%(code)s) from this text; "
                "it would not survive EnergyCAP's import.",
                params={"code": f"U+{ord(char):04X}"},
                code="control_character",
            )


def _code_validator(value: str) -> None:
    refuse_control_characters(value)


def _note_validator(value: str) -> None:
    refuse_control_characters(value, allow_line_breaks=True)


class AsciiIntegerField(forms.IntegerField):
    """A whole number written in ASCII digits only: `int()` also reads "١٢" or "１２"."""

    def to_python(self, value):
        if value not in self.empty_values:
            text = str(value).strip()
            if not (text.isascii() and text.isdigit() and len(text) <= 10):
                raise ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}es"


class RetryForm(forms.Form):
    """Batch settings and notes for `POST …/kickout`, validated per batch mode."""

    batch_mode = forms.ChoiceField(
        label="Batch mode",
        choices=batch_modes.CHOICES,
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose a batch mode: it decides which batch the bills go into.",
            "invalid_choice": (
                "%(value)s is not one of EnergyCAP's five batch modes; choose one of them."
            ),
        },
    )
    existing_open_batch_id = AsciiIntegerField(
        label="Existing open batch",
        required=False,
        min_value=1,
        max_value=INT32_MAX,
        widget=forms.Select,
        help_text="Leave at the first choice to use the API user's only open batch.",
        error_messages={"invalid": "Choose a batch from the list (a whole number id)."},
    )
    leave_existing_batches_open = forms.BooleanField(
        label="Leave existing batches open",
        required=False,
        help_text="Unticked, EnergyCAP closes the API user's open batch first.",
    )
    new_batch_code = forms.CharField(
        label="New batch code",
        required=False,
        max_length=BATCH_CODE_MAX,
        validators=[_code_validator],
        help_text=f"At most {BATCH_CODE_MAX} characters.",
    )
    pending_batch_id = AsciiIntegerField(
        label="Pending batch",
        required=False,
        min_value=1,
        max_value=INT32_MAX,
        widget=forms.Select,
        error_messages={"invalid": "Choose a pending batch from the list."},
    )
    import_note = forms.CharField(
        label="Import note",
        required=False,
        max_length=NOTE_MAX,
        validators=[_note_validator],
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=f"Optional note on the new import, at most {NOTE_MAX} characters.",
    )
    comment = forms.CharField(
        label="Comment",
        required=False,
        max_length=NOTE_MAX,
        validators=[_note_validator],
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=(
            f"Why failed audits are resolved automatically; only with Save as resolved. "
            f"At most {NOTE_MAX} characters."
        ),
    )
    save_as_resolved = forms.BooleanField(
        label="Save as resolved",
        required=False,
        help_text="Mark the bills' failed audits as resolved automatically.",
    )
    confirm_duplicate = forms.BooleanField(label="I confirm the duplicate import", required=False)
    duplicate_of = AsciiIntegerField(required=False, widget=forms.HiddenInput)
    form_token = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(
        self,
        *args,
        choices: BatchChoices,
        earlier_retry: RetryAttempt | None = None,
        may_repeat: bool = False,
        **kwargs,
    ):
        kwargs["initial"] = dict(kwargs.get("initial") or {})
        kwargs["initial"].setdefault("form_token", uuid.uuid4())
        if earlier_retry is not None:
            kwargs["initial"].setdefault("duplicate_of", earlier_retry.pk)
        super().__init__(*args, **kwargs)
        self.choices = choices
        self.earlier_retry = earlier_retry
        self.may_repeat = may_repeat
        self.smart_batch_path: str = ""
        self.smart_path: SmartPath | None = None
        self.target_batch: Batch | None = None
        # Never preselect what EnergyCAP would refuse: "no batch chosen" means the API user's
        # only open batch, so it is offered as that only when there is exactly one.
        if len(choices.own_open_batches) == 1:
            api_user = choices.api_user.full_name or "the API user"
            no_batch = f"The only open batch of {api_user}"
        else:
            no_batch = "Choose an open batch"
            self.fields["existing_open_batch_id"].help_text = "The open batch the bills go into."
        self.fields["existing_open_batch_id"].widget.choices = [("", no_batch)] + [
            (b.batch_id, _batch_label(b)) for b in choices.open_batches
        ]
        if self.closing_first_refused():
            # Unticked would be refused (see `clean_new_batch`): start ticked.
            self.initial["leave_existing_batches_open"] = True
        self.fields["pending_batch_id"].widget.choices = [("", "Choose a pending batch")] + [
            (b.batch_id, _batch_label(b)) for b in choices.pending_batches
        ]
        # Keep a submitted id visible even when it is not (or no longer) listed.
        for name in ("existing_open_batch_id", "pending_batch_id"):
            value = self.data.get(self.add_prefix(name)) if self.is_bound else None
            known = {str(v) for v, _ in self.fields[name].widget.choices}
            if value and value not in known:
                self.fields[name].widget.choices.append((value, f"Batch #{value} (not listed)"))
        if earlier_retry is not None:
            self.fields["confirm_duplicate"].help_text = self.duplicate_warning()

    # -- what the template needs --

    @property
    def chosen_mode(self) -> str:
        value = self.data.get("batch_mode") if self.is_bound else self.initial.get("batch_mode")
        return value if value in batch_modes.BY_VALUE else ""

    @property
    def mode(self) -> batch_modes.BatchMode | None:
        """The chosen mode's description, or None when none (or an unknown one) is chosen."""
        return batch_modes.BY_VALUE.get(self.chosen_mode)

    def mode_fields(self) -> list[forms.BoundField]:
        """Fields of the chosen mode; all of them when no mode is chosen (no JavaScript)."""
        names = self.mode.field_names if self.mode else None
        return [self[f.name] for f in batch_modes.MODE_FIELDS if names is None or f.name in names]

    def used_by(self, name: str) -> list[str]:
        return batch_modes.used_by(name)

    def mode_options(self) -> tuple[batch_modes.BatchMode, ...]:
        return batch_modes.MODES

    def previewed_field(self) -> str:
        """The field whose typing shows, live, what EnergyCAP will do (smart batch's code)."""
        return self.mode.previewed_field if self.mode else ""

    def ignored_fields(self) -> list[str]:
        """Labels of filled-in fields the chosen mode ignores (shown when JavaScript is off)."""
        if self.mode is None or not self.is_bound:
            return []
        return [
            self.fields[f.name].label
            for f in batch_modes.MODE_FIELDS
            if f.name not in self.mode.field_names and (self.data.get(f.name) or "").strip()
        ]

    def duplicate_warning(self) -> str:
        earlier = self.earlier_retry
        if earlier is None:
            return ""
        when, who, new_task = _earlier_words(earlier)
        if earlier.is_corrected_file:
            name = earlier.file.name if earlier.file else "a corrected file"
            return (
                f"These kickouts were already imported again by {who} on {when}, from the "
                f"corrected file {name} (retry #{earlier.pk}, new task {new_task}). "
                f"Re-importing them now creates duplicate bills."
            )
        return (
            f"These kickouts were already re-imported by {who} on {when} "
            f"(retry #{earlier.pk}, new task {new_task}). Re-importing them again creates "
            f"duplicate bills."
        )

    # What the duplicate rule says when the confirmation does not name the earlier import
    # (`given`: the one it names, or None), and to whom a repeat is left.
    def changed_since_message(self, given: int | None) -> str:
        return (
            "Another retry of this task was made since this form was opened. Read the "
            "warning again and confirm."
        )

    only_supervisors = " Only a supervisor can re-import them again."

    # -- cleaning --

    def clean_new_batch_code(self) -> str:
        return self.cleaned_data["new_batch_code"].strip()

    def clean_import_note(self) -> str:
        return self.cleaned_data["import_note"].strip()

    def clean_comment(self) -> str:
        return self.cleaned_data["comment"].strip()

    def clean(self) -> dict:
        data = super().clean()
        mode = batch_modes.BY_VALUE.get(data.get("batch_mode"))
        mode_rules = getattr(self, f"clean_{mode.slug}", None) if mode else None
        if mode_rules is not None:
            mode_rules(data)
        if data.get("comment") and not data.get("save_as_resolved"):
            self.add_error(
                "comment",
                "A comment explains why failed audits were resolved automatically, so it is "
                "only sent with Save as resolved ticked. Tick Save as resolved or clear the "
                "comment.",
            )
        self._clean_duplicate(data)
        return data

    def closing_first_refused(self) -> bool:
        """Whether "new batch" with Leave existing batches open unticked is refused."""
        return len(self.choices.own_open_batches) > 1

    def _api_user_name(self) -> str:
        return self.choices.api_user.full_name or "The API user"

    def clean_use_existing_batch(self, data: dict) -> None:
        if "existing_open_batch_id" not in data:
            return  # already has a type error
        batch_id = data.get("existing_open_batch_id")
        if batch_id is None:
            own = self.choices.own_open_batches
            if len(own) != 1:
                self.add_error(
                    "existing_open_batch_id",
                    f"{self._api_user_name()} has {_plural(len(own), 'open batch')}; without "
                    f"a chosen batch EnergyCAP needs exactly one. Pick an open batch from "
                    f"the list.",
                )
            else:
                self.target_batch = own[0]
            return
        batch = next((b for b in self.choices.open_batches if b.batch_id == batch_id), None)
        if batch is None:
            self.add_error(
                "existing_open_batch_id",
                f"Batch #{batch_id} is not an open batch in EnergyCAP. Pick an open batch "
                f"from the list.",
            )
            return
        if not batch.is_owned_by(self.choices.api_user.user_id) and not (
            self.choices.api_user.can_manage_bills
        ):
            self.add_error(
                "existing_open_batch_id",
                f"Batch {batch.batch_code} belongs to {batch.owner_name}. Without the Bills "
                f"and Batches Manage permission, {self._api_user_name()} may only use its own "
                f"open batches. Pick one of those.",
            )
            return
        self.target_batch = batch

    def clean_new_batch(self, data: dict) -> None:
        own = self.choices.own_open_batches
        if not data.get("leave_existing_batches_open") and len(own) > 1:
            self.add_error(
                "leave_existing_batches_open",
                f"{self._api_user_name()} has {len(own)} open batches. Unticked, EnergyCAP "
                f"closes the open batch first and fails when there is more than one: tick "
                f"Leave existing batches open.",
            )

    def clean_use_pending_batch(self, data: dict) -> None:
        if "pending_batch_id" not in data:
            return
        batch_id = data.get("pending_batch_id")
        if batch_id is None:
            self.add_error("pending_batch_id", "Choose the pending batch the bills go into.")
            return
        batch = next((b for b in self.choices.pending_batches if b.batch_id == batch_id), None)
        if batch is None:
            self.add_error(
                "pending_batch_id",
                f"Batch #{batch_id} is not a pending batch in EnergyCAP. Choose one from the list.",
            )
            return
        self.target_batch = batch

    def clean_smart_batch(self, data: dict) -> None:
        if "new_batch_code" not in data:
            return
        code = data.get("new_batch_code", "")
        if not code:
            self.add_error(
                "new_batch_code", "Smart batch needs a batch code: it picks the batch by it."
            )
            return
        try:
            path = self.resolve_smart_batch(code)
        except EnergyCapError as exc:
            self.add_error(
                "new_batch_code",
                f"EnergyCAP's batches with this code could not be looked up, so what smart "
                f"batch would do is unknown: {exc.message} Review again in a moment.",
            )
            return
        if path.error:
            self.add_error("new_batch_code", path.error)
            return
        self.smart_batch_path = path.sentence
        self.smart_path = path
        self.target_batch = path.target

    def smart_path_preview(self) -> str:
        """Which path smart batch takes for the code typed so far (for the form, live)."""
        source = self.data if self.is_bound else self.initial
        code = str(source.get("new_batch_code") or "").strip()
        if not code:
            return "Type a batch code to see what EnergyCAP will do with it."
        try:
            self.fields["new_batch_code"].clean(code)
        except ValidationError as error:
            return " ".join(error.messages)  # nothing worth asking EnergyCAP about
        try:
            path = self.resolve_smart_batch(code)
        except EnergyCapError:
            return SMART_LOOKUP_FAILED
        return path.error or path.sentence

    def resolve_smart_batch(self, code: str) -> SmartPath:
        """EnergyCAP's smart-batch decision for `code`, in the documented order."""
        same_code = [
            b for b in self.choices.find_by_code(code) if b.batch_code.lower() == code.lower()
        ]
        closed = next((b for b in same_code if b.is_closed), None)
        open_batch = next((b for b in same_code if b.is_open), None)
        pending = next((b for b in same_code if b.is_pending), None)
        if closed is not None:
            return SmartPath(
                f"Batch {code} is closed, so EnergyCAP will make a new batch named {code} plus "
                f"a GUID (as in new batch mode) and leave other batches open.",
                new_batch_each_time=True,
            )
        if open_batch is not None and open_batch.is_owned_by(self.choices.api_user.user_id):
            return SmartPath(
                f"Batch {code} is open and belongs to {self._api_user_name()}, so EnergyCAP "
                f"will add the bills to it.",
                open_batch,
            )
        if open_batch is not None and not self.choices.api_user.can_manage_bills:
            return SmartPath(
                "",
                error=(
                    f"Batch {code} is open and belongs to {open_batch.owner_name}. EnergyCAP "
                    f"would refuse it (as use existing batch) because the API user lacks the "
                    f"Bills and Batches Manage permission. Use another code."
                ),
            )
        if open_batch is not None:
            return SmartPath(
                f"Batch {code} is open and belongs to {open_batch.owner_name}; the API user "
                f"has Manage, so EnergyCAP will add the bills to it.",
                open_batch,
            )
        if pending is not None:
            return SmartPath(
                f"Batch {code} is pending, so EnergyCAP will add the bills to it and leave it "
                f"pending.",
                pending,
            )
        return SmartPath(
            f"No batch has the code {code}, so EnergyCAP will make a new open batch with it "
            f"and leave other batches open."
        )

    def _clean_duplicate(self, data: dict) -> None:
        earlier = self.earlier_retry
        if earlier is None:
            return
        if not self.may_repeat:
            raise ValidationError(
                self.duplicate_warning() + self.only_supervisors,
                code="duplicate_needs_supervisor",
            )
        if data.get("duplicate_of") != earlier.pk:
            self.add_error(
                "confirm_duplicate", self.changed_since_message(data.get("duplicate_of"))
            )
        elif not data.get("confirm_duplicate"):
            self.add_error(
                "confirm_duplicate",
                "Tick this box to confirm that you want to import these bills a second time.",
            )

    # -- the result --

    def payload(self) -> dict:
        """The exact JSON body for EnergyCAP: only the fields the chosen mode uses."""
        data = self.cleaned_data
        mode = batch_modes.BY_VALUE[data["batch_mode"]]
        body: dict = {"batchSettings": batch_modes.batch_settings(mode, data)}
        if data.get("import_note"):
            body["importNote"] = data["import_note"]
        if data.get("save_as_resolved"):
            body["saveAsResolved"] = True
            if data.get("comment"):
                body["comment"] = data["comment"]
        return body

    def batch_code(self) -> str:
        """The batch code the retry concerns, for the history's search."""
        if self.target_batch is not None:
            return self.target_batch.batch_code
        return self.cleaned_data.get("new_batch_code", "")

    def what_energycap_will_do(self) -> str:
        """The review's sentence: the chosen mode's `review`, filled in."""
        mode = batch_modes.BY_VALUE[self.cleaned_data["batch_mode"]]
        return mode.review.format(**self.review_values())

    def review_values(self) -> dict[str, str]:
        """What a mode's review sentence may name, from the cleaned form."""
        data = self.cleaned_data
        batch = self.target_batch
        return {
            "batch": f"{batch.batch_code} (#{batch.batch_id})" if batch else "",
            "code": data.get("new_batch_code") or "an automatic code",
            "closing": (
                "leave the other open batches open"
                if data.get("leave_existing_batches_open")
                else "close the API user's open batch first"
            ),
            "smart_path": self.smart_batch_path,
            "bills": self.bills_words,
        }

    # Which bills the review's sentence speaks of.
    bills_words = "the re-imported bills"


class BulkRetryForm(RetryForm):
    """The retry form for several imports at once: the same rules, checked once, plus the
    rules that only a set of imports breaks. Duplicates are confirmed per import
    (kickouts/bulk.py), so the single form's duplicate check is not used here."""

    def __init__(self, *args, import_count: int, **kwargs):
        self.import_count = import_count  # read by the single form's __init__
        super().__init__(*args, **kwargs)

    def closing_first_refused(self) -> bool:
        return super().closing_first_refused() or self.import_count > 1

    def clean_new_batch(self, data: dict) -> None:
        super().clean_new_batch(data)
        if self.import_count > 1 and not data.get("leave_existing_batches_open"):
            self.add_error(
                "leave_existing_batches_open",
                f"Unticked, EnergyCAP closes the API user's open batch before making the new "
                f"one, so each of the {self.import_count} imports would close the batch the "
                f"one before it made. Tick Leave existing batches open, or choose another "
                f"mode.",
            )

    def whole_set_sentence(self) -> str:
        """What happens to the batches for the whole set (the mode's `bulk_review`)."""
        mode = batch_modes.BY_VALUE[self.cleaned_data["batch_mode"]]
        count = self.import_count
        code = self.cleaned_data.get("new_batch_code") or "an automatic code"
        path = self.smart_path
        if path is None:
            smart_bulk = ""
        elif path.new_batch_each_time:
            smart_bulk = (
                f"batch {code} is closed, so each of the {count} makes a new batch named "
                f"{code} plus a GUID."
            )
        elif path.target is not None:
            smart_bulk = f"all {count} go into batch {path.target.batch_code}."
        elif count == 1:
            smart_bulk = f"it creates batch {code}."
        elif count == 2:
            smart_bulk = f"the first creates batch {code}, the other is added to it."
        else:
            smart_bulk = f"the first creates batch {code}, the other {count - 1} are added to it."
        return mode.bulk_review.format(
            **self.review_values(), count=count, rest=count - 1, smart_bulk=smart_bulk
        )


def _earlier_words(earlier: RetryAttempt) -> tuple[str, str, str]:
    """When, by whom and with which new task an earlier import was made, in words."""
    when = date_filter(timezone.localtime(earlier.requested_at), "Y-m-d H:i T")
    who = earlier.requested_by.get_full_name() or earlier.requested_by.get_username()
    new_task = earlier.new_task_guid or "no task GUID recorded (outcome unknown)"
    return when, who, new_task


def _batch_label(batch: Batch) -> str:
    count = f", {batch.bill_count} bills" if batch.bill_count is not None else ""
    return f"{batch.batch_code} (#{batch.batch_id}) — {batch.owner_name}{count}"


ADVANCED_FORMAT = "EnergyCAP's Advanced format"
FILE_EXTENSIONS = ",".join(f".{extension}" for extension in uploads.EXTENSIONS)


class CorrectedFileForm(RetryForm):
    """A corrected file for `POST /api/v3/import/bill`: the file, its import profile, and the
    retry form's batch settings and notes with every one of their rules (inherited).

    The file's checks are kickouts/uploads.py's; each problem becomes an error on the file
    field, beside the kept choices. A file that passed its checks is stored at the review
    (kickouts/corrected_files.py) and given back as `kept`, so the next steps of the same form
    (its one-time token) need no new upload. The duplicate rule is the retry form's, about the
    same file (same sha256) already imported for one of the sources: `find_same_file(sha256)`
    finds that earlier import once the file is known.
    """

    profile = forms.ChoiceField(
        label="Import profile",
        required=False,
        help_text="The profile that maps the file's columns; without one, EnergyCAP reads "
        "the Advanced format's column names.",
    )
    confirm_rows = forms.BooleanField(label="Import it whole anyway", required=False)
    # Last in the form's HTML: the upload limit stops reading the body in the file, and the
    # fields before it are kept (kickouts/uploads.py, `accepts_corrected_file`).
    file = forms.FileField(
        label="Corrected file",
        required=False,
        allow_empty_file=True,  # said by the checks, in their words
        widget=forms.FileInput(attrs={"accept": FILE_EXTENSIONS}),
        help_text=(
            "CSV, TXT, DAT, XLSX or ZIP, as EnergyCAP imports them; only the first sheet of a "
            "workbook is read."
        ),
    )

    only_supervisors = " Only a supervisor can import it again."
    bills_words = "the file's bills"

    def __init__(
        self,
        *args,
        profiles: list[ImportProfile] | EnergyCapError,
        kept=None,
        refusal: uploads.UploadRefusal | None = None,
        find_same_file: Callable[[str], RetryAttempt | None] = lambda sha256: None,
        latest_imports: dict[str, RetryAttempt | None] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        # Each source's latest import when the form was built, before it was checked: the
        # import's place in each source's duplicate sequence follows it.
        self.latest_imports = latest_imports or {}
        self.profiles = profiles
        self.kept = kept
        self.refusal = refusal
        self.find_same_file = find_same_file
        # What the checks found: the upload of this request, or the kept one's record.
        self.checked: uploads.CheckedFile | None = kept.checked() if kept is not None else None
        self.uploaded: uploads.CheckedFile | None = None  # a new upload that passed its checks
        listed = profiles if isinstance(profiles, list) else []
        field = self.fields["profile"]
        field.choices = [("", ADVANCED_FORMAT)] + [(p.code, p.label) for p in listed]
        if isinstance(profiles, EnergyCapError):
            field.help_text = (
                f"EnergyCAP's import profiles could not be loaded ({profiles.message}), so the "
                "file can only be read in the Advanced format."
            )
            field.error_messages["invalid_choice"] = (
                "EnergyCAP's import profiles could not be loaded, so profile %(value)s cannot "
                "be checked: choose the Advanced format, or review again in a moment."
            )
        else:
            field.error_messages["invalid_choice"] = (
                "%(value)s is not one of EnergyCAP's import profiles; choose one from the list."
            )

    def clean_file(self):
        upload = self.cleaned_data.get("file")
        if self.refusal is not None:
            raise ValidationError(self.refusal.message, code="too_large")
        if upload:
            checked = uploads.check_file(upload)
            if not checked.ok:
                raise ValidationError([p.message for p in checked.problems], code="file_problem")
            self.checked = self.uploaded = checked
        if self.checked is None:
            raise ValidationError(
                "Choose the corrected file to import (CSV, TXT, DAT, XLSX or ZIP).",
                code="required",
            )
        # The same file imported before; else an import of a source whose answer was lost:
        # EnergyCAP may have imported those bills, and a file holding them would import them
        # twice. Either needs a supervisor, who confirms (as a retry after either would).
        self.earlier_retry = self.find_same_file(self.checked.sha256) or self.unknown_import()
        if self.earlier_retry is not None:
            self.fields["confirm_duplicate"].help_text = self.duplicate_warning()
        return upload

    def clean(self) -> dict:
        data = super().clean()
        checked = self.checked
        if (
            checked is not None
            and "file" not in self.errors
            and checked.needs_row_confirmation
            and not data.get("confirm_rows")
        ):
            self.add_error("confirm_rows", checked.row_confirmation_message)
        return data

    def unknown_import(self) -> RetryAttempt | None:
        """The first source's latest import whose outcome is unknown, if any."""
        return next(
            (
                latest
                for latest in self.latest_imports.values()
                if latest is not None and latest.outcome == Outcome.UNKNOWN
            ),
            None,
        )

    def duplicate_warning(self) -> str:
        earlier = self.earlier_retry
        if earlier is None or self.checked is None:
            return ""
        when, who, new_task = _earlier_words(earlier)
        if earlier.outcome == Outcome.UNKNOWN and not (
            earlier.is_corrected_file and earlier.corrected_file.sha256 == self.checked.sha256
        ):
            return (
                f"{earlier.sources_label} was imported again by {who} on {when} (retry "
                f"#{earlier.pk}) and EnergyCAP's answer was lost: it may have imported those "
                f"bills. Until a supervisor settles it on that retry's page, importing a file "
                f"that holds them may import them twice."
            )
        return (
            f"This file ({self.checked.name}, sha256 {self.checked.sha256[:12]}…) was already "
            f"imported for {earlier.sources_label} by {who} on {when} (retry #{earlier.pk}, "
            f"new task {new_task}). Importing it again imports its bills twice."
        )

    def changed_since_message(self, given: int | None) -> str:
        if given is None:  # the file was not known when the form was shown
            return "Tick this box to confirm that you want to import this file a second time."
        return (
            "Another import of this file was made since this form was shown. Read the warning "
            "again and confirm."
        )

    @property
    def profile_label(self) -> str:
        code = (self.cleaned_data if hasattr(self, "cleaned_data") else {}).get("profile", "")
        return dict(self.fields["profile"].choices).get(code, code) or ADVANCED_FORMAT

    def payload(self) -> dict:
        """The exact JSON body, with `data` shown as "<base64 of N bytes>": the bytes are the
        stored file's, added when it is sent (kickouts/corrected_files.py)."""
        checked = self.checked
        head: dict = {"fileName": checked.name, "data": f"<base64 of {checked.size} bytes>"}
        if self.cleaned_data.get("profile"):
            head["profileCode"] = self.cleaned_data["profile"]
        return {**head, **super().payload()}
