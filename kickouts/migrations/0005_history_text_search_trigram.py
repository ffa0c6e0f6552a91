"""The history's text search, indexed on PostgreSQL: a trigram index on the import note.

`import_note__icontains` compiles to `UPPER(import_note::text) LIKE UPPER('%term%')`, which no
b-tree index can answer: without this index a search for a rare word reads the whole table.
A GIN trigram index on that same expression answers it for terms of three characters or more.
Other databases (SQLite for one person) have no such index; there this step does nothing.
"""

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations
from django.db.models.functions import Upper

NOTE_TRIGRAMS = GinIndex(
    OpClass(Upper("import_note"), name="gin_trgm_ops"), name="retry_note_trgm"
)


class TrigramExtensionOnPostgreSQL(TrigramExtension):
    """pg_trgm. Django's CreateExtension skips other databases going forwards, but going
    backwards it asks pg_extension on any database (SQLite has none)."""

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


def add_note_trigrams(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # Concurrently: retries can still be recorded while a big table is indexed.
    schema_editor.add_index(apps.get_model("kickouts", "RetryAttempt"), NOTE_TRIGRAMS, concurrently=True)


def remove_note_trigrams(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.remove_index(apps.get_model("kickouts", "RetryAttempt"), NOTE_TRIGRAMS, concurrently=True)


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("kickouts", "0004_scrub_upstream_secrets"),
    ]

    operations = [
        TrigramExtensionOnPostgreSQL(),
        migrations.RunPython(add_note_trigrams, remove_note_trigrams, elidable=False),
    ]
