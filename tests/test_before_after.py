"""Before and after: a retry's source kickouts compared with its new task's, over real HTTP.

The sandbox holds imports whose kickout rows the tests state exactly (`kickout_rows`), so
each kind of change is made on purpose; the comparison itself fetches them like any import.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from kickouts import compare, follow_up, notify
from kickouts.follow_up_models import FollowState, FollowUp
from kickouts.models import CompareState, ImportSnapshot, Outcome, RetryAttempt
from kickouts.queue_models import HandledReason
from kickouts.sandbox.state import COMPLETED_TASK_GUID, FAILED_TASK_GUID, KICKOUT_TASK_GUID

from . import test_worker
from .factories import follow, make_retry
from .retry_helpers import post_retry
from .test_worker import body_of, sent_emails, wait_for

# The real worker's fixtures (tests/test_worker.py), for the test that runs one.
mail_dir = test_worker.mail_dir
start_worker = test_worker.start_worker


def row(message: str, account: str, meter: str = "MTR-1", start="2026-10-01", end="2026-10-31"):
    return {
        "message": message,
        "accountCode": account,
        "meterCode": meter,
        "billStart": start,
        "billEnd": end,
    }


def stated_import(sandbox, rows: list[dict], **props) -> str:
    """A bill import in the sandbox, ended "Completed with kickouts" with exactly these rows."""
    return sandbox.add_task(kickout_rows=rows, **props)["taskGUId"].lower()


def ended_retry(
    user, source: str, new: str, status: str = "Completed with kickouts", counts=None, **fields
):
    """A retry whose new task the follower saw end with `status` (and `counts`: bills
    imported and analyzing)."""
    values = {"source_task_id": 47223, "new_task_guid": new}
    retry = make_retry(user, source_task_guid=source, **{**values, **fields})
    success, analyzing = counts or (None, None)
    follow(
        retry,
        state=FollowState.ENDED,
        due_at=None,
        status=status,
        finished=True,
        end_date=timezone.now(),
        success_count=success,
        analyzing_count=analyzing,
    )
    return retry


def compare_now(attempt: RetryAttempt) -> str:
    """Compare as the follow-up's report does, from the end its follow-up recorded."""
    state = compare.compare_retry(attempt, FollowUp.objects.get(pk=attempt.pk))
    attempt.__dict__.pop("compared", None)
    return state


def report_now(attempt: RetryAttempt) -> None:
    """The worker's report of the end, now: compare, email, record."""
    FollowUp.objects.filter(pk=attempt.pk).update(
        state=FollowState.REPORTING, due_at=timezone.now()
    )
    follow_up.sweep()


@pytest.fixture
def mixed(clerk, sandbox) -> RetryAttempt:
    """Source rows A (fixed), B (still, same message), C (still, another message); the new
    task kicks out B and C in another order, and E, a row the source did not have."""
    source = stated_import(
        sandbox,
        [
            row("Account not found", "ACCT-A"),
            row("Account not found", "ACCT-B"),
            row("Meter not found", "ACCT-C"),
        ],
    )
    new = stated_import(
        sandbox,
        [
            row("Bill overlaps an existing bill", "acct-c "),  # case and spaces do not matter
            row("Account not found", "ACCT-B"),
            row("Account not found", "ACCT-E"),
        ],
    )
    return ended_retry(clerk, source, new)


def test_each_source_row_is_fixed_or_still_kicked_out_and_rows_only_in_the_new_task_are_new(
    mixed,
):
    """A left, B and C stayed (row numbers changed), E appeared: 1 of 3 fixed, 2 still, 1 new."""
    assert compare_now(mixed) == CompareState.COMPARED
    assert (
        mixed.compared.before_count,
        mixed.compared.fixed_count,
        mixed.compared.still_count,
        mixed.compared.new_count,
    ) == (
        3,
        1,
        2,
        1,
    )
    changes = {(r["account"].strip().upper(), r["change"]) for r in mixed.compared.rows}
    assert changes == {
        ("ACCT-A", "fixed"),
        ("ACCT-B", "still"),
        ("ACCT-C", "still"),
        ("ACCT-E", "new"),
    }
    assert mixed.compared.fixed_label == "1 of 3"


def test_a_row_that_differs_only_in_its_message_is_still_kicked_out_and_says_what_it_was(
    clerk, sandbox
):
    """Same account, meter and dates, another message: still kicked out, not fixed + new."""
    source = stated_import(sandbox, [row("Account not found", "ACCT-1")])
    new = stated_import(sandbox, [row("Meter not found", "ACCT-1")])
    attempt = ended_retry(clerk, source, new)
    compare_now(attempt)
    [only] = attempt.compared.rows
    assert (only["change"], only["message"], only["was"]) == (
        "still",
        "Meter not found",
        "Account not found",
    )
    assert (
        attempt.compared.fixed_count,
        attempt.compared.still_count,
        attempt.compared.new_count,
    ) == (0, 1, 0)


def test_another_bill_period_of_the_same_meter_is_another_row(clerk, sandbox):
    """The key has the bill dates: a different end date is one row fixed and one new."""
    source = stated_import(sandbox, [row("Account not found", "ACCT-1", end="2026-10-31")])
    new = stated_import(sandbox, [row("Account not found", "ACCT-1", end="2026-10-30")])
    attempt = ended_retry(clerk, source, new)
    compare_now(attempt)
    assert (
        attempt.compared.fixed_count,
        attempt.compared.still_count,
        attempt.compared.new_count,
    ) == (1, 0, 1)


def test_a_completed_new_task_fixed_every_row_without_asking_for_its_kickouts(clerk, sandbox):
    """ "Completed": all 12 source rows fixed; only the source's kickouts are fetched."""
    attempt = ended_retry(clerk, KICKOUT_TASK_GUID, COMPLETED_TASK_GUID, status="Completed")
    compare_now(attempt)
    assert attempt.compared.fixed_label == "12 of 12"
    assert (attempt.compared.still_count, attempt.compared.new_count) == (0, 0)
    asked = {e["path"] for e in sandbox.log("kickout_summary") + sandbox.log("kickout_detail")}
    assert asked and all(KICKOUT_TASK_GUID in path for path in asked)


def test_a_failed_new_task_says_so_and_compares_nothing(clerk, clerk_client, sandbox):
    """ "Failed": no kickouts fetched, no counts; the page, history and email say it failed."""
    attempt = ended_retry(clerk, KICKOUT_TASK_GUID, FAILED_TASK_GUID, status="Failed")
    assert compare_now(attempt) == CompareState.NEW_TASK_FAILED
    assert sandbox.count("kickout_summary") == sandbox.count("kickout_detail") == 0
    assert attempt.compared.before_count is None and attempt.compared.fixed_label == ""
    assert attempt.outcome == Outcome.SUBMITTED  # no counts: nothing proven
    page = clerk_client.get(attempt.get_absolute_url()).content.decode()
    assert "The new import failed, so nothing was compared" in page
    history = clerk_client.get(reverse("history")).content.decode()
    assert '<span class="muted">none: the import failed</span>' in history
    _, body = notify.retry_ended_email(attempt)
    assert "The new import failed, so nothing was compared" in body
    assert "needs a supervisor" in body


def test_a_failed_re_import_puts_the_source_import_back_in_the_queue(clerk, supervisor, sandbox):
    """Nothing was imported: the dashboard's own "re-imported" mark is undone, a person's is not."""
    from kickouts import snapshots

    attempt = ended_retry(clerk, KICKOUT_TASK_GUID, FAILED_TASK_GUID, status="Failed")
    source = snapshots.ensure_snapshot(snapshots.energycap.client().get_task(KICKOUT_TASK_GUID))
    source.mark_handled(user=clerk, reason=HandledReason.REIMPORTED, note="submitted")
    compare_now(attempt)
    source.refresh_from_db()
    assert not source.is_handled
    change = source.handled_changes.order_by("-changed_at", "-pk").first()
    assert change.changed_by is None and f"retry #{attempt.pk}" in change.note

    other = ended_retry(
        clerk, KICKOUT_TASK_GUID, FAILED_TASK_GUID, status="Failed", duplicate_sequence=1
    )
    source.mark_handled(user=supervisor, reason=HandledReason.CORRECTED_FILE, note="new file")
    compare_now(other)
    source.refresh_from_db()
    assert source.handled_reason == HandledReason.CORRECTED_FILE


def test_comparing_twice_fetches_nothing_more(mixed, sandbox):
    """The snapshots are stored once: a second comparison costs EnergyCAP nothing."""
    compare_now(mixed)
    before = len(sandbox.log())
    compare_now(mixed)
    assert len(sandbox.log()) == before


def test_the_queue_keeps_the_rows_still_kicked_out_under_the_new_task(mixed):
    """The new import's rows are in the queue (open); the source left it as re-imported."""
    compare_now(mixed)
    new = ImportSnapshot.objects.get(task_guid=mixed.new_task_guid)
    assert not new.is_handled
    assert new.rows.count() == 3
    source = ImportSnapshot.objects.get(task_guid=mixed.source_task_guid)
    assert source.handled_reason == HandledReason.REIMPORTED
    assert source.handled_note == f"Re-imported by retry #{mixed.pk}."


def test_the_retry_page_shows_the_counts_and_the_rows_grouped_by_message(mixed, clerk_client):
    """Counts first, then one group per message with each row's change (and former message)."""
    compare_now(mixed)
    page = clerk_client.get(mixed.get_absolute_url())
    text = " ".join(page.content.decode().split())
    assert "<strong>1 of 3</strong> kicked-out rows fixed, <strong>2</strong> still" in text
    groups = page.context["compare_groups"]
    assert [(g["message"], g["fixed"], g["still"], g["new"]) for g in groups] == [
        ("Account not found", 1, 1, 1),
        ("Bill overlaps an existing bill", 0, 1, 0),
    ]
    assert "(was: Meter not found)" in text


def test_history_has_a_fixed_column_a_still_kicking_out_filter_and_the_counts_in_its_csv(
    mixed, clerk, supervisor_client
):
    """ "1 of 3" in the row; the filter keeps only retries that left rows; the CSV has counts."""
    compare_now(mixed)
    all_fixed = ended_retry(clerk, KICKOUT_TASK_GUID, COMPLETED_TASK_GUID, status="Completed")
    compare_now(all_fixed)
    never = make_retry(clerk, outcome=Outcome.REJECTED)

    page = supervisor_client.get(reverse("history"))
    assert [r.pk for r in page.context["page"].retries] == [never.pk, all_fixed.pk, mixed.pk]
    assert "1 of 3" in page.content.decode() and "12 of 12" in page.content.decode()
    still = supervisor_client.get(reverse("history"), {"final_status": "still_kicking_out"})
    assert [r.pk for r in still.context["page"].retries] == [mixed.pk]

    response = supervisor_client.get(reverse("history_csv"), {"final_status": "still_kicking_out"})
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    header, line = list(csv.reader(io.StringIO(text)))
    values = dict(zip(header, line, strict=True))
    assert (values["rows_before"], values["rows_fixed"], values["rows_still_kicked_out"]) == (
        "3",
        "1",
        "2",
    )
    assert (values["rows_new"], values["compared"]) == ("1", "compared")


def test_the_email_tells_the_requester_what_was_fixed_and_what_is_still_kicked_out(
    mixed, clerk, sandbox
):
    """The worker's email step compares first, so the email can say what the retry achieved."""
    clerk.email = "carla@example.com"
    clerk.save()
    report_now(mixed)
    assert FollowUp.objects.get(pk=mixed.pk).notification == "Emailed to carla@example.com."
    [message] = mail.outbox
    assert (
        "Before and after: 1 of 3 kicked-out rows fixed, 2 still kicked out, 1 new." in message.body
    )
    assert "- Account not found: 1 still kicked out, 1 new" in message.body
    assert "- Bill overlaps an existing bill: 1 still kicked out" in message.body


def test_each_step_of_the_retry_chain_shows_how_many_rows_were_left(
    mixed, clerk, clerk_client, sandbox
):
    """Retry of the source, then a retry of its new task: each step says its rows left."""
    compare_now(mixed)
    final = stated_import(sandbox, [row("Account not found", "ACCT-E")])
    second = ended_retry(clerk, mixed.new_task_guid, final, parent=mixed)
    compare_now(second)
    page = " ".join(clerk_client.get(second.get_absolute_url()).content.decode().split())
    assert f"retry #{mixed.pk}</a> by Carla Clerk (Submitted: 3 rows left of 3)" in page
    chain = " ".join(clerk_client.get(mixed.get_absolute_url()).content.decode().split())
    assert "— 3 rows left of 3" in chain and "— 1 row left of 3" in chain


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_follows_the_end_compares_and_emails_what_was_fixed(
    clerk, clerk_client, sandbox, start_worker, mail_dir
):
    """db_worker: the new import ends with fewer kickouts; the record and email say which."""
    clerk.email = "carla@example.com"
    clerk.save()
    sandbox.reset(task_seconds=2)
    sandbox.configure(next_outcomes=["Completed with kickouts"])
    post_retry(
        clerk_client, KICKOUT_TASK_GUID, action="send", batch_mode="new self-contained batch"
    )
    attempt = RetryAttempt.objects.get()
    assert attempt.follow_up.state == FollowState.FOLLOWING
    worker = start_worker()
    wait_for(lambda: sent_emails(mail_dir), "the email", [worker])
    comparison = RetryAttempt.objects.get().comparison
    assert comparison.state == CompareState.COMPARED
    assert comparison.before_count == 12 and comparison.new_count == 0
    assert 0 < comparison.still_count < 12
    assert comparison.fixed_count == 12 - comparison.still_count
    time.sleep(1)  # time for a second email, if one were coming
    [message] = sent_emails(mail_dir)
    assert (
        f"Before and after: {comparison.fixed_count} of 12 kicked-out rows fixed, "
        f"{comparison.still_count} still kicked out, 0 new." in body_of(message)
    )
    # The queue follows: the new import's rows are open, the source is re-imported.
    assert not ImportSnapshot.objects.get(task_guid=attempt.new_task_guid).is_handled
    assert ImportSnapshot.objects.get(task_guid=KICKOUT_TASK_GUID).is_handled


def test_a_comparison_energycap_did_not_answer_is_tried_again_minutes_later(mixed, clerk, sandbox):
    """The email goes out saying so; the report comes due again five minutes on, compares,
    and sends no second email."""
    clerk.email = "carla@example.com"
    clerk.save()
    sandbox.fault("kickout_summary", *[{"status": 503}] * 3)
    report_now(mixed)
    assert RetryAttempt.objects.get(pk=mixed.pk).comparison.state == CompareState.ERROR
    [message] = mail.outbox
    assert "The kickouts before and after could not be compared:" in message.body
    row = FollowUp.objects.get(pk=mixed.pk)
    assert row.state == FollowState.REPORTING
    assert row.due_at > timezone.now() + timedelta(minutes=4)
    FollowUp.objects.filter(pk=mixed.pk).update(due_at=timezone.now())  # five minutes on
    follow_up.sweep()
    assert RetryAttempt.objects.get(pk=mixed.pk).comparison.fixed_label == "1 of 3"
    assert FollowUp.objects.get(pk=mixed.pk).state == FollowState.ENDED
    assert len(mail.outbox) == 1


def test_a_failed_re_import_whose_counts_show_no_bill_frees_the_import_for_a_clerk(
    clerk, clerk_client, sandbox
):
    """ "Failed" with 0 imported and 0 analyzing: nothing was imported, so the retry says so
    everywhere and Carla may retry the import again, with no supervisor and no warning."""
    clerk.email = "carla@example.com"
    clerk.save()
    attempt = ended_retry(
        clerk, KICKOUT_TASK_GUID, FAILED_TASK_GUID, status="Failed", counts=(0, 0)
    )
    RetryAttempt.objects.filter(pk=attempt.pk).update(source_task_id=None)
    report_now(attempt)
    attempt.refresh_from_db()
    assert attempt.outcome == Outcome.NONE_IMPORTED and attempt.imported_nothing
    page = " ".join(clerk_client.get(attempt.get_absolute_url()).content.decode().split())
    assert "EnergyCAP's counts show that no bill was imported:</strong> nothing was imported" in (
        page.replace("&#x27;", "'")
    )
    assert "no supervisor needed" in page
    [message] = mail.outbox
    assert "nothing was imported, so you may retry" in message.body
    tasks = clerk_client.get(reverse("task_list")).content.decode()
    assert "Nothing imported" in tasks
    history = clerk_client.get(reverse("history")).content.decode()
    assert "Nothing imported" in history
    again = post_retry(
        clerk_client, KICKOUT_TASK_GUID, action="send", batch_mode="new self-contained batch"
    )
    assert again.status_code == 302
    assert RetryAttempt.objects.filter(outcome=Outcome.SUBMITTED).count() == 1


@pytest.mark.parametrize("counts", [(3, 0), (None, None)], ids=["bills-imported", "no-counts"])
def test_a_failed_re_import_that_may_have_imported_keeps_the_supervisor_confirmation(
    clerk, clerk_client, sandbox, counts
):
    """ "Failed", but bills were imported (or the counts are missing): not proven, so the
    retry stays submitted, the page says why, and a clerk's retry needs a supervisor."""
    attempt = ended_retry(
        clerk, KICKOUT_TASK_GUID, FAILED_TASK_GUID, status="Failed", counts=counts
    )
    report_now(attempt)
    attempt.refresh_from_db()
    assert attempt.outcome == Outcome.SUBMITTED
    page = " ".join(clerk_client.get(attempt.get_absolute_url()).content.decode().split())
    why = "3 bills imported" if counts[0] else "gave no counts of the bills it imported"
    assert why in page.replace("&#x27;", "'")
    assert "needs a supervisor" in page
    again = post_retry(
        clerk_client, KICKOUT_TASK_GUID, action="send", batch_mode="new self-contained batch"
    )
    assert "Only a supervisor" in " ".join(again.context["form"].non_field_errors())
