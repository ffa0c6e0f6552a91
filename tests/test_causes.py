"""The table of kickout causes: what each message means and what fixes it."""

from __future__ import annotations

import pytest

from kickouts import energycap, snapshots
from kickouts.causes import CAUSES, CORRECT_FILE, DEPENDS, REIMPORT, advice_for
from kickouts.sandbox.state import KICKOUT_MESSAGES

# (message, expected cause key): the wording varies; the keywords must still find the cause.
MATCHES = [
    ("Account not found", "account_not_matched"),
    ("Account code 00-1234 could not be matched", "account_not_matched"),
    ("ACCOUNT DOES NOT EXIST", "account_not_matched"),
    ("Vendor code does not match account", "vendor_mismatch"),
    ("Vendor not found", "vendor_mismatch"),
    ("Account number exists at more than one vendor", "account_at_two_vendors"),
    ("Account 1234 is ambiguous: found at two vendors", "account_at_two_vendors"),
    ("Account is inactive", "account_inactive"),
    ("The account is not active", "account_inactive"),
    ("Bill dates are outside the account's service dates", "outside_service_dates"),
    ("Bill period outside account   service period", "outside_service_dates"),
    ("Account alert set to Block for this period", "account_alert_block"),
    ("Bill blocked by account alert", "account_alert_block"),
    ("Meter not found for account", "meter_not_resolved"),
    ("Meter is not assigned to the account", "meter_not_resolved"),
    ("Multiple meters of the commodity: meter cannot be resolved", "meter_not_resolved"),
    ("Meter code is ambiguous", "meter_not_resolved"),
    ("Dates in mixed formats within one file", "mixed_date_formats"),
    ("Inconsistent date format in column Bill Start Date", "mixed_date_formats"),
    ("Bill overlaps an existing bill", "existing_bill"),
    ("A bill already exists for the account and period", "existing_bill"),
    ("Bill end date is before start date", "bill_dates_reversed"),
    ("Start date is after the end date", "bill_dates_reversed"),
    ("Total cost does not equal line item sum", "line_items_total"),
    ("Sum of line items differs from the bill total", "line_items_total"),
]

# Messages that share words with a cause but are not it.
MUST_NOT_MATCH = [
    ("Meter not found for account", "account_not_matched"),
    ("Vendor code does not match account", "account_not_matched"),
    ("Account not found", "meter_not_resolved"),
    ("Account is inactive", "account_not_matched"),
    ("Account alert set to Block for this period", "account_inactive"),
    ("Bill end date is before start date", "mixed_date_formats"),
    ("Bill end date is before start date", "outside_service_dates"),
    ("Total cost does not equal line item sum", "existing_bill"),
    ("Bill dates are outside the account's service dates", "bill_dates_reversed"),
    ("Account number exists at more than one vendor", "vendor_mismatch"),
]

UNKNOWN = [
    "Something new EnergyCAP says",
    "Site code is not recognised",
    "",
]


@pytest.mark.parametrize(("message", "key"), MATCHES)
def test_each_cause_is_found_by_its_keywords_in_any_case(message, key):
    """A message's keywords find its cause, whatever the case and spacing."""
    assert advice_for(message).cause.key == key
    assert advice_for(message.upper()).cause.key == key


@pytest.mark.parametrize(("message", "key"), MUST_NOT_MATCH)
def test_a_message_sharing_words_with_a_cause_is_not_taken_for_it(message, key):
    """A meter "not found for account" is a meter's cause, not an account's."""
    assert getattr(advice_for(message).cause, "key", None) != key


@pytest.mark.parametrize("message", UNKNOWN)
def test_an_unknown_message_is_shown_verbatim_with_no_advice_yet(message):
    """A message no row recognises keeps its own words and says there is no advice yet."""
    advice = advice_for(message)
    assert advice.cause is None
    assert advice.label == message
    assert advice.fix == "no advice yet"
    assert advice.after_fix == ""


def test_every_cause_energycap_documents_has_a_row_with_its_fix():
    """The table covers the nine causes EnergyCAP documents, each with its fix, and two
    faults of the file's own values the sandbox sends."""
    by_key = {cause.key: cause for cause in CAUSES}
    assert set(by_key) == {
        "account_not_matched",
        "vendor_mismatch",
        "account_at_two_vendors",
        "account_inactive",
        "outside_service_dates",
        "account_alert_block",
        "meter_not_resolved",
        "mixed_date_formats",
        "existing_bill",
        "bill_dates_reversed",
        "line_items_total",
    }
    assert "account code alias" in by_key["account_not_matched"].fix
    assert "up to five" in by_key["account_not_matched"].fix
    assert "vendor alias" in by_key["vendor_mismatch"].fix
    assert "in the file" in by_key["bill_dates_reversed"].fix
    assert "in the file" in by_key["line_items_total"].fix


def test_whether_reimport_works_follows_energycaps_documentation():
    """Master-data fixes re-import; faults in the file need a corrected file."""
    after = {cause.key: cause.after_fix for cause in CAUSES}
    assert after["account_not_matched"] == REIMPORT
    assert after["vendor_mismatch"] == REIMPORT
    assert after["account_inactive"] == REIMPORT
    assert after["account_alert_block"] == REIMPORT
    assert after["outside_service_dates"] == REIMPORT
    assert after["account_at_two_vendors"] == CORRECT_FILE
    assert after["meter_not_resolved"] == CORRECT_FILE
    assert after["mixed_date_formats"] == CORRECT_FILE
    assert after["bill_dates_reversed"] == CORRECT_FILE
    assert after["line_items_total"] == CORRECT_FILE
    assert after["existing_bill"] == DEPENDS
    assert advice_for("Account not found").after_fix == "re-import after the fix"
    assert advice_for("Meter not found for account").after_fix.startswith(CORRECT_FILE)
    assert advice_for("Total cost does not equal line item sum").needs_corrected_file
    assert not advice_for("Account not found").needs_corrected_file
    assert not advice_for("Something new EnergyCAP says").needs_corrected_file


@pytest.mark.parametrize("message", KICKOUT_MESSAGES)
def test_every_message_the_sandbox_can_produce_has_advice(message):
    """The sandbox's kickouts (seeded, generated and re-imported alike) come from this list:
    none of them shows "no advice yet"."""
    assert advice_for(message).known, message


def test_every_message_the_sandbox_sends_over_http_has_advice(sandbox):
    """Asked over HTTP, as the dashboard asks: every kickout message of every bill import the
    sandbox lists in 90 days has a cause."""
    api = energycap.client()
    tasks = snapshots.list_period(90)
    with_kickouts = [task for task in tasks if task.has_kickouts and not task.is_running]
    assert len(with_kickouts) >= 15
    sent = {m for task in with_kickouts for m in api.kickout_summary(task.guid).kickout_messages}
    assert sent <= set(KICKOUT_MESSAGES)
    assert [message for message in sent if not advice_for(message).known] == []
