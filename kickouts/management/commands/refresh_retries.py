from datetime import timedelta

from django.core.management.base import BaseCommand

from kickouts import energycap
from kickouts.energycap import EnergyCapError
from kickouts.models import RetryAttempt


class Command(BaseCommand):
    help = (
        "Bring every unfinished retry up to date with its new task's status in EnergyCAP "
        "(run it from cron, e.g. every 5 minutes)."
    )

    def handle(self, *args, **options):
        expired = RetryAttempt.objects.expire_stale_submissions(timedelta(minutes=5))
        if expired:
            self.stdout.write(f"{expired} stale submission(s) marked outcome unknown.")
        api = energycap.client()
        updated = finished = failed = 0
        for attempt in RetryAttempt.objects.unfinished().iterator():
            try:
                task = api.get_task(attempt.new_task_guid)
            except EnergyCapError as exc:
                failed += 1
                self.stderr.write(f"Retry #{attempt.pk}: {exc.message}")
                continue
            attempt.record_task_status(task)
            updated += 1
            finished += attempt.new_task_finished
        self.stdout.write(
            f"Checked {updated + failed} unfinished retr{'y' if updated + failed == 1 else 'ies'}: "
            f"{updated} updated ({finished} now finished), {failed} could not be checked."
        )
        if failed:
            raise SystemExit(1)
