"""What to do about a kickout: the one table of causes, matched by keywords in the message.

EnergyCAP documents the rules that kick bills out and how to fix each (help center: bill
import overview and workflow, account code alias, account alerts, vendors, advanced file
format) but publishes no message texts. So a cause is recognised by keywords, case-insensitively,
and a message no row recognises is shown verbatim with "no advice yet".

The re-import endpoint sends the kickout files again *unchanged*: it only helps once the cause
was fixed in EnergyCAP's master data. A kickout caused by the file itself comes back identical;
its documented fix is to correct the file and import it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

REIMPORT = "re-import after the fix"
CORRECT_FILE = "correct the file and import it again"
DEPENDS = "depends on the fix"


@dataclass(frozen=True)
class Cause:
    key: str
    label: str
    # Any one of these matches; each is words that must all appear in the message.
    keywords: tuple[tuple[str, ...], ...]
    fix: str
    after_fix: str  # REIMPORT, CORRECT_FILE or DEPENDS
    after_fix_note: str = ""

    @property
    def reimport_works(self) -> bool:
        return self.after_fix == REIMPORT


@dataclass(frozen=True)
class Advice:
    """What the queue shows beside a message: its cause, or "no advice yet"."""

    message: str
    cause: Cause | None

    @property
    def known(self) -> bool:
        return self.cause is not None

    @property
    def label(self) -> str:
        return self.cause.label if self.cause else self.message

    @property
    def fix(self) -> str:
        return self.cause.fix if self.cause else "no advice yet"

    @property
    def needs_corrected_file(self) -> bool:
        """Re-importing the same file kicks the same rows out again: the fix is in the file."""
        return self.cause is not None and self.cause.after_fix == CORRECT_FILE

    @property
    def after_fix(self) -> str:
        if self.cause is None:
            return ""
        if self.cause.after_fix_note:
            return f"{self.cause.after_fix} ({self.cause.after_fix_note})"
        return self.cause.after_fix


# Order matters: the first row whose keywords match wins, so the narrower causes come before
# the broad "account not matched" (a message about a meter "not found for account" is a meter's).
CAUSES: tuple[Cause, ...] = (
    Cause(
        "account_at_two_vendors",
        "Same account number at two vendors",
        (
            ("account", "more than one vendor"),
            ("account", "multiple vendors"),
            ("account", "two vendors"),
            ("account", "several vendors"),
            ("account", "ambiguous", "vendor"),
        ),
        "put the vendor code in the file",
        CORRECT_FILE,
    ),
    Cause(
        "account_alert_block",
        "Account alert set to Block",
        (("alert", "block"),),
        "end or change the account alert set to Block for the bill's period",
        REIMPORT,
    ),
    Cause(
        "account_inactive",
        "Account inactive",
        (("account", "inactive"), ("account", "not active")),
        "activate or correct the account",
        REIMPORT,
    ),
    Cause(
        "outside_service_dates",
        "Bill dates outside the account's service dates",
        (
            ("service date",),
            ("service period",),
            ("outside", "account"),
        ),
        "fix the account's service dates (or the bill's dates, if they are wrong)",
        REIMPORT,
        "if the account's dates were wrong; a wrong bill date needs a corrected file",
    ),
    Cause(
        "meter_not_resolved",
        "Meter cannot be resolved",
        (
            ("meter", "not found"),
            ("meter", "not assigned"),
            ("meter", "not associated"),
            ("meter", "not resolved"),
            ("meter", "be resolved"),
            ("meter", "unable to resolve"),
            ("meter", "ambiguous"),
            ("meter", "multiple"),
            ("meter", "more than one"),
            ("meter", "missing"),
        ),
        "give the meter code or serial number in the file",
        CORRECT_FILE,
        "usually",
    ),
    Cause(
        "vendor_mismatch",
        "Vendor code mismatch",
        (
            ("vendor", "not match"),
            ("vendor", "mismatch"),
            ("vendor", "not found"),
            ("vendor", "unknown"),
            ("vendor", "invalid"),
        ),
        "add a vendor alias — up to five — on the vendor",
        REIMPORT,
    ),
    Cause(
        "mixed_date_formats",
        "Dates in mixed formats",
        (
            ("date format",),
            ("mixed", "date"),
            ("inconsistent", "date"),
        ),
        "use one date format in the whole file",
        CORRECT_FILE,
    ),
    # Not in EnergyCAP's documented table: both are wrong values in the file itself, which
    # the re-import sends again unchanged, so the only fix is a corrected file.
    Cause(
        "bill_dates_reversed",
        "Bill end date before its start date",
        (
            ("end date", "before", "start date"),
            ("end date", "earlier than", "start date"),
            ("start date", "after", "end date"),
            ("start date", "later than", "end date"),
        ),
        "correct the bill's start and end dates in the file",
        CORRECT_FILE,
    ),
    Cause(
        "line_items_total",
        "Total cost does not match the line items",
        (
            ("total", "line item"),
            ("cost", "line item"),
        ),
        "make the bill's total cost equal the sum of its line items in the file",
        CORRECT_FILE,
    ),
    Cause(
        "existing_bill",
        "A bill already exists for the same dates",
        (
            ("existing bill",),
            ("bill", "already exists"),
            ("duplicate bill",),
            ("bill", "overlaps"),
        ),
        "the file's replace, correct or void columns decide what happens to the existing bill",
        DEPENDS,
        "re-import once the existing bill is voided; else correct the file",
    ),
    Cause(
        "account_not_matched",
        "Account code not matched",
        (
            ("account", "not found"),
            ("account", "not matched"),
            ("account", "no match"),
            ("account", "could not be matched"),
            ("account", "does not exist"),
            ("account", "unknown"),
        ),
        "add an account code alias — up to five — from the bill import errors screen or the "
        "account",
        REIMPORT,
    ),
)

_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=4096)
def advice_for(message: str) -> Advice:
    """The cause of a kickout message, or an unknown message shown verbatim."""
    text = _SPACES.sub(" ", message.lower())
    for cause in CAUSES:
        if any(all(word in text for word in words) for words in cause.keywords):
            return Advice(message, cause)
    return Advice(message, None)


# The key stored with each kickout row (`KickoutRow.cause`) for a message no cause recognises.
OTHER = "other"
OTHER_LABEL = "Other messages (no advice yet)"
# Every stored key in the table's order, unknown messages last: the charts' order and colours.
CAUSE_KEYS: tuple[str, ...] = (*(cause.key for cause in CAUSES), OTHER)
_LABELS = {cause.key: cause.label for cause in CAUSES}


def cause_key(message: str) -> str:
    """The key stored for a message: its cause's, or OTHER."""
    cause = advice_for(message).cause
    return cause.key if cause else OTHER


def cause_label(key: str) -> str:
    """A stored key as people read it."""
    return _LABELS.get(key, OTHER_LABEL)
