"""A clerk imports a corrected file in a real browser: the task page's link, the form with its
htmx mode switching, the upload, the review, the send, and the before and after that the
worker brings to the retry page."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from kickouts.models import Kind, RetryAttempt

from . import test_worker
from .browser_helpers import CHROMIUM, CHROMIUM_ARGS, PageWatch, sign_in
from .corrected_helpers import METER_NOT_FOUND, csv_bytes, kickout_rows

start_worker = test_worker.start_worker
mail_dir = test_worker.mail_dir

pytestmark = pytest.mark.browser

RETRY_PAGE = re.compile(r"/retries/(\d+)/$")


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module (Django's async guard lifted, as in tests/test_browser.py)."""
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def page(browser, watch, live_server):
    context = browser.new_context(base_url=live_server.url, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    watch.attach(context, page)
    yield page
    context.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where the screenshots go (SCREENSHOTS_DIR to keep them after the run)."""
    folder = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def choose_mode(page: Page, mode: str) -> None:
    """Tick a batch mode and wait until htmx has swapped in that mode's fields."""
    with page.expect_response(
        lambda r: "/corrected-file/" in r.url and r.request.method == "POST"
    ) as answered:
        page.check(f'input[name="batch_mode"][value="{mode}"]')
    # A mode switch never uploads the chosen file again.
    assert b"filename=" not in (answered.value.request.post_data_buffer or b"")
    expect(page.locator(f'input[name="batch_mode"][value="{mode}"]')).to_be_enabled()
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    )


def test_a_clerk_uploads_reviews_sends_and_reads_the_before_and_after(
    page, watch, live_server, clerk, sandbox, start_worker, shots
):
    """Carla corrects two of four meters: the review shows her file and the exact body, the
    send lands on its page, and the worker's comparison appears there: 2 of 4 fixed."""
    source = sandbox.add_task(kickout_messages=[METER_NOT_FOUND], rows_per_message=4)
    guid = source["taskGUId"].lower()
    rows = kickout_rows(sandbox, guid)
    meters = {a["accountCode"]: a["meters"] for a in sandbox.accounts()}
    for row in rows[:2]:
        row["Meter Code"] = meters[row["Account Code"]][0]
    data = csv_bytes(rows)

    sign_in(page, live_server.url, clerk)
    page.goto(f"/tasks/{guid}/")
    page.get_by_role("link", name="Import a corrected file").click()
    expect(page.get_by_role("heading", name="Import a corrected file")).to_be_visible()
    expect(page.locator(".source-imports")).to_contain_text(f"{METER_NOT_FOUND} (4)")
    expect(page.get_by_label("Import note")).to_have_value(
        f"Corrected file for Import {source['taskId']}"
    )

    page.set_input_files(
        "#id_file", files=[{"name": "meters-fixed.csv", "mimeType": "text/csv", "buffer": data}]
    )
    choose_mode(page, "use pending batch")
    fields = page.locator("#mode-fields")
    expect(fields.get_by_label("Pending batch")).to_be_visible()
    choose_mode(page, "new self-contained batch")
    expect(fields.get_by_label("New batch code")).to_be_visible()
    fields.get_by_label("New batch code").fill("METERS-NOV")
    expect(page.get_by_label("Import profile")).to_have_value("")
    page.screenshot(path=shots / "corrected-file-form.png", full_page=True)
    page.get_by_role("button", name="Review before sending").click()

    review = page.locator(".confirm")
    expect(review.get_by_role("heading", name="Check before sending")).to_be_visible()
    expect(review).to_contain_text("meters-fixed.csv")
    expect(review).to_contain_text("4 bill rows")
    expect(review.locator("table.preview tbody tr")).to_have_count(4)
    expect(review.locator("table.preview thead")).to_contain_text("Meter Code")
    expect(review.locator("pre.payload")).to_contain_text(
        f'"data": "<base64 of {len(data)} bytes>"'
    )
    expect(review.locator("pre.payload")).to_contain_text('"newBatchCode": "METERS-NOV"')
    expect(review).to_contain_text("EnergyCAP will make a new batch named METERS-NOV")
    page.screenshot(path=shots / "corrected-file-review.png", full_page=True)
    assert sandbox.count("import_post") == 0

    page.get_by_role("button", name="Send to EnergyCAP").click()
    page.wait_for_url(RETRY_PAGE)
    attempt = RetryAttempt.objects.get(kind=Kind.CORRECTED_FILE)
    assert page.url.endswith(attempt.get_absolute_url())
    expect(page.get_by_role("heading", level=1)).to_contain_text(
        f"Corrected file #{attempt.pk} for Import {source['taskId']}"
    )
    expect(page.get_by_role("link", name="meters-fixed.csv", exact=True)).to_be_visible()

    worker = start_worker()
    before_after = page.locator(".before-after")
    try:
        expect(before_after).to_contain_text("2 of 4", timeout=40_000)
    except AssertionError:
        raise AssertionError(worker.output()) from None
    expect(before_after).to_contain_text("2 still kicked out")
    expect(before_after.locator("tr.change-fixed")).to_have_count(2)
    expect(before_after.locator("tr.change-still")).to_have_count(2)
    page.screenshot(path=shots / "corrected-file-before-after.png", full_page=True)
    assert sandbox.count("import_post") == 1
    watch.assert_clean(page)
