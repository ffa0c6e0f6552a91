from django.core.management.base import BaseCommand

from kickouts import follow_up, status
from kickouts.follow_up_models import FollowState, FollowUp
from kickouts.models import expire_stale_submissions


class Command(BaseCommand):
    help = (
        "Bring every followed retry up to date with its new task's status in EnergyCAP, the "
        "way the background sweep does (a worker normally keeps them current; run this by "
        "hand or from cron when no worker runs)."
    )

    def handle(self, *args, **options):
        expired = expire_stale_submissions()
        if expired:
            self.stdout.write(f"{len(expired)} stale submission(s) settled.")
        updated = finished = failed = 0
        for follow in FollowUp.objects.filter(state=FollowState.FOLLOWING).iterator():
            # The sweep's own code: store the reading; an end makes the report due.
            reading = status.fetch_task_status(follow.task_guid)
            follow_up.store_reading(follow, reading)
            if not reading.ok:
                failed += 1
                self.stderr.write(f"Retry #{follow.pk}: {reading.error}")
                continue
            updated += 1
            finished += follow.finished
        woken = follow_up.wake()
        total = updated + failed
        self.stdout.write(
            f"Checked {total} unfinished retr{'y' if total == 1 else 'ies'}: "
            f"{updated} updated ({finished} now finished), {failed} could not be checked."
            + (" A lost sweep was started again." if woken else "")
        )
        if failed:
            raise SystemExit(1)
