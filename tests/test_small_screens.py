"""Small screens and the way back: at 390 px the queue, a group, the task list and the bulk
pages read without sideways scrolling, and a task page or bulk form opened from a kickout
group links back to it."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from kickouts import snapshots

from . import test_browser
from .browser_helpers import open_bill_imports, sign_in
from .test_queue import ACCOUNT, METER, QUINN, add_import

PHONE = {"width": 390, "height": 844}
GROUP = f"{reverse('queue_group')}?{urlencode({'period': '30', 'user': QUINN, 'message': ACCOUNT})}"

browser = test_browser.browser
watch = test_browser.watch
page = test_browser.page


@pytest.fixture
def quinns_group(sandbox, db) -> list[str]:
    """Three of Quinn's imports with "Account not found" (one also "Meter not found"), with
    long file names, stored as the worker stores them."""
    guids = [
        add_import(
            sandbox,
            [ACCOUNT, METER] if days == 2 else [ACCOUNT],
            4,
            days_ago=days,
            file_name=f"ConsolidatedEdison_Electric_{days}_November_2026_statements.xlsx",
            task_note="Re-run after the vendor fixed the account numbers in their export",
        )["taskGUId"].lower()
        for days in (2, 3, 5)
    ]
    snapshots.snapshot_period(30, QUINN)
    return guids


def fits_the_screen(page: Page) -> bool:
    width, client = page.evaluate(
        "[document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]"
    )
    return width <= client


@pytest.mark.browser
def test_at_390_px_the_day_reads_without_sideways_scrolling(
    page, watch, live_server, clerk, quinns_group, tmp_path
):
    """Queue, a group, the task list, the bulk form and a bulk's page: no page wider than
    the phone, each row a card whose cells say what they are."""
    page.set_viewport_size(PHONE)
    sign_in(page, live_server.url, clerk)
    seen = {}
    page.goto(f"/kickouts/?user={QUINN.replace(' ', '+')}")
    seen["queue"] = fits_the_screen(page)
    expect(page.locator("table.queue td[data-label='Rows']").first).to_be_visible()
    page.screenshot(path=tmp_path / "queue.png", full_page=True)
    page.goto(GROUP)
    seen["group"] = fits_the_screen(page)
    page.screenshot(path=tmp_path / "group.png", full_page=True)
    open_bill_imports(page)
    seen["task list"] = fits_the_screen(page)
    page.screenshot(path=tmp_path / "task-list.png", full_page=True)
    for guid in quinns_group[:2]:
        page.check(f'input[name="task"][value="{guid}"]')
    page.locator(".retry-selected").click()
    expect(page.get_by_role("heading", name="Retry 2 selected imports")).to_be_visible()
    seen["bulk form"] = fits_the_screen(page)
    page.check('input[name="batch_mode"][value="new self-contained batch"]')
    page.get_by_role("button", name="Review before sending").click()
    page.get_by_role("button", name="Send 2 re-imports").click()
    expect(page.get_by_role("heading", name="Bulk retry #")).to_be_visible()
    seen["bulk page"] = fits_the_screen(page)
    page.screenshot(path=tmp_path / "bulk.png", full_page=True)
    assert seen == dict.fromkeys(seen, True)
    watch.assert_clean(page)


@pytest.mark.browser
def test_a_task_page_and_the_bulk_form_opened_from_a_group_lead_back_to_it(
    page, watch, live_server, clerk, quinns_group
):
    """Carla opens an import from the group, goes back; ticks two, retries them, and the bulk
    form, even after its review, leads back to the same group."""
    sign_in(page, live_server.url, clerk)
    page.goto(GROUP)
    page.locator("table.group-imports a", has_text="Import").first.click()
    expect(page.get_by_role("heading", name="Retry the kickouts")).to_be_visible()
    back = page.get_by_role("link", name=f"← Kickouts: {ACCOUNT}")
    back.click()
    expect(page.get_by_role("heading", name=ACCOUNT)).to_be_visible()
    assert page.url == f"{live_server.url}{GROUP}"
    for guid in quinns_group[:2]:
        page.check(f'table.group-imports input[name="task"][value="{guid}"]')
    page.get_by_role("button", name="Retry selected").click()
    expect(page.get_by_role("heading", name="Retry 2 selected imports")).to_be_visible()
    page.check('input[name="batch_mode"][value="new self-contained batch"]')
    page.get_by_role("button", name="Review before sending").click()
    expect(page.locator(".whole-set")).to_be_visible()
    page.get_by_role("link", name=f"← Kickouts: {ACCOUNT}").click()
    expect(page.get_by_role("heading", name=ACCOUNT)).to_be_visible()
    watch.assert_clean(page)


def test_the_group_carries_itself_in_its_links_and_its_form(clerk_client, quinns_group):
    """Task links, retry-form links and the selection form all carry `from=<group>`."""
    page = clerk_client.get(GROUP).content.decode()
    carried = urlencode({"from": GROUP}).replace("&", "&amp;")
    for guid in quinns_group:
        assert f'href="{reverse("task_detail", args=[guid])}?{carried}"' in page
        assert f'href="{reverse("retry_form", args=[guid])}?{carried}"' in page
    assert 'name="from" value="/kickouts/group/?period=30&amp;user=' in page


@pytest.mark.parametrize(
    "value",
    [
        "https://evil.example/kickouts/group/?message=Account+not+found",
        "//evil.example/kickouts/group/?message=x",
        "/history/?message=Account+not+found",
        "javascript:alert(1)",
    ],
)
def test_a_from_that_is_not_a_group_of_this_site_links_nowhere(clerk_client, quinns_group, value):
    """Only a kickout group's address on this site becomes the way back."""
    page = clerk_client.get(reverse("task_detail", args=[quinns_group[0]]), {"from": value})
    assert page.status_code == 200
    assert "back-to-group" not in page.content.decode()
    assert "evil.example" not in page.content.decode()
