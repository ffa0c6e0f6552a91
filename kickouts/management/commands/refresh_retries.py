from datetime import timedelta

from django.core.management.base import BaseCommand

from kickouts import status
from kickouts.models import RetryAttempt
from kickouts.tasks import adopt_lost_followers


class Command(BaseCommand):
    help = (
        "Bring every unfinished retry up to date with its new task's status in EnergyCAP, "
        "the way the background follower does (a worker normally keeps them current; run "
        "this by hand or from cron when no worker runs)."
    )

    def handle(self, *args, **options):
        expired = RetryAttempt.objects.expire_stale_submissions(timedelta(minutes=5))
        if expired:
            self.stdout.write(f"{expired} stale submission(s) marked outcome unknown.")
        updated = finished = failed = 0
        for attempt in RetryAttempt.objects.unfinished().iterator():
            # The follower's own code: fetch, record, and on the end tell the requester.
            reading = status.fetch_task_status(attempt.new_task_guid)
            status.record_reading(attempt, reading, follower=False)
            if not reading.ok:
                failed += 1
                self.stderr.write(f"Retry #{attempt.pk}: {reading.error}")
                continue
            updated += 1
            finished += attempt.new_task_finished
        rescued = adopt_lost_followers()
        self.stdout.write(
            f"Checked {updated + failed} unfinished retr{'y' if updated + failed == 1 else 'ies'}: "
            f"{updated} updated ({finished} now finished), {failed} could not be checked."
            + (f" {rescued} lost follower(s) enqueued again." if rescued else "")
        )
        if failed:
            raise SystemExit(1)
