from django.conf import settings
from django.core.management.base import BaseCommand

from kickouts.sandbox.server import serve


class Command(BaseCommand):
    help = "Run the built-in EnergyCAP sandbox alone, in the foreground."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.ENERGYCAP_SANDBOX_PORT)
        parser.add_argument("--task-seconds", type=float, default=20.0)
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, **options):
        serve(
            host=options["host"],
            port=options["port"],
            api_key=settings.ENERGYCAP_API_KEY or settings.ENERGYCAP_SANDBOX_KEY,
            task_seconds=options["task_seconds"],
            seed=options["seed"],
        )
