"""NUL characters never reach the database: ours get a clear 400, EnergyCAP's are removed where
its text enters (the client's scrubbing), and one import that cannot be stored never keeps the
others of its batch from loading.

PostgreSQL refuses U+0000 in text and jsonb (psycopg's DataError, a 500 before this); `make
test` runs this file on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from django.db import DataError, connection, transaction
from django.urls import reverse

from kickouts import snapshots
from kickouts.models import HandledChange, HandledReason, ImportSnapshot, Outcome, SnapshotState
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID
from kickouts.scrubbing import Scrubber

from .factories import make_retry
from .test_queue import QUINN, add_import

NUL_MESSAGE = "Meter\x00 not found for account"
CLEAN_MESSAGE = "Meter not found for account"


def refused(response, field: str) -> bool:
    """A 400 page that names the field holding the NUL, and says how to get the typing back."""
    page = response.content.decode()
    label = field.replace("_", " ").capitalize()
    return (
        response.status_code == 400
        and f"“{label}” (<code>{field}</code>)" in page
        and "NUL" in page
        and ("the form keeps what you typed" in page or "from the address" in page)
    )


# --- our own input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "query", "field"),
    [
        ("queue", {"user": "\x00"}, "user"),
        ("queue_csv", {"user": "\x00"}, "user"),
        ("queue_group", {"message": "\x00"}, "message"),
        ("queue_csv", {"message": "Account\x00"}, "message"),
        ("history", {"q": "\x00"}, "q"),
        ("task_list", {"user": "Quinn\x00"}, "user"),
    ],
)
def test_a_nul_in_the_address_is_a_clear_400(clerk_client, url, query, field):
    """`?user=%00` and friends: 400 naming the parameter, never a database error."""
    assert refused(clerk_client.get(reverse(url), query), field)


@pytest.fixture
def handled_import(db, clerk):
    """The API user's import, stored and marked handled by Carla."""
    snapshot = ImportSnapshot.objects.create(
        task_guid=API_USER_KICKOUT_TASK_GUID, task_id=47001, state=SnapshotState.READY
    )
    snapshot.mark_handled(user=clerk, reason=HandledReason.OTHER, note="First look")
    return snapshot


def test_a_nul_in_a_note_of_the_handled_and_reopen_forms_changes_nothing(
    clerk_client, handled_import
):
    """Reopen, mark handled, mark many: 400 naming the note, and no change recorded."""
    guid = handled_import.task_guid
    posts = [
        (reverse("reopen", args=[guid]), {"note": "oops\x00"}),
        (reverse("mark_handled", args=[guid]), {"reason": "other", "note": "\x00"}),
        (reverse("mark_many_handled"), {"task": guid, "reason": "other", "note": "x\x00"}),
    ]
    for url, data in posts:
        assert refused(clerk_client.post(url, data), "note"), url
    assert HandledChange.objects.count() == 1
    handled_import.refresh_from_db()
    assert handled_import.handled_note == "First look"


def test_a_nul_in_a_reconcile_note_records_no_decision(supervisor_client, clerk):
    """A supervisor's note with a NUL: 400, and the retry is still waiting for a decision."""
    attempt = make_retry(clerk, outcome=Outcome.UNKNOWN)
    response = supervisor_client.post(
        reverse("reconcile_retry", args=[attempt.pk]),
        {"action": "none_started", "note": "checked\x00"},
    )
    assert refused(response, "note")
    attempt.refresh_from_db()
    assert attempt.outcome == Outcome.UNKNOWN and not attempt.reconcile_decisions.exists()


def test_a_nul_in_the_retry_form_is_refused_before_energycap_is_asked(clerk_client, sandbox):
    """The retry form's note, plain or htmx: 400, and EnergyCAP saw nothing of it."""
    since = sandbox.log_page()["next"]
    url = reverse("retry_form", args=[API_USER_KICKOUT_TASK_GUID])
    data = {"action": "review", "batch_mode": "new self-contained batch", "import_note": "\x00"}
    assert refused(clerk_client.post(url, data), "import_note")
    assert refused(clerk_client.post(url, data, HTTP_HX_REQUEST="true"), "import_note")
    assert sandbox.log(since=since) == []


def test_a_nul_in_a_field_name_is_refused_too(clerk_client):
    """Not only values: a name with a NUL is named (escaped) and refused."""
    response = clerk_client.get(reverse("queue"), {"us\x00er": "x"})
    assert refused(response, "us\\0er")


@pytest.mark.postgres
def test_postgresql_refuses_a_nul_so_the_guard_is_not_vacuous(handled_import):
    """Without the refusal above, this is what a NUL did: PostgreSQL's DataError."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite stores NUL; `make test` runs this on PostgreSQL")
    with pytest.raises(DataError), transaction.atomic():
        list(ImportSnapshot.objects.filter(user_full_name="\x00"))


# --- EnergyCAP's text ------------------------------------------------------------------------


def test_the_scrubber_removes_nul_before_it_replaces_secrets():
    """A key split by a NUL is still redacted, and NULs leave keys and values alike."""
    scrubber = Scrubber(["s3cret-key"])
    assert scrubber.text("key s3cret\x00-key!") == "key [redacted]!"
    assert scrubber.data({"Meter\x00 Code": ["a\x00b", ("c\x00",)]}) == {
        "Meter Code": ["ab", ("c",)]
    }
    assert scrubber.needs_scrubbing('{"a": "b\\u0000"}')
    assert not scrubber.needs_scrubbing('{"a": "b"}')


@pytest.fixture
def import_with_nuls(sandbox, db):
    """Quinn's import whose message, rows, file name and note carry NUL characters."""
    return add_import(
        sandbox,
        [],
        kickout_rows=[
            {"message": NUL_MESSAGE, "accountCode": "AC\x00-1", "meterCode": "M-1"},
            {"message": NUL_MESSAGE, "accountCode": "AC-2", "meterCode": "M\x00-2"},
        ],
        file_name="bills\x00.xlsx",
        task_note="Nov\x00 bills",
    )["taskGUId"].lower()


def test_upstream_nuls_are_removed_where_energycap_text_enters(
    clerk_client, supervisor_client, import_with_nuls
):
    """Task page, stored rows, queue, group, CSV, bulk review and task list: no NUL, no 500."""
    guid = import_with_nuls
    task_page = clerk_client.get(reverse("task_detail", args=[guid]))
    assert task_page.status_code == 200
    assert CLEAN_MESSAGE in task_page.content.decode()
    snapshot = ImportSnapshot.objects.get(task_guid=guid)
    assert snapshot.state == SnapshotState.READY and snapshot.file_name == "bills.xlsx"
    rows = list(snapshot.rows.order_by("position"))
    assert [(r.message, r.account_code, r.meter_code) for r in rows] == [
        (CLEAN_MESSAGE, "AC-1", "M-1"),
        (CLEAN_MESSAGE, "AC-2", "M-2"),
    ]
    assert "\x00" not in str(rows[0].cells)
    queue = clerk_client.get(reverse("queue"), {"user": QUINN})
    assert [g["message"] for g in queue.context["groups"]] == [CLEAN_MESSAGE]
    group = clerk_client.get(reverse("queue_group"), {"user": QUINN, "message": CLEAN_MESSAGE})
    assert group.status_code == 200 and group.context["page"].paginator.count == 2
    download = clerk_client.get(reverse("queue_csv"), {"user": QUINN})
    assert b"\x00" not in b"".join(download.streaming_content)
    review = clerk_client.post(reverse("bulk_form"), {"task": guid})
    assert review.status_code == 200 and CLEAN_MESSAGE in review.content.decode()
    listing = supervisor_client.get(reverse("task_list"), {"user": QUINN})
    assert listing.status_code == 200 and "Nov bills" in listing.content.decode()


def test_the_background_snapshots_load_an_import_with_nuls_beside_the_others(
    sandbox, import_with_nuls
):
    """The worker's path (register, then take_snapshots): both imports load, cleaned."""
    other = add_import(sandbox, ["Account not found"])["taskGUId"].lower()
    registered, stored = snapshots.snapshot_period(30, QUINN)
    assert (registered, stored) == (2, 2)
    states = dict(ImportSnapshot.objects.values_list("task_guid", "state"))
    assert states == {import_with_nuls: SnapshotState.READY, other: SnapshotState.READY}
    messages = set(
        ImportSnapshot.objects.get(task_guid=import_with_nuls).rows.values_list(
            "message", flat=True
        )
    )
    assert messages == {CLEAN_MESSAGE}


# --- one import that cannot be stored ----------------------------------------------------------


POISON = "Poisoned row " + uuid.uuid4().hex


def database_refuses_rows_with(marker: str):
    """A database that refuses one import's rows, as PostgreSQL refused a NUL: on PostgreSQL
    the rows really carry one (its own DataError), on SQLite (which stores NUL) the refusal
    is raised as PostgreSQL's driver would."""

    def poisoned(value):
        # PostgreSQL's bulk INSERT passes each column as an array (UNNEST).
        if isinstance(value, list | tuple):
            return type(value)(poisoned(item) for item in value)
        return value + "\x00" if value == marker else value

    def execute(run, sql, params, many, context):
        if sql.startswith('INSERT INTO "kickouts_kickoutrow"') and marker in str(params):
            if connection.vendor != "postgresql":
                raise DataError("A string literal cannot contain NUL (0x00) characters.")
            params = poisoned(params)
        return run(sql, params, many, context)

    return execute


def test_one_import_that_cannot_be_stored_never_stops_the_others(sandbox, db, caplog):
    """The bad one is failed with a message and logged; the rest of the batch loads."""
    bad = add_import(sandbox, [POISON], days_ago=3)["taskGUId"].lower()
    good = [
        add_import(sandbox, ["Account not found"], days_ago=d)["taskGUId"].lower()
        for d in (1, 2, 4)
    ]
    snapshots.register(snapshots.list_period(30, QUINN))
    caplog.set_level(logging.ERROR, logger="kickouts.snapshots")
    with connection.execute_wrapper(database_refuses_rows_with(POISON)):
        stored = snapshots.take_snapshots([good[0], bad, *good[1:]], max_in_flight=2)
    assert stored == 3
    states = dict(ImportSnapshot.objects.values_list("task_guid", "state"))
    assert states == {bad: SnapshotState.FAILED} | dict.fromkeys(good, SnapshotState.READY)
    failed = ImportSnapshot.objects.get(task_guid=bad)
    assert "could not store this import's kickouts (DataError)" in failed.fetch_error
    assert not failed.rows.exists()
    assert f"Kickouts of {bad} not stored" in caplog.text
    # The connection is still usable, and the next listing loads the import once it can.
    assert snapshots.take_snapshots([bad]) == 1
    assert ImportSnapshot.objects.get(task_guid=bad).state == SnapshotState.READY
