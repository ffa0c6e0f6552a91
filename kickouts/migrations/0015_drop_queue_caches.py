"""The queue's caches go (the downloads stream the stored cells, the pages query as they
are), and each period's listing from EnergyCAP gets a record the pages read."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kickouts", "0014_overview"),
    ]

    operations = [
        migrations.CreateModel(
            name="QueueListing",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("days", models.PositiveSmallIntegerField(unique=True)),
                ("asked_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("error", models.TextField(blank=True)),
            ],
        ),
        migrations.RemoveField(
            model_name="importsnapshot",
            name="csv_lines",
        ),
        migrations.RemoveField(
            model_name="importsnapshot",
            name="version",
        ),
    ]
