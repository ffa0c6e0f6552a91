"""The follow-up, the comparison and the sweep schedule become records of their own.

What followed a retry's new task (the last reading, the schedule, the email) moves from
`RetryAttempt` to one `FollowUp` row per followed retry, the before and after to one
`Comparison` row, and the bulk sender's step guard to a due time on `BulkRetry`. Written
against the historical models only (no app code), both ways.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


READING = {
    # FollowUp field: the RetryAttempt field it came from
    "status": "new_task_status",
    "finished": "new_task_finished",
    "begin_date": "new_task_begin_date",
    "end_date": "new_task_end_date",
    "success_count": "new_task_success_count",
    "analyzing_count": "new_task_analyzing_count",
    "flag_count": "new_task_flag_count",
    "batch_id": "new_task_batch_id",
    "batch_code": "new_task_batch_code",
    "message": "new_task_message",
    "read_at": "new_task_checked_at",
    "checked_at": "follow_checked_at",
    "succeeded_at": "follow_succeeded_at",
    "failures": "follow_failures",
    "error": "follow_error",
    "stopped_reason": "follow_stopped_reason",
    "notified_at": "notified_at",
    "notification": "notification",
}
COMPARED = {
    "state": "compare_state",
    "compared_at": "compared_at",
    "error": "compare_error",
    "before_count": "before_count",
    "fixed_count": "fixed_count",
    "still_count": "still_count",
    "new_count": "new_count",
    "rows": "compare_rows",
}
BATCH = 2000


def _state(retry) -> str:
    if retry.follow_state == "stopped":
        return "stopped"
    if retry.follow_state == "ended" or retry.new_task_finished:
        # An end whose email never went out is reported (compared, emailed) by the sweep.
        return "ended" if retry.notified_at or retry.follow_state != "ended" else "reporting"
    return "following"  # every submitted retry is followed now, also those made before


def carry_over(apps, schema_editor):
    RetryAttempt = apps.get_model("kickouts", "RetryAttempt")
    FollowUp = apps.get_model("kickouts", "FollowUp")
    Comparison = apps.get_model("kickouts", "Comparison")
    BulkRetry = apps.get_model("kickouts", "BulkRetry")
    now = django.utils.timezone.now()
    follows, comparisons = [], []
    submitted = RetryAttempt.objects.filter(outcome="submitted").exclude(new_task_guid="")
    for retry in submitted.order_by("pk").iterator(chunk_size=BATCH):
        state = _state(retry)
        follow = FollowUp(
            retry_id=retry.pk,
            task_guid=retry.new_task_guid,
            state=state,
            started_at=retry.answered_at or retry.requested_at,
            due_at=now if state in ("following", "reporting") else None,
            **{new: getattr(retry, old) for new, old in READING.items()},
        )
        follows.append(follow)
        if len(follows) >= BATCH:
            FollowUp.objects.bulk_create(follows)
            follows = []
    FollowUp.objects.bulk_create(follows)
    for retry in RetryAttempt.objects.exclude(compare_state="").order_by("pk").iterator(BATCH):
        comparisons.append(
            Comparison(
                retry_id=retry.pk,
                **{new: getattr(retry, old) for new, old in COMPARED.items()},
            )
        )
        if len(comparisons) >= BATCH:
            Comparison.objects.bulk_create(comparisons)
            comparisons = []
    Comparison.objects.bulk_create(comparisons)
    # A bulk still sending is due at once: the bulk sweep takes it from here.
    BulkRetry.objects.filter(state="sending").update(due_at=now)


def carry_back(apps, schema_editor):
    RetryAttempt = apps.get_model("kickouts", "RetryAttempt")
    FollowUp = apps.get_model("kickouts", "FollowUp")
    Comparison = apps.get_model("kickouts", "Comparison")
    for follow in FollowUp.objects.order_by("pk").iterator(BATCH):
        values = {old: getattr(follow, new) for new, old in READING.items()}
        state = {"reporting": "ended"}.get(follow.state, follow.state)
        RetryAttempt.objects.filter(pk=follow.retry_id).update(follow_state=state, **values)
    for comparison in Comparison.objects.order_by("pk").iterator(BATCH):
        values = {old: getattr(comparison, new) for new, old in COMPARED.items()}
        RetryAttempt.objects.filter(pk=comparison.retry_id).update(**values)


class Migration(migrations.Migration):

    dependencies = [
        ('kickouts', '0010_snapshot_csv_lines'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Comparison',
            fields=[
                ('retry', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='comparison', serialize=False, to='kickouts.retryattempt')),
                ('state', models.CharField(choices=[('compared', 'Compared'), ('failed', 'New import failed'), ('error', 'Could not compare')], max_length=10)),
                ('compared_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('error', models.TextField(blank=True)),
                ('before_count', models.PositiveIntegerField(blank=True, null=True)),
                ('fixed_count', models.PositiveIntegerField(blank=True, null=True)),
                ('still_count', models.PositiveIntegerField(blank=True, null=True)),
                ('new_count', models.PositiveIntegerField(blank=True, null=True)),
                ('rows', models.JSONField(blank=True, default=list)),
            ],
        ),
        migrations.CreateModel(
            name='FollowUp',
            fields=[
                ('retry', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='follow_up', serialize=False, to='kickouts.retryattempt')),
                ('task_guid', models.CharField(max_length=36)),
                ('state', models.CharField(choices=[('following', 'Following'), ('reporting', 'Reporting'), ('ended', 'Ended'), ('stopped', 'Stopped following')], max_length=20)),
                ('started_at', models.DateTimeField()),
                ('due_at', models.DateTimeField(blank=True, null=True)),
                ('failures', models.PositiveIntegerField(default=0, help_text='Failed asks in a row.')),
                ('error', models.TextField(blank=True)),
                ('checked_at', models.DateTimeField(blank=True, help_text='Last asked.', null=True)),
                ('succeeded_at', models.DateTimeField(blank=True, help_text='Last answered.', null=True)),
                ('stopped_reason', models.TextField(blank=True)),
                ('read_at', models.DateTimeField(blank=True, null=True)),
                ('status', models.CharField(blank=True, max_length=100)),
                ('finished', models.BooleanField(default=False)),
                ('begin_date', models.DateTimeField(blank=True, null=True)),
                ('end_date', models.DateTimeField(blank=True, null=True)),
                ('success_count', models.IntegerField(blank=True, null=True)),
                ('analyzing_count', models.IntegerField(blank=True, null=True)),
                ('flag_count', models.IntegerField(blank=True, null=True)),
                ('batch_id', models.IntegerField(blank=True, null=True)),
                ('batch_code', models.CharField(blank=True, max_length=255)),
                ('message', models.TextField(blank=True)),
                ('compare_attempts', models.PositiveSmallIntegerField(default=0)),
                ('notified_at', models.DateTimeField(blank=True, null=True)),
                ('notification', models.CharField(blank=True, max_length=200)),
            ],
        ),
        migrations.CreateModel(
            name='Sweep',
            fields=[
                ('name', models.CharField(max_length=40, primary_key=True, serialize=False)),
                ('task_id', models.CharField(blank=True, max_length=64)),
                ('run_at', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.AddField(
            model_name='bulkretry',
            name='due_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='bulkretry',
            name='email_due_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='bulkretry',
            name='notification',
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name='bulkretry',
            name='notified_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='retryattempt',
            name='new_task_id',
            field=models.IntegerField(blank=True, null=True),
        ),
        migrations.RunPython(carry_over, carry_back, elidable=False),
        migrations.RemoveIndex(
            model_name='retryattempt',
            name='retry_final_time',
        ),
        migrations.RemoveIndex(
            model_name='retryattempt',
            name='retry_running_time',
        ),
        migrations.RemoveIndex(
            model_name='retryattempt',
            name='retry_follow_lease',
        ),
        migrations.RemoveIndex(
            model_name='retryattempt',
            name='retry_follow_checked',
        ),
        migrations.RemoveIndex(
            model_name='retryattempt',
            name='retry_still_kicking_time',
        ),
        migrations.RemoveField(
            model_name='bulkretry',
            name='busy_until',
        ),
        migrations.RemoveField(
            model_name='bulkretry',
            name='step_task_id',
        ),
        migrations.RemoveField(
            model_name='bulkretry',
            name='worker_id',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='before_count',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='compare_error',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='compare_rows',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='compare_state',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='compared_at',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='fixed_count',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_busy_until',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_checked_at',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_error',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_failures',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_lease_until',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_next_at',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_state',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_stopped_reason',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_succeeded_at',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follow_worker_id',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='follower_task_id',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_count',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_analyzing_count',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_batch_code',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_batch_id',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_begin_date',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_checked_at',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_end_date',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_finished',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_flag_count',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_message',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_status',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='new_task_success_count',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='notification',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='notified_at',
        ),
        migrations.RemoveField(
            model_name='retryattempt',
            name='still_count',
        ),
        migrations.AddIndex(
            model_name='bulkretry',
            index=models.Index(condition=models.Q(('state', 'sending')), fields=['due_at'], name='bulk_due'),
        ),
        migrations.AddIndex(
            model_name='bulkretry',
            index=models.Index(condition=models.Q(('email_due_at__isnull', False)), fields=['email_due_at'], name='bulk_email_due'),
        ),
        migrations.AddIndex(
            model_name='retryattempt',
            index=models.Index(condition=models.Q(('outcome', 'submitting')), fields=['requested_at'], name='retry_submitting'),
        ),
        migrations.AddIndex(
            model_name='comparison',
            index=models.Index(condition=models.Q(('still_count__gt', 0)), fields=['retry'], name='comparison_still'),
        ),
        migrations.AddIndex(
            model_name='followup',
            index=models.Index(condition=models.Q(('state__in', ['following', 'reporting'])), fields=['due_at'], name='follow_up_due'),
        ),
        migrations.AddIndex(
            model_name='followup',
            index=models.Index(fields=['-checked_at'], name='follow_up_checked'),
        ),
        migrations.AddIndex(
            model_name='followup',
            index=models.Index(fields=['status', 'finished'], name='follow_up_status'),
        ),
    ]
