"""Each stored import kept its kickout rows as CSV lines too (dropped again by 0011).

It used to write the lines of imports stored before it with the app's own CSV code; a
migration must not import app modules (they change after it is written), and 0011 drops the
column, so it now only adds the column.
"""

from django.db import migrations, models


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
    ]
