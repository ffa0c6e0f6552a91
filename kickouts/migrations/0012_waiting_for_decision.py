"""A partial index of the "outcome unknown" retries waiting for a supervisor's decision.

The navigation's badge counts them on each page a supervisor opens; the index holds only
those rows (few), so the count never reads the retry table.
"""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('kickouts', '0011_follow_up_records'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='retryattempt',
            index=models.Index(condition=models.Q(('outcome', 'unknown'), ('reconciled', '')), fields=['requested_at', 'id'], name='retry_waiting_decision'),
        ),
    ]
