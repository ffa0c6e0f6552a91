"""Fill the kickout queue now: list the period's bill imports and store their kickouts."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from kickouts import snapshots
from kickouts.energycap import EnergyCapError


class Command(BaseCommand):
    help = (
        "List EnergyCAP's bill imports of the last N days, and fetch and store the kickouts "
        f"of each one that ended “Completed with kickouts” (at most {snapshots.MAX_IN_FLIGHT} "
        "requests in flight). Imports already stored are not asked for again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=30, help="period (default 30 days)")
        parser.add_argument("--user", default="", help="only imports run by this full name")

    def handle(self, *args, days: int, user: str, **options):
        try:
            registered, stored = snapshots.snapshot_period(days, user)
        except EnergyCapError as exc:
            raise CommandError(f"EnergyCAP could not be asked: {exc.message}") from exc
        self.stdout.write(f"{registered} new import(s) with kickouts; {stored} snapshot(s) stored.")
