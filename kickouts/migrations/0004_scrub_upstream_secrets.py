"""Replace the configured API key in retry records written before the client scrubbed it.

Error answers that echoed the request headers were stored verbatim in `upstream_message`
(and a task's message in `new_task_message`). Only the key configured now can be found:
an older key is unknown to this migration.
"""

from django.conf import settings
from django.db import migrations
from django.db.models import Q

# The app's one scrubber (standard library only, no models): what the client does to every
# answer now, done once to what was stored before.
from kickouts.scrubbing import Scrubber

TEXT_FIELDS = (
    "upstream_message",
    "new_task_message",
    "new_task_status",
    "new_task_batch_code",
    "batch_code",
    "import_note",
    "source_status",
)


def scrub_key(apps, schema_editor):
    key = settings.ENERGYCAP_API_KEY
    if not key:
        return
    scrubber = Scrubber([key])
    RetryAttempt = apps.get_model("kickouts", "RetryAttempt")
    holds_key = Q()
    for name in TEXT_FIELDS:
        holds_key |= Q(**{f"{name}__contains": key})
    for attempt in RetryAttempt.objects.filter(holds_key).iterator():
        for name in TEXT_FIELDS:
            setattr(attempt, name, scrubber.text(getattr(attempt, name)))
        attempt.save(update_fields=list(TEXT_FIELDS))


class Migration(migrations.Migration):
    dependencies = [
        ("kickouts", "0003_retryattempt_retry_running_time"),
    ]

    operations = [
        migrations.RunPython(scrub_key, migrations.RunPython.noop, elidable=True),
    ]
