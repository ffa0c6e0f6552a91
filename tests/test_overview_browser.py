"""A supervisor reads the overview's charts in a real browser and follows a bar to its rows."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from . import test_browser, test_overview
from .browser_helpers import sign_in
from .test_overview import ACCOUNT

# The browser tests' fixtures, and the overview tests' hand-counted month.
browser, page, watch = test_browser.browser, test_browser.page, test_browser.watch
month = test_overview.month

pytestmark = pytest.mark.browser


def test_a_supervisor_follows_a_wasted_re_import_bar_to_the_retry_it_counts(
    page,
    watch,
    live_server,
    supervisor,
    other_clerk,
    month,
    tmp_path,
):
    """The wasted chart's one bar says 1 re-import; its link lists exactly Oscar's retry."""
    sign_in(page, live_server.url, supervisor)
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    bar = page.locator('svg[data-chart="wasted"] rect')
    expect(bar).to_have_count(1)
    title = bar.locator("title").text_content()
    assert title == "Account code not matched: 1 re-imports fixed nothing"
    assert bar.get_attribute("data-value") == "1"
    page.locator('svg[data-chart="wasted"] a').click()
    page.wait_for_url("**/history/**")
    rows = page.locator("table.history tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Oscar")
    watch.assert_clean(page)


def test_a_still_open_bar_opens_the_queue_at_that_cause(
    page,
    watch,
    live_server,
    supervisor,
    month,
):
    """The causes chart's open part for accounts counts 2 rows: the queue shows those 2."""
    sign_in(page, live_server.url, supervisor)
    page.goto("/overview/")
    bar = page.locator('svg[data-chart="causes"] a rect[class="series-0"]').first
    assert bar.locator("title").text_content() == "Account code not matched: 2 rows still open"
    bar.click()
    page.wait_for_url("**/kickouts/**")
    group = page.locator("table.queue tbody tr").filter(has_text=ACCOUNT)
    expect(group).to_have_count(1)
    expect(page.locator("table.queue tbody tr")).to_have_count(1)
    expect(group.locator("td.num").first).to_have_text("2")
    watch.assert_clean(page)
