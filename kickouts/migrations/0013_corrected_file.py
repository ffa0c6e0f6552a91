"""Corrected files (issue 22): a retry's kind, its source imports and its stored file.

Every retry gets a `RetrySource` row per source import, with a copy of its outcome, where the
per-source constraints live (one import in flight per source, one per duplicate sequence):
the retries stored before this get theirs here, in one INSERT … SELECT (no app code). The
constraints are added after the rows: the old rows already satisfy `RetryAttempt`'s own
constraints, which are the same rules for one source.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('kickouts', '0012_waiting_for_decision'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='CorrectedFile',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('form_token', models.UUIDField(unique=True)),
                ('uploaded_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('file', models.FileField(max_length=255, upload_to='corrected-files/%Y/%m/')),
                ('name', models.CharField(max_length=200)),
                ('size', models.PositiveBigIntegerField()),
                ('sha256', models.CharField(max_length=64)),
                ('kind', models.CharField(max_length=8)),
                ('rows', models.PositiveIntegerField()),
                ('files', models.JSONField(default=list)),
                ('profile_code', models.CharField(blank=True, max_length=255)),
                ('profile_name', models.CharField(blank=True, max_length=255)),
            ],
        ),
        migrations.CreateModel(
            name='RetrySource',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('task_guid', models.CharField(max_length=36)),
                ('task_id', models.IntegerField(blank=True, null=True)),
                ('duplicate_sequence', models.PositiveIntegerField(default=0)),
                ('outcome', models.CharField(max_length=20)),
            ],
            options={
                'ordering': ['id'],
            },
        ),
        migrations.AddField(
            model_name='retryattempt',
            name='kind',
            field=models.CharField(choices=[('reimport', 'Re-import'), ('corrected_file', 'Corrected file')], default='reimport', max_length=20),
        ),
        migrations.AddIndex(
            model_name='retryattempt',
            index=models.Index(condition=models.Q(('kind', 'corrected_file')), fields=['-requested_at', '-id'], name='retry_corrected_time'),
        ),
        migrations.AddField(
            model_name='correctedfile',
            name='retry',
            field=models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='corrected_file', to='kickouts.retryattempt'),
        ),
        migrations.AddField(
            model_name='correctedfile',
            name='uploaded_by',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='retrysource',
            name='retry',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='sources', to='kickouts.retryattempt'),
        ),
        migrations.AddIndex(
            model_name='correctedfile',
            index=models.Index(condition=models.Q(('retry', None)), fields=['uploaded_at'], name='corrected_unsent'),
        ),
        migrations.AddIndex(
            model_name='correctedfile',
            index=models.Index(fields=['sha256'], name='corrected_file_sha256'),
        ),
        migrations.RunSQL(
            sql=(
                "INSERT INTO kickouts_retrysource "
                "(retry_id, task_guid, task_id, duplicate_sequence, outcome) "
                "SELECT id, source_task_guid, source_task_id, duplicate_sequence, outcome "
                "FROM kickouts_retryattempt ORDER BY id"
            ),
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AddIndex(
            model_name='retrysource',
            index=models.Index(fields=['task_guid'], name='retry_source_task'),
        ),
        migrations.AddConstraint(
            model_name='retrysource',
            constraint=models.UniqueConstraint(condition=models.Q(('outcome', 'submitting')), fields=('task_guid',), name='one_import_in_flight_per_source'),
        ),
        migrations.AddConstraint(
            model_name='retrysource',
            constraint=models.UniqueConstraint(condition=models.Q(('outcome__in', ['submitting', 'submitted', 'unknown'])), fields=('task_guid', 'duplicate_sequence'), name='one_import_per_source_sequence'),
        ),
    ]
