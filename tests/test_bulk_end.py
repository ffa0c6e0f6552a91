"""How a bulk retry ends: each new import's end and rows fixed on the bulk's page and in the
supervisors' list, one email when the last import ends, the imports not sent sent again in one
step, and a worker killed during a POST leaving "outcome unknown", never "not sent"."""

from __future__ import annotations

import re
import time

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from kickouts.bulk_models import BulkRetry, BulkState, LineState
from kickouts.follow_up_models import FollowState, FollowUp
from kickouts.models import Outcome, RetryAttempt

from . import test_browser, test_worker
from .browser_helpers import choose_mode, open_bill_imports, sign_in
from .test_bulk import kickout_imports, lines_of, send_bulk, wait_until_ended
from .test_worker import QUICK, body_of, sent_emails, wait_for

start_worker = test_worker.start_worker
mail_dir = test_worker.mail_dir
browser = test_browser.browser
watch = test_browser.watch
page = test_browser.page

pytestmark = pytest.mark.django_db(transaction=True)


def all_reported(bulk: BulkRetry, workers) -> BulkRetry:
    """The bulk, once it sends no more and every new import it started was reported."""
    wait_until_ended(bulk, workers)
    wait_for(
        lambda: (
            not FollowUp.objects.filter(retry__bulk=bulk)
            .exclude(state__in=[FollowState.ENDED, FollowState.STOPPED])
            .exists()
        ),
        "every new import to end and be reported",
        workers,
    )
    return BulkRetry.objects.get(pk=bulk.pk)


def test_a_bulk_whose_imports_end_three_ways_says_so_and_emails_once_at_the_last_end(
    clerk, clerk_client, supervisor_client, sandbox, start_worker, mail_dir
):
    """Three sent: completed, with kickouts, failed. The page and /bulks/ sum it up the same
    way, and Carla gets one email (not three) naming the import that needs her."""
    clerk.email = "carla@example.com"
    clerk.save()
    guids = kickout_imports(sandbox, 3)
    sandbox.configure(
        task_seconds=2, next_outcomes=["Completed", "Completed with kickouts", "Failed"]
    )
    bulk = send_bulk(clerk_client, guids, batch_mode="new self-contained batch")
    worker = start_worker()
    bulk = all_reported(bulk, [worker])
    wait_for(lambda: sent_emails(mail_dir), "the bulk's email", [worker])
    time.sleep(1.5)  # time for more emails, were any coming

    failed = RetryAttempt.objects.get(bulk=bulk, follow_up__status="Failed")
    words = "3 sent: 1 completed, 1 with kickouts, 1 failed; "
    page = " ".join(clerk_client.get(bulk.get_absolute_url()).content.decode().split())
    assert words in page
    assert re.search(r"3 sent: 1 completed, 1 with kickouts, 1 failed; \d+ of 12 rows fixed", page)
    assert page.count('class="badge badge-failed"') == 1
    assert page.count("badge-running") == 0
    for retry in RetryAttempt.objects.filter(bulk=bulk):  # each line names its new import
        assert f'/tasks/{retry.new_task_guid}/">Import {retry.new_task_id}</a>' in page
    listed = " ".join(supervisor_client.get(reverse("bulk_list")).content.decode().split())
    assert words in listed

    [message] = sent_emails(mail_dir)
    assert message["To"] == "carla@example.com"
    # A long subject is folded in the file the backend writes: read it as one line.
    assert " ".join(message["Subject"].split()).startswith(f"Bulk retry #{bulk.pk}: {words}")
    body = body_of(message)
    assert "Needs your attention:" in body
    assert f"- Import {failed.source_task_id}: the new import failed" in body
    with_kickouts = RetryAttempt.objects.get(bulk=bulk, follow_up__status="Completed with kickouts")
    assert with_kickouts.compared.rows_left  # the sandbox keeps some of the source's rows
    assert (
        f"- Import {with_kickouts.source_task_id}: its new import, "
        f"Import {with_kickouts.new_task_id}, completed with kickouts: "
    ) in body
    assert "3 of 3 sent; the bulk is done." in body
    assert f"/bulk/{bulk.pk}/" in body
    # Recorded right after the mail server took it.
    wait_for(
        lambda: BulkRetry.objects.filter(pk=bulk.pk, notified_at__isnull=False).exists(),
        "the email's record",
        [worker],
    )
    assert BulkRetry.objects.get(pk=bulk.pk).notification == "Emailed to carla@example.com."
    # The retries of a bulk send no email of their own.
    notes = set(FollowUp.objects.filter(retry__bulk=bulk).values_list("notification", flat=True))
    assert notes == {f"One email for bulk retry #{bulk.pk}."}


def test_the_imports_not_sent_are_sent_again_in_one_step_through_the_same_review(
    clerk_client, sandbox, start_worker
):
    """The pending batch closed after the first import: the two not sent are offered again,
    with the bulk's own settings, and go out as a new bulk of exactly those two."""
    guids = kickout_imports(sandbox, 3)
    bulk = send_bulk(clerk_client, guids, batch_mode="use pending batch", pending_batch_id=907)
    sandbox.update_batch(907, batch_status="Closed")
    worker = start_worker()
    bulk = wait_until_ended(bulk, [worker])
    assert [state for _, state in lines_of(bulk)] == [
        LineState.REFUSED,
        LineState.NOT_SENT,
        LineState.NOT_SENT,
    ]
    page = clerk_client.get(bulk.get_absolute_url()).content.decode()
    assert "Send them again…" in page
    sandbox.update_batch(907, batch_status="Pending")  # the clerk reopened it in EnergyCAP
    again = clerk_client.post(
        reverse("bulk_form"), {"task": guids[1:], "again_of": bulk.pk, "action": "choose"}
    )
    form = again.context["form"]
    assert [c.guid for c in again.context["candidates"]] == guids[1:]
    assert form.initial["batch_mode"] == "use pending batch"
    assert str(form.initial["pending_batch_id"]) == "907"
    second = send_bulk(
        clerk_client, guids[1:], batch_mode="use pending batch", pending_batch_id=907
    )
    second = wait_until_ended(second, [worker])
    assert [state for _, state in lines_of(second)] == [LineState.SENT, LineState.SENT]
    assert sandbox.count("kickout_post", "POST") == 3  # the refused one, then the two


def test_a_line_whose_post_had_begun_is_never_offered_again(clerk, clerk_client, sandbox):
    """Only a line whose record proves no POST began is "not sent" and offered again."""
    guids = kickout_imports(sandbox, 2)
    bulk = send_bulk(clerk_client, guids, batch_mode="new self-contained batch")
    first, second = bulk.lines.order_by("position")
    begun = RetryAttempt.objects.create(
        requested_by=clerk,
        form_token=bulk.form_token,
        source_task_guid=first.task_guid,
        batch_mode=bulk.batch_mode,
        payload=bulk.payload,
        bulk=bulk,
        outcome=Outcome.UNKNOWN,
        sent_at=timezone.now(),
    )
    first.state, first.retry = LineState.NOT_SENT, begun  # as the old sender could leave it
    first.save()
    second.state = LineState.NOT_SENT
    second.save()
    BulkRetry.objects.filter(pk=bulk.pk).update(state=BulkState.STOPPED)
    page = clerk_client.get(bulk.get_absolute_url())
    assert [line.task_guid for line in page.context["resendable"]] == [second.task_guid]


def test_a_worker_killed_during_a_lines_post_leaves_it_outcome_unknown_never_not_sent(
    clerk_client, sandbox, start_worker
):
    """kill -9 while EnergyCAP acts on the second import: once the claim runs out, another
    worker finds the begun record, calls it "outcome unknown" on the retry and the line, and
    stops; nothing is sent twice and nothing reads "not sent" but the third."""
    guids = kickout_imports(sandbox, 3)
    bulk = send_bulk(clerk_client, guids, batch_mode="new self-contained batch")
    # The second POST acts, then takes 20 s to answer: the worker dies meanwhile.
    sandbox.fault("kickout_post", {"hang": 0.01}, {"hang": 20, "apply": True})
    worker = start_worker("worker-1", **QUICK)
    wait_for(
        lambda: (
            RetryAttempt.objects.filter(bulk=bulk, source_task_guid=guids[1])
            .exclude(sent_at=None)
            .exists()
        ),
        "the second import's POST",
        [worker],
    )
    time.sleep(0.5)
    worker.kill()
    sandbox.clear_faults()
    assert RetryAttempt.objects.get(source_task_guid=guids[1]).outcome == Outcome.SUBMITTING

    restarted = start_worker("worker-2", **QUICK)
    bulk = wait_until_ended(bulk, [restarted])
    assert bulk.state == BulkState.STOPPED
    assert [state for _, state in lines_of(bulk)] == [
        LineState.SENT,
        LineState.UNKNOWN,
        LineState.NOT_SENT,
    ]
    assert RetryAttempt.objects.get(source_task_guid=guids[1]).outcome == Outcome.UNKNOWN
    assert sandbox.count("kickout_post", "POST") == 2
    resendable = bulk.lines.get(position=3)
    assert resendable.retry is None


@pytest.mark.browser
def test_a_clerk_reads_a_bulk_that_ends_with_one_failed_import_from_its_page_to_the_email(
    page, watch, live_server, clerk, sandbox, start_worker, mail_dir, tmp_path
):
    """Carla sends three, watches the page fill in each end without reloading, and the one
    email says the same and names the failed import."""
    clerk.email = "carla@example.com"
    clerk.save()
    guids = kickout_imports(sandbox, 3)
    sandbox.configure(task_seconds=2, next_outcomes=["Completed", "Failed", "Completed"])
    worker = start_worker()
    sign_in(page, live_server.url, clerk)
    open_bill_imports(page)
    for guid in guids:
        page.locator(f'input[name="task"][value="{guid}"]').check()
    page.locator(".retry-selected").click()
    choose_mode(page, "new self-contained batch")
    page.get_by_role("button", name="Review before sending").click()
    page.get_by_role("button", name="Send 3 re-imports").click()
    page.wait_for_url(re.compile(r"/bulk/\d+/$"))
    end_line = page.locator(".end-line")
    expect(end_line).to_contain_text("3 sent: 2 completed, 1 failed", timeout=40_000)
    expect(page.locator(".bulk-lines .badge-failed")).to_have_count(1)
    expect(page.locator("#bulk-progress")).not_to_have_attribute("hx-trigger", re.compile("."))
    page.screenshot(path=tmp_path / "bulk-ended.png", full_page=True)
    bulk = BulkRetry.objects.get()
    failed = RetryAttempt.objects.get(bulk=bulk, follow_up__status="Failed")
    wait_for(lambda: sent_emails(mail_dir), "the bulk's email", [worker])
    [message] = sent_emails(mail_dir)
    body = body_of(message)
    assert "3 sent: 2 completed, 1 failed" in " ".join(message["Subject"].split())
    assert f"- Import {failed.source_task_id}: the new import failed" in body
    watch.assert_clean(page)
