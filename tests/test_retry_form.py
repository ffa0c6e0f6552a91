"""The RetryForm on its own: what each batch mode uses, checks, sends and says."""

from __future__ import annotations

import uuid

import pytest

from kickouts import batch_modes
from kickouts.forms import BatchChoices, RetryForm
from kickouts.models import RetryAttempt
from kickouts.payloads import Batch, CurrentUser, UserRef

API_USER = CurrentUser(
    user_id=1,
    user_code="api",
    full_name="API Import Service",
    can_view_bills=True,
    can_create_bills=True,
    can_manage_bills=False,
)
MARIA = UserRef(user_id=2, user_code="maria", full_name="Maria Okafor")
API_REF = UserRef(user_id=1, user_code="api", full_name="API Import Service")


def batch(batch_id: int, code: str, status: str, owner: UserRef = API_REF) -> Batch:
    return Batch(
        batch_id=batch_id,
        batch_code=code,
        is_open=status == "Open",
        batch_status=status,
        bill_count=3,
        note="",
        created_by=owner,
        start_date=None,
    )


OPEN_OWN = batch(901, "ELEC-NOV", "Open")
OPEN_MARIA = batch(903, "GAS-NOV", "Open", MARIA)
PENDING = batch(907, "ELEC-PENDING", "Pending")
CLOSED = batch(910, "ELEC-OCT", "Closed")
ALL_BATCHES = [OPEN_OWN, OPEN_MARIA, PENDING, CLOSED]


def choices(batches=(OPEN_OWN, OPEN_MARIA, PENDING)) -> BatchChoices:
    """EnergyCAP's open and pending batches, and its lookup by code over every batch."""
    return BatchChoices(
        api_user=API_USER,
        batches=list(batches),
        find_by_code=lambda code: [b for b in ALL_BATCHES if b.batch_code == code],
    )


def form(batches=(OPEN_OWN, OPEN_MARIA, PENDING), **fields) -> RetryForm:
    data = {"form_token": str(uuid.uuid4()), **fields}
    return RetryForm(data, choices=choices(batches))


# (mode, every mode-specific field filled in, the batchSettings the mode sends)
EVERY_FIELD = {
    "existing_open_batch_id": "901",
    "leave_existing_batches_open": "on",
    "new_batch_code": "ELEC-NOV",
    "pending_batch_id": "907",
}
SENT = {
    "use existing batch": {"existingOpenBatchId": 901},
    "new batch": {"leaveExistingBatchesOpen": True, "newBatchCode": "ELEC-NOV"},
    "new self-contained batch": {"newBatchCode": "ELEC-NOV"},
    "use pending batch": {"pendingBatchId": 907},
    "smart batch": {"newBatchCode": "ELEC-NOV"},
}


@pytest.mark.parametrize(("mode", "sent"), SENT.items())
def test_each_mode_sends_only_its_own_fields_by_their_json_names(mode, sent):
    """Every field filled in, the body still holds only what the mode uses."""
    retry = form(batch_mode=mode, **EVERY_FIELD)
    assert retry.is_valid(), retry.errors
    assert retry.payload() == {"batchSettings": {"batchMode": mode, **sent}}
    ignored = {f.name for f in batch_modes.MODE_FIELDS} - set(
        batch_modes.BY_VALUE[mode].field_names
    )
    assert retry.ignored_fields() == [retry.fields[n].label for n in EVERY_FIELD if n in ignored]


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        (
            {"batch_mode": "use existing batch", "existing_open_batch_id": "901"},
            "EnergyCAP will add the re-imported bills to the open batch ELEC-NOV (#901) and "
            "leave it open.",
        ),
        (
            {"batch_mode": "new batch", "leave_existing_batches_open": "on"},
            "EnergyCAP will make a new open batch named an automatic code and leave the other "
            "open batches open.",
        ),
        (
            {"batch_mode": "new self-contained batch", "new_batch_code": "KO-1"},
            "EnergyCAP will make a new batch named KO-1, add the re-imported bills and close "
            "it; other open batches stay open.",
        ),
        (
            {"batch_mode": "use pending batch", "pending_batch_id": "907"},
            "EnergyCAP will add the re-imported bills to the pending batch ELEC-PENDING (#907) "
            "and leave it pending.",
        ),
        (
            {"batch_mode": "smart batch", "new_batch_code": "ELEC-OCT"},
            "Batch ELEC-OCT is closed, so EnergyCAP will make a new batch named ELEC-OCT",
        ),
    ],
)
def test_the_review_says_in_one_sentence_what_each_mode_will_do(fields, sentence):
    """Each mode's review sentence names the batch, the code and what is closed."""
    retry = form(**fields)
    assert retry.is_valid(), retry.errors
    assert retry.what_energycap_will_do().startswith(sentence)


def test_new_batch_closing_the_only_open_batch_says_so():
    """Unticked, with one open batch of its own, new batch closes it first."""
    retry = form(batches=[OPEN_OWN, PENDING], batch_mode="new batch")
    assert retry.is_valid(), retry.errors
    assert retry.what_energycap_will_do().endswith("close the API user's open batch first.")


def test_pending_mode_requires_a_pending_batch():
    """Without a chosen pending batch the message lands on that field."""
    retry = form(batch_mode="use pending batch")
    assert not retry.is_valid()
    assert retry.errors["pending_batch_id"] == ["Choose the pending batch the bills go into."]


def test_use_existing_batch_without_an_id_takes_the_only_open_batch_of_the_api_user():
    """One own open batch: no id is sent, and the review names that batch."""
    retry = form(batches=[OPEN_OWN, OPEN_MARIA], batch_mode="use existing batch")
    assert retry.is_valid(), retry.errors
    assert retry.payload() == {"batchSettings": {"batchMode": "use existing batch"}}
    assert retry.batch_code() == "ELEC-NOV"


def test_smart_batch_refuses_another_users_open_batch_without_manage():
    """The smart-batch rule lands on the code it concerns."""
    retry = form(batch_mode="smart batch", new_batch_code="GAS-NOV")
    assert not retry.is_valid()
    assert "belongs to Maria Okafor" in retry.errors["new_batch_code"][0]


def test_only_smart_batch_previews_its_code_while_typing():
    """The live preview belongs to smart batch's code; other modes have none."""
    assert form(batch_mode="smart batch").previewed_field() == "new_batch_code"
    for mode in SENT.keys() - {"smart batch"}:
        assert form(batch_mode=mode).previewed_field() == ""


def test_without_a_chosen_mode_every_mode_field_is_shown_with_who_uses_it():
    """No JavaScript and no mode yet: all four fields, each naming its modes."""
    retry = form()
    assert [f.name for f in retry.mode_fields()] == list(EVERY_FIELD)
    assert retry.used_by("new_batch_code") == [
        "new batch",
        "new self-contained batch",
        "smart batch",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(("mode", "sent"), SENT.items())
def test_try_again_with_these_settings_sends_the_same_body(clerk, mode, sent):
    """A recorded body turned back into form values gives that body again."""
    body = {
        "batchSettings": {"batchMode": mode, **sent},
        "importNote": "Fixed the alias",
        "saveAsResolved": True,
        "comment": "Audits reviewed",
    }
    earlier = RetryAttempt(requested_by=clerk, batch_mode=mode, payload=body)
    values = {k: v for k, v in earlier.form_initial().items() if v not in (None, False)}
    retry = form(**{k: "on" if v is True else str(v) for k, v in values.items()})
    assert retry.is_valid(), retry.errors
    assert retry.payload() == body


def test_the_history_describes_sent_settings_in_words():
    """The retry page's words come from the same table as the body."""
    words = batch_modes.settings_in_words(
        "new batch", {"batchMode": "new batch", "leaveExistingBatchesOpen": False}
    )
    assert words == ["the API user's open batch closed first", "batch code chosen by EnergyCAP"]
    assert batch_modes.settings_in_words(
        "use pending batch", {"batchMode": "use pending batch", "pendingBatchId": 907}
    ) == ["into pending batch #907"]


def test_every_field_the_table_names_is_a_field_of_the_form():
    """The table and the form cannot drift apart."""
    for field in batch_modes.MODE_FIELDS:
        assert field.name in RetryForm.base_fields
