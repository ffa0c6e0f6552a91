"""Clerks and supervisors in a real browser: htmx swaps, the send, polling, escaping, CSP."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from kickouts import snapshots
from kickouts.models import ImportSnapshot, RetryAttempt
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID

from . import test_worker
from .browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SERVER_TIME,
    PageWatch,
    choose_mode,
    open_bill_imports,
    sign_in,
)
from .conftest import signed_in_client
from .retry_helpers import post_retry

# The real worker of tests/test_worker.py, for the tests that follow a retry to its end.
start_worker = test_worker.start_worker
mail_dir = test_worker.mail_dir

pytestmark = pytest.mark.browser

TASK = API_USER_KICKOUT_TASK_GUID
RETRY_PAGE = re.compile(r"/retries/(\d+)/$")


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module; lifts Django's async guard while it runs."""
    # Playwright's sync API runs an asyncio event loop in this thread, so Django refuses the
    # ORM calls made here (the users, the RetryAttempt checks, the test database's flush) with
    # SynchronousOnlyOperation. Nothing here is async: the loop only talks to the browser.
    # Set for this module only, so other modules keep the guard.
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
    """A fresh browser profile per test, in New York, so local times differ from the server's."""
    context = browser.new_context(
        base_url=live_server.url, locale="en-US", timezone_id="America/New_York"
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    watch.attach(context, page)
    yield page
    context.close()


def _task_page(page: Page, guid: str = TASK) -> None:
    page.goto(f"/tasks/{guid}/")
    expect(page.get_by_role("heading", name="Retry the kickouts")).to_be_visible()


def _review_and_send(page: Page, mode: str) -> int:
    """Choose a mode that needs no other field, review, send; the new retry's id."""
    choose_mode(page, mode)
    page.get_by_role("button", name="Review before sending").click()
    page.get_by_role("button", name="Send to EnergyCAP").click()
    page.wait_for_url(RETRY_PAGE)
    return int(RETRY_PAGE.search(page.url).group(1))


def test_a_clerk_signs_in_and_sees_the_recent_bill_imports(
    page, watch, live_server, clerk, tmp_path
):
    """The task list: rows, status badges, the sandbox marker, times in the browser's zone."""
    sign_in(page, live_server.url, clerk)
    open_bill_imports(page)
    rows = page.locator("table.tasks tbody tr")
    assert rows.count() > 10
    expect(page.locator("table.tasks .badge").first).not_to_have_text("")
    expect(page.get_by_role("note")).to_contain_text("Sandbox")
    first_time = page.locator("table.tasks time[data-local]").first
    text = first_time.inner_text()
    assert not SERVER_TIME.match(text), f"not localised: {text!r}"
    assert re.search(r"\b(EST|EDT)\b", text), text
    assert first_time.get_attribute("datetime").endswith("Z")
    expect(page.locator(".tz-note")).to_contain_text("(America/New_York)")
    page.screenshot(path=tmp_path / "task-list.png", full_page=True)
    watch.assert_clean(page)


def test_a_clerk_retries_kickouts_end_to_end(page, watch, live_server, clerk, sandbox, tmp_path):
    """Modes swap their fields, an error lands on its field, a double click sends once."""
    sign_in(page, live_server.url, clerk)
    _task_page(page)
    fields = page.locator("#mode-fields")

    choose_mode(page, "smart batch")
    expect(fields.get_by_label("New batch code")).to_be_visible()
    expect(fields.locator("select")).to_have_count(0)
    expect(fields.locator("#smart-path")).to_contain_text("Type a batch code")
    fields.get_by_label("New batch code").fill("AUDIT-HOLD")  # the preview asks as one types
    expect(fields.locator("#smart-path")).to_contain_text("AUDIT-HOLD is pending")

    choose_mode(page, "use pending batch")
    expect(fields.get_by_label("Pending batch")).to_be_visible()
    expect(fields.locator("input, select")).to_have_count(1)

    page.get_by_role("button", name="Review before sending").click()
    pending = page.locator("#id_pending_batch_id")
    error = page.locator(".field", has=pending).locator(".errorlist")
    expect(error).to_have_text("Choose the pending batch the bills go into.")
    assert sandbox.count("kickout_post") == 0

    pending.select_option("907")
    page.get_by_role("button", name="Review before sending").click()
    confirm = page.locator(".confirm")
    expect(confirm).to_contain_text("Check before sending")
    expect(confirm).to_be_focused()  # its autofocus, honoured by htmx on settle
    assert json.loads(confirm.locator("pre.payload").inner_text()) == {
        "batchSettings": {"batchMode": "use pending batch", "pendingBatchId": 907}
    }
    page.screenshot(path=tmp_path / "confirm.png", full_page=True)

    sends = []
    page.on(
        "request",
        lambda r: sends.append(r.url) if "action=send" in (r.post_data or "") else None,
    )
    page.get_by_role("button", name="Send to EnergyCAP").dblclick()
    page.wait_for_url(RETRY_PAGE)
    expect(page.get_by_role("heading", name=re.compile(r"^Retry #\d+"))).to_be_visible()

    attempt = RetryAttempt.objects.get()
    assert page.url.endswith(f"/retries/{attempt.pk}/")
    assert sandbox.count("kickout_post") == 1
    assert len(sends) == 1, "the disabled button should swallow the second click"
    assert attempt.payload["batchSettings"]["pendingBatchId"] == 907
    watch.assert_clean(page)


def test_the_status_panel_follows_the_new_task_to_its_before_and_after_and_stops_polling(
    page, watch, live_server, clerk, sandbox, settings, tmp_path, start_worker
):
    """Processing, then the end: the worker follows and compares, the panel reads its record,
    and the last swap brings the before and after and the end beside the headline, with no
    reload; after that neither the page nor EnergyCAP is asked again."""
    settings.STATUS_POLL_SECONDS = 1
    settings.STATUS_POLL_CAP_SECONDS = 30
    sandbox.configure(task_seconds=3, next_outcomes=["Completed with kickouts"])
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/status/" in r.url else None)
    worker = start_worker()
    sign_in(page, live_server.url, clerk)
    _task_page(page)
    pk = _review_and_send(page, "new self-contained batch")
    new_guid = RetryAttempt.objects.get(pk=pk).new_task_guid

    badge = page.locator("#status-panel .badge")
    expect(badge).to_have_text("Processing")
    expect(page.get_by_role("heading", name="Before and after")).to_be_visible(timeout=15_000)
    expect(badge).to_have_text("Completed with kickouts")
    expect(page.locator("h1 #end-badge")).to_contain_text("new import: Completed with kickouts")
    expect(page.locator(".compare-counts")).to_contain_text("kicked-out rows fixed")
    assert polls, "the panel never polled"
    assert all(f"/retries/{pk}/status/" in url for url in polls)
    page.screenshot(path=tmp_path / "retry-compared.png", full_page=True)

    def upstream_reads() -> int:
        return sum(new_guid in entry["path"] for entry in sandbox.log("task_get"))

    polls_at_end, reads_at_end = len(polls), upstream_reads()
    page.wait_for_timeout(4_500)  # four and a half poll intervals
    assert len(polls) == polls_at_end, "the panel kept polling after the task ended"
    assert upstream_reads() == reads_at_end, "EnergyCAP was asked again after the task ended"
    assert page.locator("#status-panel[hx-get]").count() == 0
    announcer = page.locator("#status-announcer").inner_text()
    assert announcer == "The new import ended: Completed with kickouts."
    # The facts and the retry chain above and below the panel came along: the new import by
    # its number, its end in the chain.
    new_task_id = RetryAttempt.objects.get(pk=pk).new_task_id
    expect(page.locator("#retry-facts")).to_contain_text(f"Import {new_task_id}")
    chain = page.locator("#lineage")
    expect(chain).to_contain_text(f"Import {new_task_id} (Completed with kickouts)")
    assert worker.process.poll() is None
    watch.assert_clean(page)


def test_a_failed_new_import_turns_the_pages_notice_without_a_reload(
    page, watch, live_server, clerk, sandbox, settings, start_worker
):
    """Seen by hand: the new import failed with nothing imported, the badge said so, and the
    notice under it still said that retrying again needs a supervisor. The last swap brings
    the notice of the end: no supervisor needed, try again."""
    settings.STATUS_POLL_SECONDS = 1
    clerk.email = "carla@example.com"
    clerk.save()
    sandbox.configure(task_seconds=2, next_outcomes=["Failed"])
    start_worker()
    sign_in(page, live_server.url, clerk)
    _task_page(page)
    _review_and_send(page, "new self-contained batch")
    notice = page.locator("#outcome-notice")
    expect(notice).to_contain_text("Retrying this import again needs a supervisor")
    expect(page.locator("#retry-facts")).to_contain_text("An email goes to carla@example.com")
    expect(page.locator("h1 #end-badge")).to_contain_text("new import: Failed", timeout=15_000)
    expect(notice).to_contain_text("EnergyCAP's counts show that no bill was imported")
    expect(notice).to_contain_text("you may retry it — no supervisor needed")
    expect(notice.get_by_role("link", name="Try again with these settings")).to_be_visible()
    expect(page.locator("#retry-facts")).to_contain_text("Emailed to carla@example.com")
    watch.assert_clean(page)


def test_a_task_note_with_a_script_tag_is_shown_as_text(page, watch, live_server, clerk, sandbox):
    """Upstream text never runs: the note and kickout message show as literal text."""
    task = sandbox.add_task(
        status="Completed with kickouts",
        task_note="<script>alert('x')</script>",
        kickout_messages=["<img src=x onerror=alert(1)>"],
    )
    sign_in(page, live_server.url, clerk)
    open_bill_imports(page)
    expect(page.locator("table.tasks")).to_contain_text("<script>alert('x')</script>")

    _task_page(page, task["taskGUId"])
    expect(page.locator("main")).to_contain_text("<script>alert('x')</script>")
    expect(page.locator(".kickout-messages")).to_contain_text("<img src=x onerror=alert(1)>")
    assert page.locator('main img[src="x"]').count() == 0
    assert watch.dialogs == []
    watch.assert_clean(page)


def test_a_supervisor_reads_the_history_with_no_csp_violation(
    page, watch, live_server, clerk, supervisor, sandbox
):
    """The history lists a clerk's retry and links to its page; nothing is blocked."""
    response = post_retry(
        signed_in_client(clerk), TASK, action="send", batch_mode="new self-contained batch"
    )
    assert response.status_code == 302
    attempt = RetryAttempt.objects.get()
    sign_in(page, live_server.url, supervisor)
    answer = page.goto("/history/")
    assert answer.status == 200
    link = page.locator(f'main a[href="/retries/{attempt.pk}/"]').first
    expect(link).to_be_visible()
    link.click()
    page.wait_for_url(RETRY_PAGE)
    watch.assert_clean(page)


def test_after_a_refused_review_the_focus_is_on_the_field_to_fix(page, watch, live_server, clerk):
    """The swapped-in error is where keyboard and screen-reader users land."""
    sign_in(page, live_server.url, clerk)
    _task_page(page)
    choose_mode(page, "use pending batch")
    page.get_by_role("button", name="Review before sending").click()
    pending = page.locator("#id_pending_batch_id")
    expect(pending).to_have_attribute("aria-invalid", "true")
    expect(pending).to_be_focused()
    watch.assert_clean(page)


def test_a_clerk_can_retry_with_the_keyboard_only(page, watch, live_server, clerk):
    """Tab to the modes, arrows to choose, Tab to the button, Enter: the confirmation."""
    sign_in(page, live_server.url, clerk)
    _task_page(page)
    _tab_until(page, "input[name=batch_mode]")
    page.keyboard.press("Space")
    radios = page.locator("input[name=batch_mode]")
    for position in (0, 1, 2):  # use existing, new batch, then new self-contained batch
        if position:
            page.keyboard.press("ArrowDown")
        expect(radios.nth(position)).to_be_checked()
        expect(radios.nth(position)).to_be_enabled()  # its htmx request is over
        # Still on the radio after the swap, so the arrows keep working.
        expect(radios.nth(position)).to_be_focused()
    fields = page.locator("#mode-fields")
    expect(fields.get_by_label("New batch code")).to_be_visible()
    expect(fields.get_by_label("Leave existing batches open")).to_have_count(0)  # new batch's

    _tab_until(page, "button[value=review]")
    page.keyboard.press("Enter")
    confirm = page.locator(".confirm")
    expect(confirm).to_contain_text("new self-contained batch")
    expect(confirm).to_be_focused()
    watch.assert_clean(page)


def _tab_until(page: Page, selector: str, limit: int = 40) -> None:
    """Press Tab until the focus is on `selector`, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_a_clerk_works_the_kickout_queue_with_the_keyboard_only(
    page, watch, live_server, clerk, sandbox, tmp_path
):
    """Queue → the biggest group → one of its imports → marked handled, never touching a mouse."""
    snapshots.snapshot_period(30)
    sign_in(page, live_server.url, clerk)
    _tab_until(page, "nav a[href='/kickouts/']")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Kickouts")).to_be_visible()
    biggest = page.locator("table.queue tbody tr").first.locator("a")
    message = biggest.inner_text()
    page.screenshot(path=tmp_path / "queue.png", full_page=True)

    _tab_until(page, "table.queue tbody a")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=message)).to_be_visible()
    expect(page.locator(".advice")).not_to_be_empty()
    page.screenshot(path=tmp_path / "queue-group.png", full_page=True)

    _tab_until(page, "table.group-imports a[href^='/tasks/']")
    guid = page.evaluate("document.activeElement.getAttribute('href')").split("/")[2]
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="In the kickout queue")).to_be_visible()

    _tab_until(page, "#id_reason")
    page.keyboard.press("ArrowDown")  # past "Choose a reason" and "fixed in EnergyCAP, …"
    page.keyboard.press("ArrowDown")
    expect(page.locator("#id_reason")).to_have_value("corrected_file")
    page.keyboard.press("Tab")
    page.keyboard.type("Fixed the file's meter codes")
    _tab_until(page, ".handled-panel button[type=submit]")
    page.keyboard.press("Enter")
    expect(page.locator(".handled-panel")).to_contain_text("Handled: corrected file imported")
    expect(page.locator(".handled-history")).to_contain_text("open → corrected file imported")
    page.screenshot(path=tmp_path / "task-handled.png", full_page=True)

    snapshot = ImportSnapshot.objects.get(task_guid=guid)
    assert snapshot.handled_reason == "corrected_file" and snapshot.handled_by == clerk
    assert snapshot.handled_note == "Fixed the file's meter codes"
    watch.assert_clean(page)
