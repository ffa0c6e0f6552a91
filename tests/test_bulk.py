"""Bulk retry: the review's whole-set sentences, and bulks sent by a real `db_worker` to the
sandbox over real HTTP, with its stop rules, cancel, crashes and overlaps."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.urls import reverse
from playwright.sync_api import expect

from kickouts import energycap
from kickouts.bulk_models import BulkLine, BulkRetry, BulkState, LineState
from kickouts.models import Outcome, RetryAttempt

from . import test_browser, test_worker
from .browser_helpers import choose_mode, open_bill_imports, sign_in
from .test_worker import wait_for

# The real `db_worker` processes of tests/test_worker.py, and where their emails go.
start_worker = test_worker.start_worker
mail_dir = test_worker.mail_dir

pytestmark = pytest.mark.django_db(transaction=True)


def kickout_imports(sandbox, count: int) -> list[str]:
    """`count` fresh bill imports that ended "Completed with kickouts"."""
    return [
        sandbox.add_task(kickout_messages=["Account not found", "Meter not found"])[
            "taskGUId"
        ].lower()
        for _ in range(count)
    ]


def post_bulk(client, guids, action="review", token=None, reviewed=None, **fields):
    """POST the bulk form as a browser would (every value a string)."""
    data = {"action": action, "task": guids, "form_token": str(token or uuid.uuid4())}
    for name, value in fields.items():
        if value is True:
            data[name] = "on"
        elif value not in (False, None):
            data[name] = str(value)
    if reviewed:
        data["reviewed"] = reviewed
    return client.post(reverse("bulk_form"), data)


def send_bulk(client, guids, **fields) -> BulkRetry:
    """Review, then send what was reviewed; the bulk it made."""
    token = uuid.uuid4()
    review = post_bulk(client, guids, token=token, **fields)
    assert review.context["whole_set"], review.content.decode()
    sent = post_bulk(
        client, guids, action="send", token=token, reviewed=review.context["reviewed"], **fields
    )
    assert sent.status_code == 302, sent.content.decode()
    return BulkRetry.objects.get(form_token=token)


def lines_of(bulk: BulkRetry) -> list[tuple[str, str]]:
    return [(line.task_guid, line.state) for line in bulk.lines.order_by("position")]


def wait_until_ended(bulk: BulkRetry, workers) -> BulkRetry:
    return wait_for(
        lambda: BulkRetry.objects.exclude(state=BulkState.SENDING).filter(pk=bulk.pk).first(),
        "the bulk to end",
        workers,
    )


def posts_for(sandbox, guid: str) -> int:
    return sum(
        1
        for entry in sandbox.log("kickout_post")
        if entry["method"] == "POST" and guid in entry["path"].lower()
    )


# -- the review --


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        (
            {"batch_mode": "use pending batch", "pending_batch_id": 907},
            "use pending batch: all 3 go into pending batch ELEC-PENDING (#907).",
        ),
        (
            {"batch_mode": "smart batch", "new_batch_code": "BULK-NOV"},
            "smart batch with code BULK-NOV: the first creates batch BULK-NOV, the other 2 are "
            "added to it.",
        ),
        (
            {"batch_mode": "smart batch", "new_batch_code": "ELEC-NOV"},
            "smart batch with code ELEC-NOV: all 3 go into batch ELEC-NOV.",
        ),
        (
            {"batch_mode": "new self-contained batch", "new_batch_code": "SC"},
            "new self-contained batch: makes 3 separate batches, each named SC and closed with "
            "its import.",
        ),
        (
            {"batch_mode": "new batch", "leave_existing_batches_open": True},
            "new batch: makes 3 new open batches, one per import, each named an automatic "
            "code; the other open batches stay open.",
        ),
        (
            {"batch_mode": "use existing batch", "existing_open_batch_id": 901},
            "use existing batch: all 3 go into open batch ELEC-NOV (#901), which stays open.",
        ),
    ],
)
def test_the_review_says_what_each_batch_mode_does_for_the_whole_set(
    clerk_client, sandbox, fields, sentence
):
    """Carla reviews three imports: one sentence says what happens to the batches for all."""
    guids = kickout_imports(sandbox, 3)
    response = post_bulk(clerk_client, guids, **fields)
    assert response.context["whole_set"] == sentence
    assert len(response.context["sendable"]) == 3
    assert "&quot;batchMode&quot;" in response.content.decode()


def test_the_smart_batch_sentence_for_two_imports_says_the_other_is_added(clerk_client, sandbox):
    """Two imports: "the other is added", not "the other 1 are added"."""
    guids = kickout_imports(sandbox, 2)
    response = post_bulk(clerk_client, guids, batch_mode="smart batch", new_batch_code="PAIR")
    assert response.context["whole_set"] == (
        "smart batch with code PAIR: the first creates batch PAIR, the other is added to it."
    )


def test_new_batch_closing_the_open_one_is_refused_for_more_than_one_import(clerk_client, sandbox):
    """Unticked "leave existing batches open", each new batch would close the one before."""
    sandbox.update_batch(902, batch_status="Closed")  # the API user has one open batch left
    guids = kickout_imports(sandbox, 2)
    response = post_bulk(clerk_client, guids, batch_mode="new batch")
    errors = response.context["form"].errors["leave_existing_batches_open"]
    assert "each of the 2 imports would close the batch the one before it made" in errors[0]
    assert "whole_set" not in response.context


def test_imports_that_cannot_be_sent_are_listed_apart_with_the_reason(clerk, clerk_client, sandbox):
    """A finished import and an already re-imported one are set apart, each with why."""
    from .factories import make_retry

    good, reimported = kickout_imports(sandbox, 2)
    done = sandbox.add_task(status="Completed")["taskGUId"].lower()
    make_retry(clerk, source_task_guid=reimported)
    response = post_bulk(
        clerk_client, [good, done, reimported], batch_mode="new self-contained batch"
    )
    reasons = {c.guid: c.reason for c in response.context["candidates"]}
    assert reasons[good] == ""
    assert "Its status is now “Completed”" in reasons[done]
    assert "only a supervisor can re-import it again" in reasons[reimported]
    assert response.context["whole_set"].startswith("new self-contained batch: makes 1 ")


def test_a_selection_over_the_limit_is_refused_and_says_the_limit(clerk_client, settings):
    """More imports than BULK_RETRY_MAX: the page says so and nothing is reviewed."""
    settings.BULK_RETRY_MAX = 2
    guids = [str(uuid.uuid4()) for _ in range(3)]
    response = post_bulk(clerk_client, guids, batch_mode="smart batch")
    assert "3 imports are selected; a bulk retry sends at most 2." in response.content.decode()
    assert "candidates" not in response.context


def test_the_same_bulk_form_posted_twice_makes_one_bulk(clerk_client, sandbox):
    """A double click on Send: one bulk, and both answers lead to it."""
    guids = kickout_imports(sandbox, 2)
    token = uuid.uuid4()
    fields = {"batch_mode": "smart batch", "new_batch_code": "TWICE"}
    review = post_bulk(clerk_client, guids, token=token, **fields)
    reviewed = review.context["reviewed"]
    first = post_bulk(clerk_client, guids, "send", token=token, reviewed=reviewed, **fields)
    second = post_bulk(clerk_client, guids, "send", token=token, reviewed=reviewed, **fields)
    assert BulkRetry.objects.count() == 1
    assert first["Location"] == second["Location"] == BulkRetry.objects.get().get_absolute_url()


def test_a_send_of_settings_not_reviewed_shows_the_review_again(clerk_client, sandbox):
    """Settings changed after the review are reviewed again, never sent unseen."""
    guids = kickout_imports(sandbox, 2)
    review = post_bulk(clerk_client, guids, batch_mode="smart batch", new_batch_code="A")
    response = post_bulk(
        clerk_client,
        guids,
        "send",
        reviewed=review.context["reviewed"],
        batch_mode="smart batch",
        new_batch_code="B",
    )
    assert response.status_code == 200
    assert BulkRetry.objects.count() == 0


# -- sent by the worker --


def test_smart_batch_creates_one_batch_with_the_first_and_adds_the_rest(
    clerk_client, sandbox, start_worker
):
    """Three imports, smart batch with a new code: one batch made, all three in it, in order."""
    guids = kickout_imports(sandbox, 3)
    bulk = send_bulk(clerk_client, guids, batch_mode="smart batch", new_batch_code="BULK-ONE")
    worker = start_worker()
    bulk = wait_until_ended(bulk, [worker])
    assert bulk.state == BulkState.DONE
    assert lines_of(bulk) == [(g, LineState.SENT) for g in guids]
    api = energycap.client()
    assert [b.batch_code for b in api.batches_with_code("BULK-ONE")] == ["BULK-ONE"]
    retries = RetryAttempt.objects.filter(bulk=bulk).order_by("sent_at")
    assert [r.source_task_guid for r in retries] == guids
    for retry in retries:
        assert api.get_task(retry.new_task_guid).batch.batch_code == "BULK-ONE"
    page = clerk_client.get(bulk.get_absolute_url()).content.decode()
    assert "3 of 3 sent" in page
    for retry in retries:
        assert reverse("retry_detail", args=[retry.pk]) in page


def test_a_batch_no_longer_pending_stops_the_bulk_and_the_rest_are_not_sent(
    clerk_client, sandbox, start_worker
):
    """The pending batch closed after the review: the first is refused, the rest not sent."""
    guids = kickout_imports(sandbox, 3)
    bulk = send_bulk(clerk_client, guids, batch_mode="use pending batch", pending_batch_id=907)
    sandbox.update_batch(907, batch_status="Closed")
    bulk = wait_until_ended(bulk, [start_worker()])
    assert bulk.state == BulkState.STOPPED
    assert [state for _, state in lines_of(bulk)] == [
        LineState.REFUSED,
        LineState.NOT_SENT,
        LineState.NOT_SENT,
    ]
    assert sandbox.count("kickout_post", "POST") == 1
    not_sent = bulk.lines.get(position=2)
    assert not_sent.reason.startswith("Not sent: EnergyCAP refused import")
    assert not_sent.retry is None


def test_a_401_stops_the_bulk(clerk_client, sandbox, start_worker):
    """EnergyCAP refuses the key on the second import: the third is not sent."""
    guids = kickout_imports(sandbox, 3)
    bulk = send_bulk(clerk_client, guids, batch_mode="new self-contained batch")
    sandbox.fault("kickout_post", {"hang": 0.01}, {"status": 401})
    bulk = wait_until_ended(bulk, [start_worker()])
    assert [state for _, state in lines_of(bulk)] == [
        LineState.SENT,
        LineState.REFUSED,
        LineState.NOT_SENT,
    ]
    assert "refused the API key (401)" in bulk.stop_reason
    assert sandbox.count("kickout_post", "POST") == 2


def test_an_import_whose_status_changed_is_skipped_and_the_rest_go_on(
    clerk_client, sandbox, start_worker
):
    """Someone re-imported the second in EnergyCAP itself: it is skipped, the third is sent."""
    guids = kickout_imports(sandbox, 3)
    bulk = send_bulk(clerk_client, guids, batch_mode="new self-contained batch")
    sandbox.update_task(guids[1], status="Completed")
    bulk = wait_until_ended(bulk, [start_worker()])
    assert bulk.state == BulkState.DONE
    assert [state for _, state in lines_of(bulk)] == [
        LineState.SENT,
        LineState.SKIPPED,
        LineState.SENT,
    ]
    assert "status is now “Completed”" in bulk.lines.get(position=2).reason
    assert posts_for(sandbox, guids[1]) == 0


def test_an_unknown_outcome_stops_the_bulk_and_the_page_says_what_to_check(
    clerk_client, sandbox, start_worker
):
    """A 502 on the second import: maybe imported, so nothing after it is sent."""
    guids = kickout_imports(sandbox, 3)
    bulk = send_bulk(clerk_client, guids, batch_mode="smart batch", new_batch_code="BULK-502")
    sandbox.fault("kickout_post", {"hang": 0.01}, {"status": 502})
    bulk = wait_until_ended(bulk, [start_worker()])
    assert [state for _, state in lines_of(bulk)] == [
        LineState.SENT,
        LineState.UNKNOWN,
        LineState.NOT_SENT,
    ]
    page = clerk_client.get(bulk.get_absolute_url()).content.decode()
    assert "the outcome of import" in page
    assert "Check in EnergyCAP’s task list" in page or "Check in EnergyCAP&#x27;s task list" in page
    assert "which bills batch BULK-502 holds" in page
    # The mode actually used names what the rest depended on.
    assert "in smart batch mode smart batch makes batch BULK-502 with the first import" in page


def test_a_cancelled_bulk_finishes_the_import_being_sent_and_sends_no_more(
    clerk_client, sandbox, start_worker
):
    """Carla cancels after the first import went out: the rest are "not sent (cancelled)"."""
    guids = kickout_imports(sandbox, 5)
    bulk = send_bulk(clerk_client, guids, batch_mode="new self-contained batch")
    sandbox.fault("kickout_post", latency=0.5)
    worker = start_worker()
    wait_for(lambda: bulk.lines.filter(state=LineState.SENT).exists(), "the first import", [worker])
    clerk_client.post(reverse("bulk_cancel", args=[bulk.pk]))
    bulk = wait_until_ended(bulk, [worker])
    assert bulk.state == BulkState.CANCELLED
    states = [state for _, state in lines_of(bulk)]
    sent = states.count(LineState.SENT)
    assert 1 <= sent < 5
    assert states == [LineState.SENT] * sent + [LineState.NOT_SENT] * (5 - sent)
    assert bulk.lines.filter(reason="Not sent (cancelled).").count() == 5 - sent
    assert sandbox.count("kickout_post", "POST") == sent


def test_a_worker_killed_mid_bulk_resumes_without_sending_any_import_twice(
    clerk_client, sandbox, start_worker
):
    """kill -9 during the second import's re-check; the restarted worker sends each once."""
    guids = kickout_imports(sandbox, 3)
    bulk = send_bulk(clerk_client, guids, batch_mode="new self-contained batch")
    # The first re-check answers; the next asks about a task hang (the first import's
    # follow-up may come before the second's re-check), so the worker is killed with the
    # second import's record written and nothing sent for it.
    sandbox.fault("task_get", {"hang": 0.01}, {"hang": 8}, {"hang": 8}, {"hang": 8})
    worker = start_worker("bulk-worker")
    wait_for(
        lambda: RetryAttempt.objects.filter(
            bulk=bulk, source_task_guid=guids[1], outcome=Outcome.SUBMITTING
        ).exists(),
        "the second import's record",
        [worker],
    )
    worker.kill()
    sandbox.clear_faults()
    restarted = start_worker("bulk-worker")
    bulk = wait_until_ended(bulk, [restarted])
    assert bulk.state == BulkState.DONE
    assert lines_of(bulk) == [(g, LineState.SENT) for g in guids]
    assert [posts_for(sandbox, g) for g in guids] == [1, 1, 1]
    assert RetryAttempt.objects.filter(bulk=bulk).count() == 3


def test_two_bulks_that_share_an_import_never_both_send_it(
    clerk_client, other_clerk, sandbox, start_worker
):
    """Carla and Oscar each bulk-retry the same import: it is sent once, the other skips it."""
    from .conftest import signed_in_client

    first, shared, last = kickout_imports(sandbox, 3)
    oscar = signed_in_client(other_clerk)
    carla_bulk = send_bulk(clerk_client, [first, shared], batch_mode="new self-contained batch")
    oscar_bulk = send_bulk(oscar, [shared, last], batch_mode="new self-contained batch")
    workers = [start_worker("w1"), start_worker("w2")] if connection.vendor != "sqlite" else []
    workers = workers or [start_worker("w1")]
    wait_until_ended(carla_bulk, workers)
    wait_until_ended(oscar_bulk, workers)
    assert posts_for(sandbox, shared) == 1
    states = BulkLine.objects.filter(task_guid=shared).values_list("state", flat=True)
    assert sorted(states) == sorted([LineState.SENT, LineState.SKIPPED])
    assert posts_for(sandbox, first) == posts_for(sandbox, last) == 1


def test_twenty_imports_in_one_bulk_are_sent_once_each_in_order(
    clerk_client, sandbox, start_worker
):
    """Twenty imports into one smart batch: twenty POSTs, one batch, the history by bulk."""
    guids = kickout_imports(sandbox, 20)
    bulk = send_bulk(clerk_client, guids, batch_mode="smart batch", new_batch_code="BULK-20")
    bulk = wait_until_ended(bulk, [start_worker()])
    assert bulk.state == BulkState.DONE
    assert lines_of(bulk) == [(g, LineState.SENT) for g in guids]
    assert sandbox.count("kickout_post", "POST") == 20
    assert len(energycap.client().batches_with_code("BULK-20")) == 1
    sent_order = RetryAttempt.objects.filter(bulk=bulk).order_by("sent_at")
    assert [r.source_task_guid for r in sent_order] == guids
    history = clerk_client.get(reverse("history"), {"bulk": bulk.pk})
    assert len(history.context["page"].retries) == 20
    csv = b"".join(clerk_client.get(reverse("history_csv"), {"bulk": bulk.pk})).decode()
    assert "bulk_id" in csv.splitlines()[0].split(",")
    assert len(csv.splitlines()) == 21


# -- in a real browser --

browser = test_browser.browser
watch = test_browser.watch
page = test_browser.page


@pytest.mark.browser
def test_a_clerk_selects_imports_with_the_keyboard_reviews_sends_and_watches_to_the_end(
    page, watch, live_server, clerk, sandbox, start_worker
):
    """Carla ticks three imports with Space, reviews one smart batch, sends, and watches."""
    guids = kickout_imports(sandbox, 3)
    worker = start_worker()
    sign_in(page, live_server.url, clerk)
    open_bill_imports(page)
    button = page.locator(".retry-selected")
    expect(button).to_have_text("Retry selected (0)")
    for guid in guids:
        page.locator(f'input[name="task"][value="{guid}"]').focus()
        page.keyboard.press("Space")
    expect(button).to_have_text("Retry selected (3)")
    button.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Retry 3 selected imports")).to_be_visible()
    choose_mode(page, "smart batch")
    page.fill("#id_new_batch_code", "BULK-BROWSER")
    page.get_by_role("button", name="Review before sending").click()
    expect(page.locator(".whole-set")).to_have_text(
        "smart batch with code BULK-BROWSER: the first creates batch BULK-BROWSER, the other 2 "
        "are added to it."
    )
    page.get_by_role("button", name="Send 3 re-imports").click()
    page.wait_for_url(re.compile(r"/bulk/\d+/$"))
    expect(page.locator(".progress-line")).to_contain_text("3 of 3 sent", timeout=40_000)
    expect(page.locator(".progress-line")).to_contain_text("done.")
    # Done: the progress no longer polls.
    expect(page.locator("#bulk-progress")).not_to_have_attribute("hx-trigger", re.compile("."))
    assert page.locator(".bulk-lines a", has_text="Retry #").count() == 3
    assert worker.process.poll() is None
    watch.assert_clean(page)


# -- choosing, and the bulk as a record --


def test_only_imports_completed_with_kickouts_get_a_checkbox_and_only_for_retriers(
    clerk_client, outsider_client, sandbox
):
    """The task list's checkboxes are on retryable imports, for clerks; Nora sees none."""
    retryable = kickout_imports(sandbox, 1)[0]
    finished = sandbox.add_task(status="Completed")["taskGUId"].lower()
    page = clerk_client.get(reverse("task_list")).content.decode()
    assert re.search(rf'name="task"\s+value="{retryable}"', page)
    assert f'value="{finished}"' not in page
    assert '(<span class="selected-count">0</span>)' in page
    assert 'name="task"' not in outsider_client.get(reverse("task_list")).content.decode()


def test_retry_all_on_this_page_without_javascript_reviews_exactly_the_page_shown(
    clerk_client, sandbox
):
    """No JavaScript: the page's retryable imports are posted as shown, never a filter."""
    guids = kickout_imports(sandbox, 2)
    response = clerk_client.post(
        reverse("bulk_form"), {"whole_page": "1", "page_task": guids, "task": [guids[0]]}
    )
    assert [c.guid for c in response.context["candidates"]] == guids


def test_a_kickout_group_offers_retry_selected_for_its_checked_imports(clerk_client, sandbox):
    """The group page's checked imports can go to the bulk retry's review."""
    from kickouts import snapshots

    for guid in kickout_imports(sandbox, 2):
        snapshots.ensure_snapshot(energycap.client().get_task(guid))
    page = clerk_client.get(
        reverse("queue_group"), {"message": "Account not found", "period": "30"}
    ).content.decode()
    assert f'formaction="{reverse("bulk_form")}"' in page
    assert "Retry selected" in page


def test_a_bulk_is_a_record_in_the_history_the_retry_pages_and_the_supervisors_list(
    clerk_client, other_clerk, supervisor_client, sandbox, start_worker
):
    """One sent, one skipped: each retry names its bulk; Sam sees the counts; Oscar nothing."""
    from .conftest import signed_in_client

    guids = kickout_imports(sandbox, 2)
    bulk = send_bulk(clerk_client, guids, batch_mode="new self-contained batch")
    sandbox.update_task(guids[1], status="Completed")
    bulk = wait_until_ended(bulk, [start_worker()])
    sent = RetryAttempt.objects.get(bulk=bulk, outcome=Outcome.SUBMITTED)
    retry_page = clerk_client.get(reverse("retry_detail", args=[sent.pk])).content.decode()
    assert f"Bulk retry #{bulk.pk}" in retry_page
    history = clerk_client.get(reverse("history"), {"bulk": bulk.pk})
    assert {r.pk for r in history.context["page"].retries} == set(
        RetryAttempt.objects.filter(bulk=bulk).values_list("pk", flat=True)
    )
    listed = supervisor_client.get(reverse("bulk_list")).context["rows"]
    row = next(summary for listed_bulk, summary in listed if listed_bulk.pk == bulk.pk)
    assert (row.total, row.sent, row.skipped, row.not_sent) == (2, 1, 1, 0)
    assert clerk_client.get(reverse("bulk_list")).status_code == 403
    oscar = signed_in_client(other_clerk)
    assert oscar.get(bulk.get_absolute_url()).status_code == 404
    assert oscar.post(reverse("bulk_cancel", args=[bulk.pk])).status_code == 404


@pytest.mark.browser
def test_select_all_on_a_kickout_group_sends_its_imports_to_the_review(
    page, watch, live_server, clerk, sandbox
):
    """Carla selects all of a group's imports with Space and reviews exactly those."""
    from kickouts import snapshots

    guids = [
        sandbox.add_task(kickout_messages=["Vendor not found for bulk"])["taskGUId"].lower()
        for _ in range(2)
    ]
    for guid in guids:
        snapshots.ensure_snapshot(energycap.client().get_task(guid))
    sign_in(page, live_server.url, clerk)
    page.goto("/kickouts/group/?period=30&message=Vendor+not+found+for+bulk")
    page.locator(".select-all").focus()
    page.keyboard.press("Space")
    for guid in guids:
        expect(page.locator(f'input[name="task"][value="{guid}"]')).to_be_checked()
    page.get_by_role("button", name="Retry selected").click()
    expect(page.get_by_role("heading", name="Retry 2 selected imports")).to_be_visible()
    for guid in guids:
        expect(page.locator(f'.bulk-imports a[href="/tasks/{guid}/"]')).to_be_visible()
    watch.assert_clean(page)


def test_the_supervisors_list_of_bulks_is_paged_newest_first(supervisor_client, clerk):
    """Sixty bulks: fifty on the first page, the other ten on the next, each with its counts."""
    bulks = BulkRetry.objects.bulk_create(
        BulkRetry(
            requested_by=clerk,
            form_token=uuid.uuid4(),
            batch_mode="new self-contained batch",
            payload={},
            state=BulkState.DONE,
        )
        for _ in range(60)
    )
    newest_first = sorted(bulks, key=lambda b: (b.requested_at, b.pk), reverse=True)
    first = supervisor_client.get(reverse("bulk_list"))
    assert [bulk.pk for bulk, _ in first.context["rows"]] == [b.pk for b in newest_first[:50]]
    assert 'href="?page=2">Older' in first.content.decode()
    second = supervisor_client.get(reverse("bulk_list"), {"page": "2"})
    assert [bulk.pk for bulk, _ in second.context["rows"]] == [b.pk for b in newest_first[50:]]
    assert second.context["older_page"] is None
