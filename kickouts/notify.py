"""Emails to the people who asked: a retry's end, and a bulk retry's end.

What each email says is a template (templates/kickouts/email/); this module gathers what
they show and hands the message to Django's mail backend. Whether and when an email is due,
and that it goes out once, is the follow-up's business (kickouts/follow_up.py).
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string

from . import compare
from .bulk_models import BulkRetry
from .bulk_summary import needs_attention, summarize
from .follow_up_models import FollowUp
from .models import RetryAttempt, UserSettings


@dataclass(frozen=True)
class Delivery:
    """What became of one email: sent, not to be sent (and why), or failed."""

    sent: bool
    failed: bool
    note: str


def _counts(follow: FollowUp) -> str:
    return " · ".join(
        "–" if count is None else str(count)
        for count in (follow.success_count, follow.analyzing_count, follow.flag_count)
    )


def retry_ended_email(attempt: RetryAttempt) -> tuple[str, str]:
    """The subject and text body telling the requester how the new import ended."""
    follow = attempt.follow
    assert follow is not None, "an ended retry has its follow-up"
    comparison = attempt.compared
    context = {
        "attempt": attempt,
        "follow": follow,
        "comparison": comparison,
        "retry_url": settings.DASHBOARD_URL.rstrip("/") + attempt.get_absolute_url(),
        "counts": _counts(follow),
        "groups": compare.by_message(comparison.rows) if comparison else [],
    }
    subject = render_to_string("kickouts/email/retry_ended_subject.txt", context)
    body = render_to_string("kickouts/email/retry_ended.txt", context)
    return " ".join(subject.split()), body


def bulk_ended_email(bulk: BulkRetry) -> tuple[str, str]:
    """The subject and text body telling the requester how a bulk retry's imports ended."""
    summary = summarize(bulk)
    context = {
        "bulk": bulk,
        "summary": summary,
        "attention": needs_attention(bulk),
        "bulk_url": settings.DASHBOARD_URL.rstrip("/") + bulk.get_absolute_url(),
    }
    subject = render_to_string("kickouts/email/bulk_ended_subject.txt", context)
    body = render_to_string("kickouts/email/bulk_ended.txt", context)
    return " ".join(subject.split()), body


def deliver(user: Any, subject: str, body: str) -> Delivery:
    """Send one email to `user`, unless they have no address or turned these emails off."""
    if not user.email:
        return Delivery(False, False, "Not emailed: the requester has no email address.")
    if not UserSettings.of(user).email_when_retry_ends:
        return Delivery(False, False, "Not emailed: the requester turned these emails off.")
    try:
        send_mail(subject, body, None, [user.email])
    except (OSError, smtplib.SMTPException) as exc:
        return Delivery(False, True, f"Email failed: {type(exc).__name__}")
    return Delivery(True, False, f"Emailed to {user.email}.")
