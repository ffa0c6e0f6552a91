"""What every browser test needs: Chromium's launch, a signed-in page, and a watch for errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from playwright.sync_api import BrowserContext, ConsoleMessage, Dialog, Page, expect

from .conftest import PASSWORD

CHROMIUM = "/usr/bin/chromium"
# The distribution's Chromium, not Playwright's download; flags keep it quiet and offline.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# The brief's listener, plus a report to Python: `window.__csp` dies with each page, and a
# flow crosses several (task page, retry page), so violations are also sent out as they happen.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", e => {
  (window.__csp = window.__csp || []).push(e.violatedDirective + " " + e.blockedURI);
  if (window.__reportCsp) window.__reportCsp(e.violatedDirective + " " + e.blockedURI);
});
"""

# What the server writes in a <time data-local>, before dashboard.js localises it.
SERVER_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} \S+$")


@dataclass
class PageWatch:
    """Everything a page said that a clerk would never see: console errors, CSP, dialogs."""

    console_errors: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    pages_seen: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext, page: Page) -> None:
        context.add_init_script(CSP_LISTENER)
        context.expose_function("__reportCsp", self._on_csp)
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("dialog", self._on_dialog)
        page.on(
            "framenavigated",
            lambda frame: self.pages_seen.append(frame.url) if frame is page.main_frame else None,
        )

    def _on_csp(self, violation: str) -> None:
        self.csp.append(violation)

    def _on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.csp.append(message.text)
        elif message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            # Chromium asks for /favicon.ico by itself; the app has none (yet), and that 404
            # says nothing about the page under test.
            self.console_errors.append(message.text)

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def assert_clean(self, page: Page) -> None:
        """No CSP violation (this page's listener and every earlier one), no error, no dialog."""
        if not page.is_closed():
            self.csp.extend(v for v in page.evaluate("window.__csp || []") if v not in self.csp)
        assert self.csp == [], f"CSP violations on {self.pages_seen}"
        assert self.console_errors == [], f"console errors on {self.pages_seen}"
        assert self.page_errors == [], f"uncaught errors on {self.pages_seen}"
        assert self.dialogs == [], "a dialog opened"


def sign_in(page: Page, base_url: str, user) -> None:
    """Through the real sign-in form, as the user would; the day starts on Kickouts."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Kickouts", exact=True)).to_be_visible()


def open_bill_imports(page: Page) -> None:
    """The task list, through the navigation."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Bill imports").click()
    expect(page.get_by_role("heading", name="Bill imports")).to_be_visible()


def choose_mode(page: Page, mode: str) -> None:
    """Tick a batch mode and wait until htmx has swapped in that mode's fields."""
    # The single form and the bulk form alike: the radio posts the form with action=choose.
    with page.expect_response(
        lambda r: r.request.method == "POST" and "action=choose" in (r.request.post_data or "")
    ):
        page.check(f'input[name="batch_mode"][value="{mode}"]')
    # htmx swaps after the response arrives; the radio is enabled again once it has settled.
    expect(page.locator(f'input[name="batch_mode"][value="{mode}"]')).to_be_enabled()
    # And htmx has processed the new fields (their own triggers, such as the smart-batch
    # preview's): typing into them earlier, on a busy machine, went unheard.
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"
    )
