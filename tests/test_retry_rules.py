"""Every batch-mode rule is checked on the server before anything is sent."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from kickouts.sandbox.state import (
    API_USER_KICKOUT_TASK_GUID,
    COMPLETED_TASK_GUID,
    EXPORT_TASK_GUID,
    RUNNING_TASK_GUID,
)

from .retry_helpers import form_errors, post_retry, preview_smart_path

TASK = API_USER_KICKOUT_TASK_GUID
LONG = "X" * 256

# (story, form fields, the field the message lands on, a fragment of the message)
INVALID = [
    ("a tampered mode", {"batch_mode": "delete everything"}, "batch_mode", "five batch modes"),
    ("no mode", {}, "batch_mode", "Choose a batch mode"),
    (
        "existing: a batch id that is not a number",
        {"batch_mode": "use existing batch", "existing_open_batch_id": "12a"},
        "existing_open_batch_id",
        "whole number",
    ),
    (
        "existing: batch id zero",
        {"batch_mode": "use existing batch", "existing_open_batch_id": "0"},
        "existing_open_batch_id",
        "greater than or equal to 1",
    ),
    (
        "existing: batch id past int32",
        {"batch_mode": "use existing batch", "existing_open_batch_id": "2147483648"},
        "existing_open_batch_id",
        "less than or equal to 2147483647",
    ),
    (
        "existing: a pending batch is not open",
        {"batch_mode": "use existing batch", "existing_open_batch_id": "906"},
        "existing_open_batch_id",
        "not an open batch",
    ),
    (
        "existing: another user's open batch without Manage",
        {"batch_mode": "use existing batch", "existing_open_batch_id": "903"},
        "existing_open_batch_id",
        "belongs to Maria Okafor",
    ),
    (
        "existing: no batch while the API user has two open",
        {"batch_mode": "use existing batch"},
        "existing_open_batch_id",
        "has 2 open batches",
    ),
    (
        "new batch: two open batches and not leaving them open",
        {"batch_mode": "new batch"},
        "leave_existing_batches_open",
        "tick Leave existing batches open",
    ),
    (
        "new batch: a code over 255 characters",
        {"batch_mode": "new batch", "leave_existing_batches_open": True, "new_batch_code": LONG},
        "new_batch_code",
        "at most 255 characters",
    ),
    (
        "self-contained: a code over 255 characters",
        {"batch_mode": "new self-contained batch", "new_batch_code": LONG},
        "new_batch_code",
        "at most 255 characters",
    ),
    (
        "pending: no batch chosen",
        {"batch_mode": "use pending batch"},
        "pending_batch_id",
        "Choose the pending batch",
    ),
    (
        "pending: an open batch is not pending",
        {"batch_mode": "use pending batch", "pending_batch_id": "901"},
        "pending_batch_id",
        "not a pending batch",
    ),
    (
        "smart: a whitespace-only code is missing",
        {"batch_mode": "smart batch", "new_batch_code": "   "},
        "new_batch_code",
        "needs a batch code",
    ),
    (
        "smart: a code over 255 characters",
        {"batch_mode": "smart batch", "new_batch_code": LONG},
        "new_batch_code",
        "at most 255 characters",
    ),
    (
        "smart: another user's open batch without Manage",
        {"batch_mode": "smart batch", "new_batch_code": "GAS-NOV"},
        "new_batch_code",
        "belongs to Maria Okafor",
    ),
    (
        "a comment without save as resolved",
        {"batch_mode": "new self-contained batch", "comment": "Audits reviewed"},
        "comment",
        "only sent with Save as resolved",
    ),
    (
        "an import note over the stated maximum",
        {"batch_mode": "new self-contained batch", "import_note": "n" * 1001},
        "import_note",
        "at most 1000 characters",
    ),
    (
        "a control character in a batch code",
        {"batch_mode": "smart batch", "new_batch_code": "ELEC\x07NOV"},
        "new_batch_code",
        "control character (U+0007)",
    ),
    (
        "a control character in a comment",
        {"batch_mode": "new self-contained batch", "save_as_resolved": True, "comment": "a\x1bb"},
        "comment",
        "control character (U+001B)",
    ),
]


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_batch_settings_are_refused_with_the_message_on_their_field(
    clerk_client, sandbox, fields, field, fragment
):
    """The message lands on the field it concerns and nothing reaches EnergyCAP."""
    response = post_retry(clerk_client, TASK, **fields)
    assert response.status_code == 200
    errors = form_errors(response)
    assert any(fragment in message for message in errors.get(field, [])), errors
    assert sandbox.count("kickout_post") == 0


@pytest.mark.parametrize(("fields", "field", "fragment"), [c[1:] for c in INVALID[:8]])
def test_a_refused_form_keeps_every_entered_value(clerk_client, fields, field, fragment):
    """Entered values come back in the re-rendered form."""
    response = post_retry(clerk_client, TASK, import_note="Keep me", **fields)
    assert "Keep me</textarea>" in response.content.decode()


def test_the_even_whitespace_only_smart_code_is_not_sent_in_any_action(clerk_client, sandbox):
    """Even the final 'send' step validates again and sends nothing."""
    response = post_retry(clerk_client, TASK, action="send", batch_mode="smart batch")
    assert "needs a batch code" in str(form_errors(response))
    assert sandbox.count("kickout_post") == 0


def test_the_open_batch_limit_message_says_how_many_and_offers_to_pick(clerk_client):
    """With no batch chosen, the message counts the open batches and says to pick one."""
    response = post_retry(clerk_client, TASK, batch_mode="use existing batch")
    (message,) = form_errors(response)["existing_open_batch_id"]
    assert "API Import Service has 2 open batches" in message
    assert "Pick an open batch" in message


def test_smart_batch_on_another_users_batch_is_allowed_with_manage(clerk_client, sandbox):
    """With Bills and Batches Manage, another user's open batch is fine."""
    sandbox.set_me(manage=True)
    response = post_retry(clerk_client, TASK, batch_mode="smart batch", new_batch_code="GAS-NOV")
    assert response.context.get("confirming"), form_errors(response)
    assert "belongs to Maria Okafor; the API user has Manage" in response.content.decode()


@pytest.mark.parametrize(
    ("code", "sentence"),
    [
        ("ELEC-OCT", "Batch ELEC-OCT is closed, so EnergyCAP will make a new batch named ELEC-OCT"),
        ("ELEC-NOV", "Batch ELEC-NOV is open and belongs to API Import Service"),
        ("AUDIT-HOLD", "Batch AUDIT-HOLD is pending, so EnergyCAP will add the bills to it"),
        ("BRAND-NEW-1", "No batch has the code BRAND-NEW-1, so EnergyCAP will make a new"),
    ],
)
def test_smart_batch_tells_in_words_which_path_energycap_takes(clerk_client, code, sentence):
    """Closed, own open, pending, none: each path is told before sending."""
    response = post_retry(clerk_client, TASK, batch_mode="smart batch", new_batch_code=code)
    assert sentence in response.content.decode()


def test_the_smart_path_preview_answers_while_typing(clerk_client):
    """The htmx preview names the path for the code typed so far."""
    response = preview_smart_path(clerk_client, "AUDIT-HOLD")
    body = response.content.decode()
    assert body.strip().startswith('<p id="smart-path"')
    assert "AUDIT-HOLD is pending" in body


def test_the_smart_path_preview_asks_only_for_batches_with_that_code(clerk_client, sandbox):
    """A GET of its own: no task, no list of open batches, nothing sent."""
    before = {kind: sandbox.count(kind) for kind in ("task_get", "batch_list")}
    response = preview_smart_path(clerk_client, "ELEC-OCT")
    assert response.status_code == 200
    assert "Batch ELEC-OCT is closed" in response.content.decode()
    assert sandbox.count("task_get") == before["task_get"]
    assert sandbox.count("batch_list") == before["batch_list"] + 1
    assert sandbox.count("kickout_post") == 0


def test_the_smart_path_preview_is_for_those_who_may_retry(outsider_client, sandbox):
    """A user without a role gets a 403 and EnergyCAP is not asked."""
    before = sandbox.count("batch_list")
    assert preview_smart_path(outsider_client, "ELEC-OCT").status_code == 403
    assert sandbox.count("batch_list") == before


def test_choosing_a_mode_with_htmx_swaps_in_only_its_fields(clerk_client, sandbox):
    """The mode-fields fragment holds just the chosen mode's fields."""
    response = post_retry(
        clerk_client, TASK, action="choose", htmx=True, batch_mode="use pending batch"
    )
    body = response.content.decode()
    assert body.strip().startswith('<div id="mode-fields"')
    assert 'name="pending_batch_id"' in body
    assert 'name="new_batch_code"' not in body
    assert sandbox.count("kickout_post") == 0


def test_without_javascript_the_form_says_which_fields_the_mode_ignores(clerk_client):
    """Filled fields the chosen mode ignores are named and not sent."""
    response = post_retry(
        clerk_client,
        TASK,
        batch_mode="use pending batch",
        pending_batch_id="907",
        new_batch_code="IGNORED-CODE",
    )
    body = response.content.decode()
    assert "ignores New batch code" in body
    assert response.context["payload"] == {
        "batchSettings": {"batchMode": "use pending batch", "pendingBatchId": 907}
    }


def test_the_review_step_shows_source_messages_sentence_and_exact_body(clerk_client, sandbox):
    """The confirmation lists the source task, its kickouts, what happens and the JSON."""
    response = post_retry(
        clerk_client,
        TASK,
        batch_mode="use pending batch",
        pending_batch_id="907",
        import_note="  Fixed the account alias  ",
    )
    body = response.content.decode()
    assert "Check before sending" in body
    assert API_USER_KICKOUT_TASK_GUID in body
    assert "Vendor code does not match account" in body
    assert "add the re-imported bills to the pending batch ELEC-PENDING (#907)" in body
    payload = response.context["payload"]
    assert payload == {
        "batchSettings": {"batchMode": "use pending batch", "pendingBatchId": 907},
        "importNote": "Fixed the account alias",
    }
    assert json.dumps(payload, indent=2).replace('"', "&quot;") in body
    assert sandbox.count("kickout_post") == 0


@pytest.mark.parametrize(
    ("guid", "reason"),
    [
        (COMPLETED_TASK_GUID, "only re-imports the kickouts of an import"),
        (RUNNING_TASK_GUID, "still running"),
        (EXPORT_TASK_GUID, "only bill imports have kickouts"),
    ],
)
def test_a_forged_post_for_a_task_without_kickouts_is_refused_with_the_reason(
    clerk_client, sandbox, guid, reason
):
    """No form for other statuses or types, and a forged POST sends nothing."""
    page = clerk_client.get(reverse("task_detail", args=[guid]))
    assert 'name="batch_mode"' not in page.content.decode()
    response = post_retry(clerk_client, guid, action="send", batch_mode="new self-contained batch")
    assert response.status_code == 409
    assert reason in response.content.decode()
    assert sandbox.count("kickout_post") == 0


def test_a_user_without_a_role_sees_why_they_cannot_retry(outsider_client, sandbox):
    """The task page explains; a POST is forbidden and sends nothing."""
    page = outsider_client.get(reverse("task_detail", args=[TASK]))
    assert "needs the AP staff or Supervisors role" in page.content.decode()
    response = post_retry(outsider_client, TASK, action="send", batch_mode="smart batch")
    assert response.status_code == 403
    assert sandbox.count("kickout_post") == 0


def test_changing_the_settings_from_the_review_keeps_them_exactly(clerk_client, sandbox):
    """Back from the review, the reviewed values return, unticked boxes unticked."""
    review = post_retry(clerk_client, TASK, batch_mode="smart batch", new_batch_code="AUDIT-HOLD")
    hidden = {
        name: str(value if value is not None else "")
        for name, value in review.context["form"].cleaned_data.items()
    }
    response = clerk_client.post(reverse("retry_form", args=[TASK]), {**hidden, "action": "edit"})
    body = response.content.decode()
    assert 'value="AUDIT-HOLD"' in body
    (checkbox,) = re.findall(r'<input type="checkbox" name="save_as_resolved"[^>]*>', body)
    assert "checked" not in checkbox
    assert not response.context.get("confirming")
    assert sandbox.count("kickout_post") == 0
