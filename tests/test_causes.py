"""The table of kickout causes: what each message means and what fixes it."""

from __future__ import annotations

import pytest

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
    ("Account number exists at more than one vendor", "vendor_mismatch"),
]

UNKNOWN = [
    "Total cost does not equal line item sum",
    "Bill end date is before start date",
    "Something new EnergyCAP says",
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


def test_every_cause_the_issue_names_has_a_row_with_energycaps_fix():
    """The table covers the nine causes EnergyCAP documents, each with its fix."""
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
    }
    assert "account code alias" in by_key["account_not_matched"].fix
    assert "up to five" in by_key["account_not_matched"].fix
    assert "vendor alias" in by_key["vendor_mismatch"].fix


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
    assert after["existing_bill"] == DEPENDS
    assert advice_for("Account not found").after_fix == "re-import after the fix"
    assert advice_for("Meter not found for account").after_fix.startswith(CORRECT_FILE)


def test_the_sandbox_sends_both_known_and_unknown_messages():
    """The sandbox's messages exercise both advice and "no advice yet" in the queue."""
    known = [m for m in KICKOUT_MESSAGES if advice_for(m).known]
    assert len(known) == 4
    assert len(KICKOUT_MESSAGES) - len(known) == 2
