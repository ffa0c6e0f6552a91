"""Independent EnergyCAP calls go out at once: a page waits about one round trip, not five.

Every answer is made `LATENCY` late. The sandbox logs each request as it arrives, before that
wait, so calls made one after another begin at least `LATENCY` apart, and calls in flight
together begin within it.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

import pytest
from django.urls import reverse

from kickouts import energycap
from kickouts.energycap import NotFound, TimedOut, Unauthorized, Unavailable
from kickouts.queue_models import ImportSnapshot
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID, EXPORT_TASK_GUID

from .retry_helpers import post_retry

LATENCY = 0.5
MESSAGES = ["Account not found", "Meter not found for account"]


def calls_since(sandbox, since: int) -> list[tuple[str, float]]:
    """(endpoint, when it arrived) of every request after `since`, in arrival order."""
    return [
        (entry["endpoint"], datetime.fromisoformat(entry["time"]).timestamp())
        for entry in sandbox.log(since=since)
    ]


def last_seq(sandbox) -> int:
    return int(sandbox.log_page(since=10**12)["next"])


def assert_in_flight_together(calls: list[tuple[str, float]]) -> None:
    starts = [when for _, when in calls]
    assert max(starts) - min(starts) < LATENCY, calls


def new_import(sandbox) -> str:
    """A bill import that ended with kickouts, never opened in the dashboard."""
    return sandbox.add_task(kickout_messages=MESSAGES)["taskGUId"]


def test_the_first_view_of_an_import_asks_everything_at_once(clerk_client, sandbox):
    """Task, kickout summary and rows, batches and `me`: five calls in flight together."""
    guid = new_import(sandbox)
    sandbox.fault("*", latency=LATENCY)
    since = last_seq(sandbox)
    response = clerk_client.get(reverse("task_detail", args=[guid]))
    assert response.status_code == 200
    assert response.context["summary"].kickout_messages == MESSAGES
    assert response.context["form"] is not None
    calls = calls_since(sandbox, since)
    assert sorted(name for name, _ in calls) == [
        "batch_list",
        "kickout_detail",
        "kickout_summary",
        "me",
        "task_get",
    ]
    assert_in_flight_together(calls)
    assert ImportSnapshot.objects.get(task_guid=guid).row_count > 0


def test_a_stored_import_costs_the_task_page_the_task_and_the_batches_at_once(
    clerk_client, sandbox
):
    """Once its kickouts are stored, the page asks for the task and the batches only."""
    guid = new_import(sandbox)
    clerk_client.get(reverse("task_detail", args=[guid]))
    sandbox.fault("*", latency=LATENCY)
    since = last_seq(sandbox)
    response = clerk_client.get(reverse("task_detail", args=[guid]))
    assert response.context["summary"].kickout_messages == MESSAGES
    calls = calls_since(sandbox, since)
    assert sorted(name for name, _ in calls) == ["batch_list", "task_get"]
    assert_in_flight_together(calls)


def test_the_review_asks_for_the_task_and_the_batches_at_once(clerk_client, sandbox):
    """The review re-reads the task and the batches together; the kickouts come from our tables."""
    guid = new_import(sandbox)
    clerk_client.get(reverse("task_detail", args=[guid]))
    sandbox.fault("*", latency=LATENCY)
    since = last_seq(sandbox)
    review = post_retry(clerk_client, guid, htmx=True, batch_mode="new self-contained batch")
    assert review.context["confirming"]
    assert review.context["summary"].kickout_messages == MESSAGES
    calls = calls_since(sandbox, since)
    assert sorted(name for name, _ in calls) == ["batch_list", "task_get"]
    assert_in_flight_together(calls)


def test_a_review_without_the_task_page_fetches_the_kickouts_beside_the_task(clerk_client, sandbox):
    """Reviewing an import never opened: its kickouts are asked for in the same round."""
    guid = new_import(sandbox)
    sandbox.fault("*", latency=LATENCY)
    since = last_seq(sandbox)
    review = post_retry(clerk_client, guid, htmx=True, batch_mode="new self-contained batch")
    assert review.context["confirming"]
    calls = calls_since(sandbox, since)
    assert sorted(name for name, _ in calls) == [
        "batch_list",
        "kickout_detail",
        "kickout_summary",
        "me",
        "task_get",
    ]
    assert_in_flight_together(calls)


def test_the_send_gets_the_task_once_beside_the_batches_then_posts(clerk_client, sandbox):
    """Send: the task (its re-check) and the batches at once, then the POST after them."""
    guid = new_import(sandbox)
    assert post_retry(clerk_client, guid, batch_mode="new self-contained batch").context[
        "confirming"
    ]
    sandbox.fault("*", latency=LATENCY)
    since = last_seq(sandbox)
    sent = post_retry(clerk_client, guid, action="send", batch_mode="new self-contained batch")
    assert sent.status_code == 302
    calls = calls_since(sandbox, since)
    assert sorted(name for name, _ in calls) == ["batch_list", "kickout_post", "task_get"]
    *gets, (last, posted) = calls
    assert last == "kickout_post"
    assert_in_flight_together(gets)
    # The POST waits for the re-check's answer, which came LATENCY after it was asked.
    assert posted - max(when for _, when in gets) >= LATENCY * 0.9


def test_batches_that_fail_leave_the_task_and_its_kickouts_shown(clerk_client, sandbox):
    """Only the retry panel says EnergyCAP's batches failed; the rest of the page is there."""
    guid = new_import(sandbox)
    sandbox.fault("batch_list", *[{"status": 503}] * 3)
    response = clerk_client.get(reverse("task_detail", args=[guid]))
    assert response.status_code == 200
    assert response.context["summary"].kickout_messages == MESSAGES
    assert response.context["retry_error"].status_code == 503
    page = response.content.decode()
    assert "batches, which could not be loaded" in page
    assert "Account not found" in page


def test_kickouts_that_fail_leave_the_retry_form_in_place(clerk_client, sandbox):
    """A 500 on the summary is the kickouts' error alone; the form still shows, nothing stored."""
    guid = new_import(sandbox)
    sandbox.fault("kickout_summary", *[{"status": 500}] * 3)
    response = clerk_client.get(reverse("task_detail", args=[guid]))
    assert response.status_code == 200
    assert isinstance(response.context["kickout_error"], Unavailable)
    assert response.context["kickout_error"].status_code == 500
    assert response.context["form"] is not None
    assert "The kickouts could not be loaded." in response.content.decode()
    assert ImportSnapshot.objects.get(task_guid=guid).row_count == 0


def test_a_missing_task_is_a_404_whatever_its_other_calls_answered(clerk_client, sandbox):
    """The task's own 404 decides the page; the kickouts asked beside it are thrown away."""
    missing = "0badc0de-0000-4000-8000-000000000000"
    response = clerk_client.get(reverse("task_detail", args=[missing]))
    assert response.status_code == 404
    assert not ImportSnapshot.objects.exists()


def test_a_task_that_is_not_a_bill_import_discards_the_kickouts_asked_for_it(clerk_client, sandbox):
    """An export task: its page says only bill imports have kickouts, and nothing is stored."""
    response = clerk_client.get(reverse("task_detail", args=[EXPORT_TASK_GUID]))
    assert response.status_code == 200
    assert "summary" not in response.context
    assert "only bill imports have kickouts to retry" in response.content.decode()
    assert not ImportSnapshot.objects.exists()


def test_each_call_at_once_keeps_its_own_typed_error_with_the_key_scrubbed(sandbox, settings):
    """A 401 echoing the key is `me`'s error alone, redacted; the task answers as usual."""
    sandbox.fault("me", {"status": 401, "echo": True})
    api = energycap.client()
    task, me, missing = api.at_once(
        partial(api.get_task, API_USER_KICKOUT_TASK_GUID),
        api.current_user,
        partial(api.get_task, "0badc0de-0000-4000-8000-000000000000"),
    )
    assert task.get().guid == API_USER_KICKOUT_TASK_GUID
    with pytest.raises(Unauthorized) as refused:
        me.get()
    assert settings.ENERGYCAP_API_KEY not in refused.value.message
    assert "[redacted]" in refused.value.message
    with pytest.raises(NotFound):
        missing.get()


def test_a_call_that_times_out_at_once_is_its_own_timeout(sandbox, settings):
    """The read timeout still holds per call: one hangs and times out, the other answers."""
    settings.ENERGYCAP_READ_TIMEOUT = 1
    sandbox.fault("me", {"hang": 3})
    api = energycap.client()
    me, task = api.at_once(api.current_user, partial(api.get_task, API_USER_KICKOUT_TASK_GUID))
    with pytest.raises(TimedOut):
        me.get()
    assert task.get().can_retry_kickouts


def test_calls_at_once_made_from_a_call_at_once_run_in_turn(sandbox):
    """Nested use never waits on its own pool: the inner calls run one after another."""
    api = energycap.client()
    guid = API_USER_KICKOUT_TASK_GUID

    def inner():
        return api.at_once(partial(api.kickout_summary, guid), api.current_user)

    task, nested = api.at_once(partial(api.get_task, guid), inner)
    assert task.get().guid == guid
    summary, _ = nested.get()
    assert summary.get().kickout_messages
