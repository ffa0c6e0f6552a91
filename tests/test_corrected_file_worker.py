"""The whole path, with a real `manage.py db_worker`: an import whose meters could not be
resolved, a corrected file that gives the meter of some rows and not of others, followed to
its end by the worker, compared, and emailed to the clerk who sent it."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from kickouts.follow_up_models import FollowState, FollowUp
from kickouts.models import Kind, RetryAttempt
from kickouts.queue_models import HandledReason, ImportSnapshot

from . import test_worker
from .corrected_helpers import METER_NOT_FOUND, csv_bytes, form_url, kickout_rows, review_and_send
from .test_worker import body_of, sent_emails, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

mail_dir = test_worker.mail_dir
start_worker = test_worker.start_worker


def test_a_corrected_file_that_fixes_some_meters_is_followed_compared_and_emailed(
    clerk, clerk_client, sandbox, start_worker, mail_dir
):
    """Carla's import kicked out four bills whose meter could not be resolved. She gives the
    meter of two in the file and imports it: the worker follows the new import, compares it
    with the old kickouts (two fixed, two still kicked out) and emails her once."""
    clerk.email = "carla@example.com"
    clerk.save()
    source = sandbox.add_task(kickout_messages=[METER_NOT_FOUND], rows_per_message=4)
    guid = source["taskGUId"].lower()
    rows = kickout_rows(sandbox, guid)
    assert [row["Kickout Message"] for row in rows] == [METER_NOT_FOUND] * 4
    meters = {a["accountCode"]: a["meters"] for a in sandbox.accounts()}
    for row in rows[:2]:
        row["Meter Code"] = meters[row["Account Code"]][0]
    # The dashboard's way in: the task page's link, then the form.
    assert form_url(guid) in clerk_client.get(reverse("task_detail", args=[guid])).content.decode()
    sent = review_and_send(
        clerk_client, [guid], "meters-fixed.csv", csv_bytes(rows), import_note="Two meters given"
    )
    attempt = RetryAttempt.objects.get(kind=Kind.CORRECTED_FILE)
    assert sent["Location"] == attempt.get_absolute_url()
    assert FollowUp.objects.get(pk=attempt.pk).state == FollowState.FOLLOWING
    worker = start_worker()

    follow = wait_for(
        lambda: FollowUp.objects.filter(pk=attempt.pk, state=FollowState.ENDED).first(),
        "the corrected file's import to end and be reported",
        [worker],
    )
    assert follow.status == "Completed with kickouts" and follow.success_count == 2
    attempt.refresh_from_db()
    comparison = attempt.comparison
    assert (comparison.before_count, comparison.fixed_count) == (4, 2)
    assert (comparison.still_count, comparison.new_count) == (2, 0)
    fixed = sorted(r["account"] for r in comparison.rows if r["change"] == "fixed")
    assert fixed == sorted(row["Account Code"] for row in rows[:2])
    # The queue: the source leaves it as corrected, the two rows left are the new import's.
    assert ImportSnapshot.objects.get(task_guid=guid).handled_reason == (
        HandledReason.CORRECTED_FILE
    )
    new = ImportSnapshot.objects.get(task_guid=attempt.new_task_guid)
    assert new.row_count == 2 and not new.is_handled

    wait_for(lambda: sent_emails(mail_dir), "the email", [worker])
    time.sleep(1.5)  # time for a second email, if one were coming
    [message] = sent_emails(mail_dir)
    assert message["To"] == "carla@example.com"
    assert message["Subject"] == (
        f"Corrected file for Import {source['taskId']}: Completed with kickouts"
    )
    body = body_of(message)
    assert "The import of the corrected file meters-fixed.csv" in body
    assert "2 of 4 kicked-out rows fixed, 2 still kicked out, 0 new." in body
    assert f"- {METER_NOT_FOUND}: 2 still kicked out" in body
    assert f"/retries/{attempt.pk}/" in body

    page = clerk_client.get(attempt.get_absolute_url()).content.decode()
    assert "2 of 4</strong> kicked-out rows fixed" in page
    history = clerk_client.get(reverse("history")).content.decode()
    assert "2 of 4" in history and "meters-fixed.csv" in history
