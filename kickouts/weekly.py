"""The weekly summary email to supervisors who asked for it ("Your settings").

Every Monday at SEND_HOUR (the site's time zone) each opted-in supervisor's summary of the week
is due: one `WeeklySummary` row per supervisor and week (a unique pair, so several workers make
it once), claimed by the sweep with a conditional UPDATE of its `due_at` (kickouts/sweeps.py:
one queued sweep that enqueues itself again for the next Monday), sent, and recorded. A worker
that dies with a claim leaves the row to come due again when the claim's lease ends: the email
goes out once (twice only if it died in the instant between the mail server's acceptance and
the record).
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import F, Min, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_tasks import TaskContext, task

from . import sweeps
from .overview import start_of, week_summary
from .overview_models import WeeklySummary

logger = logging.getLogger(__name__)

SEND_HOUR = 7  # Monday morning, the site's time zone
# A claim lasts the email's time budget and a little more.
LEASE = timedelta(minutes=5)
ATTEMPTS = 4
AGAIN_AFTER = timedelta(minutes=10)


def week_of(now: datetime) -> date:
    """The Monday of `now`'s week (the site's time zone)."""
    today = timezone.localtime(now).date()
    return today - timedelta(days=today.weekday())


def send_time(monday: date) -> datetime:
    return start_of(monday) + timedelta(hours=SEND_HOUR)


def next_send_time(now: datetime) -> datetime:
    this_week = send_time(week_of(now))
    return this_week if now < this_week else this_week + timedelta(days=7)


def recipients():
    """Active supervisors with an email address who asked for the summary."""
    opted_in = get_user_model().objects.filter(
        is_active=True, dashboard_settings__weekly_summary=True
    )
    return [
        user
        for user in opted_in.exclude(email="").order_by("pk")
        if user.has_perm("kickouts.view_all_retries")
    ]


def make_due(now: datetime, *, early: bool = False) -> int:
    """This week's rows, due now, once its sending time has come (or `early`, by hand);
    rows made before are left as they are. Returns how many were made."""
    week = week_of(now)
    if now < send_time(week) and not early:
        return 0
    made = WeeklySummary.objects.bulk_create(
        [WeeklySummary(user=user, week=week, due_at=now) for user in recipients()],
        ignore_conflicts=True,
    )
    return len(made)


def claim_due(now: datetime) -> list[WeeklySummary]:
    """This week's summaries due to be sent, each claimed by moving its `due_at` to the end of
    the lease: only the sweep whose UPDATE changed the row has it."""
    make_due(now)
    claimed = []
    due = WeeklySummary.objects.filter(due_at__lte=now, sent_at__isnull=True).order_by("due_at")
    for row in due.select_related("user")[:100]:
        lease = now + LEASE
        if WeeklySummary.objects.filter(pk=row.pk, due_at=row.due_at).update(due_at=lease):
            row.due_at = lease
            claimed.append(row)
    return claimed


def next_due(now: datetime | None = None) -> datetime:
    """The earliest unsent row's due time, or the next Monday's sending time."""
    now = now or timezone.now()
    due = WeeklySummary.objects.filter(sent_at__isnull=True).aggregate(at=Min("due_at"))["at"]
    upcoming = next_send_time(now)
    return min(due, upcoming) if due is not None else upcoming


@dataclass(frozen=True)
class Email:
    subject: str
    body: str


def summary_email(user, now: datetime | None = None) -> Email:
    """The subject and text of `user`'s summary of the week up to `now`."""
    summary = week_summary(user, now)
    context = {
        "user": user,
        "summary": summary,
        "overview_url": settings.DASHBOARD_URL.rstrip("/") + reverse("overview"),
    }
    subject = render_to_string("kickouts/email/weekly_summary_subject.txt", context)
    body = render_to_string("kickouts/email/weekly_summary.txt", context)
    return Email(" ".join(subject.split()), body)


def _send(row: WeeklySummary) -> None:
    """Send one claimed summary and record it (or its failure, to try again later)."""
    mine = WeeklySummary.objects.filter(pk=row.pk, due_at=row.due_at)
    email = summary_email(row.user)
    try:
        send_mail(email.subject, email.body, None, [row.user.email])
    except (OSError, smtplib.SMTPException) as exc:
        logger.warning("Weekly summary of %s for %s failed: %s", row.week, row.user, exc)
        again = row.attempts + 1 < ATTEMPTS
        mine.update(
            attempts=F("attempts") + 1,
            note=f"Email failed: {type(exc).__name__}",
            due_at=timezone.now() + AGAIN_AFTER * (row.attempts + 1) if again else None,
        )
        return
    mine.update(sent_at=timezone.now(), due_at=None, note=f"Emailed to {row.user.email}.")


@task(takes_context=True)
def send_due(context: TaskContext) -> str:
    """The weekly sweep, as the worker runs it (see `sweep`)."""
    return sweep(str(context.task_result.id))


def sweep(me: str | None = None) -> str:
    """Claim the summaries due, send them, and have the next sweep queued for the next due
    time. `me` is the queued sweep's id (None: a run by hand, which always goes ahead)."""
    claimed = sweeps.begin(send_due, me, claim_due, next_due)
    if claimed is None:
        return "another sweep is scheduled"
    for row in claimed:
        _send(row)
    sweeps.finish(send_due, next_due())
    return f"sent {len(claimed)} weekly summar{'y' if len(claimed) == 1 else 'ies'}"


def wake() -> bool:
    """Make sure a weekly sweep is queued for the next sending time (one lost between its
    dequeue and its successor's enqueue is started again)."""
    return sweeps.wake(send_due, next_due())


def sent_this_week(now: datetime | None = None) -> list[WeeklySummary]:
    week = week_of(now or timezone.now())
    return list(WeeklySummary.objects.filter(week=week).filter(~Q(sent_at=None)))
