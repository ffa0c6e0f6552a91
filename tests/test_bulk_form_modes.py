"""The bulk form is the retry form: only the chosen mode's fields (the single form's own partials
and htmx), kept after a validation error, and no preselected choice EnergyCAP would refuse."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID

from . import test_browser
from .browser_helpers import choose_mode, open_bill_imports, sign_in
from .retry_helpers import post_retry
from .test_bulk import kickout_imports, post_bulk

HTMX = {"HTTP_HX_REQUEST": "true"}
FIELD_IDS = re.compile(
    r'id="id_(existing_open_batch_id|leave_existing_batches_open|'
    r'new_batch_code|pending_batch_id)"'
)


def field_ids(html: str) -> list[str]:
    return FIELD_IDS.findall(html)


def choose(client, guids, **fields):
    """A radio's htmx request on the bulk page: the whole form, with action=choose."""
    data = {"task": guids, "action": "choose", **fields}
    return client.post(reverse("bulk_form"), data, **HTMX)


def test_choosing_a_mode_on_the_bulk_form_swaps_in_only_its_fields(clerk_client, sandbox):
    """The fragment holds the mode's fields, and only the batches are asked for, not the
    selected imports."""
    guids = kickout_imports(sandbox, 2)
    since = sandbox.log_page()["next"]
    response = choose(clerk_client, guids, batch_mode="smart batch", new_batch_code="NOV")
    body = response.content.decode()
    assert body.strip().startswith('<div id="mode-fields"')
    assert field_ids(body) == ["new_batch_code"]
    assert 'value="NOV"' in body
    assert {entry["endpoint"] for entry in sandbox.log(since=since)} <= {"batch_list", "me"}
    pending = choose(clerk_client, guids, batch_mode="use pending batch").content.decode()
    assert field_ids(pending) == ["pending_batch_id"]


def test_the_bulk_page_uses_the_single_forms_radios_and_fields(clerk_client, sandbox):
    """The radios post `choose` to the bulk form and swap #mode-fields, as on a task page."""
    guids = kickout_imports(sandbox, 2)
    page = clerk_client.post(reverse("bulk_form"), {"task": guids}).content.decode()
    radio = re.search(r'<input type="radio"\s+name="batch_mode"\s+value="smart batch"[^>]*>', page)
    assert radio is not None
    assert f'hx-post="{reverse("bulk_form")}"' in radio[0]
    assert 'hx-target="#mode-fields"' in radio[0] and 'hx-include="closest form"' in radio[0]
    assert '<div id="mode-fields" class="mode-fields">' in page
    assert "Show only this mode's fields" in page  # without JavaScript


def test_after_a_validation_error_choosing_smart_batch_shows_its_code_field(clerk_client, sandbox):
    """The issue's story: an error, then smart batch: its code field is there, and the review
    passes with the code typed into it."""
    guids = kickout_imports(sandbox, 2)
    failed = post_bulk(clerk_client, guids, batch_mode="use pending batch")
    assert "Choose the pending batch the bills go into." in failed.content.decode()
    assert field_ids(failed.content.decode()) == ["pending_batch_id"]
    fields = choose(clerk_client, guids, batch_mode="smart batch").content.decode()
    assert field_ids(fields) == ["new_batch_code"]
    assert "errorlist" not in fields  # a mode just chosen shows no error yet
    review = post_bulk(clerk_client, guids, batch_mode="smart batch", new_batch_code="BULK-DEC")
    assert review.context["whole_set"].startswith("smart batch with code BULK-DEC")


def test_without_javascript_choosing_a_mode_keeps_what_was_typed(clerk_client, sandbox):
    """The no-JS button: the whole page again, the chosen mode's fields, the values kept."""
    guids = kickout_imports(sandbox, 2)
    page = clerk_client.post(
        reverse("bulk_form"),
        {
            "task": guids,
            "action": "choose",
            "batch_mode": "smart batch",
            "new_batch_code": "KEEP-ME",
            "import_note": "December fix",
        },
    ).content.decode()
    assert "Retry 2 selected imports" in page
    assert field_ids(page) == ["new_batch_code"]
    assert 'value="KEEP-ME"' in page and "December fix</textarea>" in page


def no_batch_option(html: str) -> str:
    found = re.search(
        r'<select name="existing_open_batch_id"[^>]*>\s*<option value=""[^>]*>'
        r"([^<]*)</option>",
        html,
    )
    assert found is not None
    return found[1]


def leave_open_ticked(html: str) -> bool:
    found = re.search(r'<input type="checkbox" name="leave_existing_batches_open"[^>]*>', html)
    assert found is not None
    return "checked" in found[0]


def test_no_form_offers_the_only_open_batch_when_the_api_user_has_two(clerk_client, sandbox):
    """The sandbox's API user has two open batches: both forms ask to choose one, and tick
    Leave existing batches open, which EnergyCAP needs then."""
    guids = kickout_imports(sandbox, 2)
    single = post_retry(
        clerk_client, API_USER_KICKOUT_TASK_GUID, action="choose", batch_mode="use existing batch"
    ).content.decode()
    bulk = choose(clerk_client, guids, batch_mode="use existing batch").content.decode()
    for html in (single, bulk):
        assert no_batch_option(html) == "Choose an open batch"
    single_new = post_retry(
        clerk_client, API_USER_KICKOUT_TASK_GUID, action="choose", batch_mode="new batch"
    ).content.decode()
    bulk_new = choose(clerk_client, guids, batch_mode="new batch").content.decode()
    assert leave_open_ticked(single_new) and leave_open_ticked(bulk_new)
    # What is preselected passes the form's own rules (EnergyCAP's).
    review = post_bulk(
        clerk_client, guids, batch_mode="new batch", leave_existing_batches_open=True
    )
    assert review.context["whole_set"], review.content.decode()


def test_with_one_open_batch_the_default_names_it_and_is_accepted(clerk_client, sandbox):
    """One open batch left: "The only open batch of …" is offered, and the review accepts it;
    a single import may close it first (unticked), two may not."""
    sandbox.update_batch(902, batch_status="Closed")
    guids = kickout_imports(sandbox, 2)
    single = post_retry(
        clerk_client, API_USER_KICKOUT_TASK_GUID, action="choose", batch_mode="use existing batch"
    )
    api_user = single.context["form"].choices.api_user.full_name
    assert no_batch_option(single.content.decode()) == f"The only open batch of {api_user}"
    review = post_bulk(clerk_client, guids, batch_mode="use existing batch")
    assert review.context["whole_set"], review.content.decode()
    one = post_retry(
        clerk_client, API_USER_KICKOUT_TASK_GUID, action="choose", batch_mode="new batch"
    )
    assert not leave_open_ticked(one.content.decode())
    two = choose(clerk_client, guids, batch_mode="new batch").content.decode()
    assert leave_open_ticked(two)


# -- in a real browser --

browser = test_browser.browser
watch = test_browser.watch
page = test_browser.page


@pytest.mark.browser
def test_in_a_browser_the_bulk_form_switches_modes_after_an_error(
    page, watch, live_server, clerk, sandbox
):
    """Carla's review fails, she switches to smart batch: its code field appears, alone; the
    review then shows the whole set's sentence."""
    guids = kickout_imports(sandbox, 2)
    sign_in(page, live_server.url, clerk)
    open_bill_imports(page)
    for guid in guids:
        page.check(f'input[name="task"][value="{guid}"]')
    page.locator(".retry-selected").click()
    expect(page.get_by_role("heading", name="Retry 2 selected imports")).to_be_visible()
    choose_mode(page, "use pending batch")
    expect(page.locator("#mode-fields input, #mode-fields select")).to_have_count(1)
    page.get_by_role("button", name="Review before sending").click()
    expect(page.locator(".errorlist")).to_contain_text("Choose the pending batch")
    choose_mode(page, "smart batch")
    expect(page.locator("#id_pending_batch_id")).to_have_count(0)
    expect(page.locator("#id_new_batch_code")).to_be_visible()
    page.fill("#id_new_batch_code", "BROWSER-DEC")
    expect(page.locator("#smart-path")).to_contain_text("No batch has the code BROWSER-DEC")
    page.get_by_role("button", name="Review before sending").click()
    expect(page.locator(".whole-set")).to_have_text(
        "smart batch with code BROWSER-DEC: the first creates batch BROWSER-DEC, the other is "
        "added to it."
    )
    watch.assert_clean(page)
