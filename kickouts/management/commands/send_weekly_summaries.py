"""Send this week's summary emails now (the worker sends them every Monday by itself)."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils import timezone

from kickouts import weekly


class Command(BaseCommand):
    help = (
        "Send this week's summary email to every supervisor who asked for it under “Your "
        "settings” and has not had it yet, now (the worker does so every Monday at "
        f"{weekly.SEND_HOUR}:00). With DEBUG on (make run) the emails are printed here. "
        "--preview prints each one without sending or recording it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--preview", action="store_true", help="print, do not send")

    def handle(self, *args, preview: bool, **options):
        people = weekly.recipients()
        if not people:
            self.stdout.write(
                "No supervisor with an email address asked for the weekly summary "
                "(“Your settings”)."
            )
            return
        if preview:
            for user in people:
                email = weekly.summary_email(user)
                self.stdout.write(f"To: {user.email}\nSubject: {email.subject}\n\n{email.body}")
            return
        now = timezone.now()
        weekly.make_due(now, early=True)
        self.stdout.write(weekly.sweep() + ".")
        for row in weekly.sent_this_week(now):
            self.stdout.write(
                f"{row.user.get_username()}: {row.note} ({row.sent_at:%Y-%m-%d %H:%M})"
            )
