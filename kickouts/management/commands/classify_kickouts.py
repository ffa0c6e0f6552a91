"""Store each kickout row's cause again, with the overview's per-cause counts."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from kickouts.overview import classify_stored


class Command(BaseCommand):
    help = (
        "Store the cause of every stored kickout row (kickouts/causes.py), and the per-cause "
        "counts of every stored import and before-and-after, from the causes table as it is "
        "now. Run it once after upgrading to the overview, and after changing the causes "
        "table; rows stored from then on get their cause as they are stored."
    )

    def handle(self, *args, **options):
        messages, comparisons = classify_stored()
        self.stdout.write(
            f"{messages} distinct message(s) classified; {comparisons} comparison(s) counted."
        )
