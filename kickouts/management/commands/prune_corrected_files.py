"""Delete the corrected files that were reviewed but never sent, once they are old enough."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from kickouts.corrected_file_models import prune_unsent


class Command(BaseCommand):
    help = (
        "Delete uploaded corrected files that were reviewed but never sent, older than "
        f"CORRECTED_FILE_UNSENT_HOURS ({settings.CORRECTED_FILE_UNSENT_HOURS:g} hours), from "
        "storage and from the database. Sent files are kept with their retry record."
    )

    def handle(self, *args, **options):
        pruned = prune_unsent()
        self.stdout.write(f"{pruned} unsent corrected file(s) deleted.")
