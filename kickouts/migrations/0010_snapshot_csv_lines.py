"""Each stored import keeps its kickout rows as CSV lines too: the downloads stream those."""

from django.db import migrations, models

from kickouts import spreadsheet


def write_csv_lines(apps, schema_editor):
    """The lines of the imports stored before this migration, from their rows."""
    ImportSnapshot = apps.get_model("kickouts", "ImportSnapshot")
    KickoutRow = apps.get_model("kickouts", "KickoutRow")
    for snapshot in ImportSnapshot.objects.filter(state="ready").iterator(chunk_size=100):
        cells = KickoutRow.objects.filter(snapshot=snapshot).order_by("position")
        snapshot.csv_lines = "".join(
            spreadsheet.lines(
                [
                    str(snapshot.task_id or ""),
                    *(spreadsheet.guard(row.get(c)) for c in snapshot.columns or []),
                ]
                for row in cells.values_list("cells", flat=True).iterator()
            )
        )
        snapshot.save(update_fields=["csv_lines"])


class Migration(migrations.Migration):
    dependencies = [
        ("kickouts", "0009_before_after"),
    ]

    operations = [
        migrations.AddField(
            model_name="importsnapshot",
            name="csv_lines",
            field=models.TextField(blank=True),
        ),
        migrations.RunPython(write_csv_lines, migrations.RunPython.noop, elidable=True),
    ]
