"""Every step of the retry form survives EnergyCAP failing, and odd parameters are ignored."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from kickouts.models import Outcome
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID

from .factories import make_retry
from .retry_helpers import form_errors, post_retry, preview_smart_path
from .test_faults import text_of

TASK = API_USER_KICKOUT_TASK_GUID
SMART = "smart batch"
# The form's own batch list answers (a bare hang only delays it); the lookup by code fails.
LOOKUP_FAILS = ({"hang": 0.01}, {"status": 500})


@pytest.mark.parametrize("action", ["review", "edit", "send"])
def test_a_failed_smart_batch_lookup_is_a_message_beside_the_code(action, clerk_client, sandbox):
    """Review, edit and send: 200, the error on the code field, the code kept, nothing sent."""
    sandbox.fault("batch_list", *LOOKUP_FAILS)
    response = post_retry(
        clerk_client, TASK, action=action, batch_mode=SMART, new_batch_code="GAS-DEC"
    )
    assert response.status_code == 200
    assert "could not be looked up" in " ".join(form_errors(response)["new_batch_code"])
    assert 'value="GAS-DEC"' in response.content.decode()
    assert sandbox.count("kickout_post") == 0


def test_a_failed_smart_batch_lookup_while_choosing_the_mode_says_so(clerk_client, sandbox):
    """Choosing the mode: a sentence, not a 500."""
    sandbox.fault("batch_list", *LOOKUP_FAILS)
    response = post_retry(
        clerk_client, TASK, action="choose", htmx=True, batch_mode=SMART, new_batch_code="GAS-DEC"
    )
    assert response.status_code == 200
    assert "could not be looked up just now" in text_of(response)


def test_a_failed_smart_batch_lookup_in_the_live_preview_says_so(clerk_client, sandbox):
    """The live preview asks only for batches with the code; when that fails, a sentence."""
    sandbox.fault("batch_list", {"status": 500})
    response = preview_smart_path(clerk_client, "GAS-DEC")
    assert response.status_code == 200
    assert "could not be looked up just now" in text_of(response)


def test_an_overlong_code_in_the_preview_is_not_looked_up(clerk_client, sandbox):
    """The preview checks the code's length before asking EnergyCAP about it."""
    response = preview_smart_path(clerk_client, "X" * 300)
    assert response.status_code == 200
    assert "at most 255 characters" in text_of(response)
    assert not [e for e in sandbox.log("batch_list") if "X" * 300 in e["query"].get("filter", "")]


@pytest.mark.parametrize("again", ["²", "١", "１", "9" * 40, "-1", "1.0", " 1"])
def test_a_try_again_link_that_is_not_a_retry_id_is_ignored(again, clerk, clerk_client):
    """?again= with unicode digits, a huge number or a sign: the plain form, never a 500."""
    make_retry(clerk, source_task_guid=TASK, outcome=Outcome.REJECTED, import_note="Earlier")
    response = clerk_client.get(reverse("task_detail", args=[TASK]), {"again": again})
    assert response.status_code == 200
    assert response.context["form"].initial.get("import_note", "") == ""


def test_a_try_again_link_with_a_retry_id_fills_the_form(clerk, clerk_client):
    """The real link still works: the earlier retry's settings are filled in."""
    earlier = make_retry(clerk, source_task_guid=TASK, outcome=Outcome.REJECTED, import_note="x")
    response = clerk_client.get(reverse("task_detail", args=[TASK]), {"again": str(earlier.pk)})
    assert response.context["form"].initial["import_note"] == ""  # payload had no note
    assert response.context["form"].initial["batch_mode"] == "new self-contained batch"


@pytest.mark.parametrize("value", ["١٢", "１２", "²", "12" * 10])
def test_a_batch_id_in_other_digits_is_refused_on_its_field(value, clerk_client, sandbox):
    """A pending batch id must be ASCII digits: "١٢" is not read as 12."""
    response = post_retry(
        clerk_client, TASK, batch_mode="use pending batch", pending_batch_id=value
    )
    assert response.status_code == 200
    assert form_errors(response)["pending_batch_id"] == ["Choose a pending batch from the list."]
    assert sandbox.count("kickout_post") == 0


@pytest.mark.parametrize(
    "params",
    [
        {"failures": "9" * 30, "started": "1"},
        {"failures": "٣"},
        {"started": "nan"},
        {"started": "1e999"},
        {"started": "١٢٣"},
    ],
)
def test_the_status_panel_ignores_odd_polling_parameters(params, clerk, clerk_client):
    """A forged polling URL: the panel answers at once, as for a fresh watch."""
    attempt = make_retry(clerk, new_task_guid=TASK)
    started = time.monotonic()
    response = clerk_client.get(
        reverse("status_panel", args=[attempt.pk]), params, HTTP_HX_REQUEST="true"
    )
    assert response.status_code in (200, 286)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("page", ["٣", "9" * 30, "-4"])
def test_the_task_list_asks_for_page_one_when_the_page_is_not_a_number(page, clerk_client, sandbox):
    """Odd page numbers are not passed on to EnergyCAP."""
    response = clerk_client.get(reverse("task_list"), {"page": page})
    assert response.status_code == 200
    assert sandbox.log("task_list")[-1]["query"]["pageNumber"] == "1"


@pytest.mark.parametrize("value", ["١-١", "9" * 30, "²"])
def test_history_links_and_user_choices_in_other_digits_are_refused(value, supervisor_client):
    """Cursors and user ids are ASCII digits: a clear form error, never a 500."""
    for name in ("before", "user"):
        response = supervisor_client.get(reverse("history"), {name: value})
        assert response.status_code == 200
        assert response.context["form"].errors
