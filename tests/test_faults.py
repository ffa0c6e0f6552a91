"""EnergyCAP misbehaving, seen from the pages: a clear message or a late success, never a 500.

The client's own retry and timeout rules are proven in test_energycap_client.py; these tests
show what a clerk sees when they apply, through the sandbox's fault injection over real HTTP.
"""

from __future__ import annotations

import html
import re
import socket
import time
import uuid

import pytest
from django.urls import reverse

from kickouts.models import Outcome, RetryAttempt
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID, RUNNING_TASK_GUID

TASK = API_USER_KICKOUT_TASK_GUID
SELF_CONTAINED = "new self-contained batch"


def timed_get(client, url, **extra):
    started = time.monotonic()
    response = client.get(url, **extra)
    return response, time.monotonic() - started


def text_of(response) -> str:
    """The page's words, tags removed and entities decoded, spaces collapsed."""
    words = re.sub(r"<[^>]+>", " ", response.content.decode())
    return " ".join(html.unescape(words).split())


def gets_of(sandbox, endpoint: str, guid: str | None = None) -> list[dict]:
    return [e for e in sandbox.log(endpoint) if guid is None or e["path"].endswith(guid)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hidden_inputs(fragment: str) -> dict[str, str]:
    """The confirmation form's hidden fields, as the browser would send them back."""
    fields = {}
    for tag in re.findall(r"<input [^>]*>", fragment):
        name = re.search(r'name="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if name and 'type="hidden"' in tag:
            fields[name.group(1)] = html.unescape(value.group(1)) if value else ""
    return fields


def review_and_send(client, guid: str = TASK, **fields):
    """The browser's way: review (htmx), then send the confirmation form's own fields."""
    url = reverse("retry_form", args=[guid])
    data = {"action": "review", "form_token": str(uuid.uuid4()), **fields}
    review = client.post(url, data, HTTP_HX_REQUEST="true")
    assert "Check before sending" in review.content.decode(), text_of(review)
    confirmed = hidden_inputs(review.content.decode()) | {"action": "send"}
    return client.post(url, confirmed, HTTP_HX_REQUEST="true")


# --- reads: the task list, the task page and the status panel -----------------------------


def test_the_task_list_survives_two_503s(clerk_client, sandbox):
    """503, 503, 200: the page renders normally after three upstream requests."""
    sandbox.fault("task_list", {"status": 503}, {"status": 503})
    response = clerk_client.get(reverse("task_list"))
    assert response.status_code == 200
    assert "could not be loaded" not in text_of(response)
    assert '<table class="tasks stacked">' in response.content.decode()
    assert len(sandbox.log("task_list")) == 3
    assert [e["status"] for e in sandbox.log("task_list")] == [503, 503, 200]


def test_the_status_panel_survives_two_503s(clerk, clerk_client, sandbox):
    """The polled fragment: 503, 503, 200 for task_get, then the running task's status."""
    attempt = RetryAttempt.objects.create(
        requested_by=clerk,
        form_token=uuid.uuid4(),
        source_task_guid=TASK,
        batch_mode=SELF_CONTAINED,
        payload={},
        outcome=Outcome.SUBMITTED,
        new_task_guid=RUNNING_TASK_GUID,
    )
    sandbox.fault("task_get", {"status": 503}, {"status": 503})
    response = clerk_client.get(
        reverse("status_panel", args=[attempt.pk]), {"started": time.time()}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert "Processing" in text_of(response)
    assert "Last checked at" in text_of(response) and "alert-error" not in response.content.decode()
    assert len(gets_of(sandbox, "task_get", RUNNING_TASK_GUID)) == 3


def test_the_task_page_says_when_energycap_is_down(clerk_client, sandbox):
    """The task itself cannot be loaded: a clear message on the page, not a 500."""
    sandbox.fault("task_get", *[{"status": 503}] * 3)
    response = clerk_client.get(reverse("task_detail", args=[TASK]))
    assert response.status_code == 200
    assert "The task could not be loaded from EnergyCAP." in text_of(response)
    assert "HTTP 503" in text_of(response)


def test_a_short_retry_after_is_waited_for_and_the_page_renders(clerk_client, sandbox):
    """429 with Retry-After: 1 (under ENERGYCAP_MAX_RETRY_AFTER): about a second later, the list."""
    sandbox.fault("task_list", {"status": 429, "retryAfter": 1})
    response, elapsed = timed_get(clerk_client, reverse("task_list"))
    assert response.status_code == 200
    assert '<table class="tasks stacked">' in response.content.decode()
    assert 0.9 <= elapsed < 3
    assert len(sandbox.log("task_list")) == 2


def test_a_long_retry_after_gives_a_clear_message_at_once(clerk_client, sandbox):
    """429 with Retry-After: 120: no waiting two minutes; say so, after one request."""
    sandbox.fault("task_list", {"status": 429, "retryAfter": 120})
    response, elapsed = timed_get(clerk_client, reverse("task_list"))
    assert response.status_code == 200
    assert elapsed < 2  # no waiting: 120 s is over ENERGYCAP_MAX_RETRY_AFTER (3 s here)
    page = text_of(response)
    assert "The bill imports could not be loaded from EnergyCAP." in page
    assert "asked to wait 120 seconds; try again later" in page
    assert len(sandbox.log("task_list")) == 1


def test_a_hanging_upstream_gives_a_message_within_the_read_timeout(
    clerk_client, sandbox, settings
):
    """EnergyCAP hangs 10 s, the read timeout is 2 s: a 200 page with a message by 3 s."""
    settings.ENERGYCAP_READ_TIMEOUT = 2
    sandbox.fault("task_list", {"hang": 10})
    response, elapsed = timed_get(clerk_client, reverse("task_list"))
    assert response.status_code == 200
    assert elapsed < 2 + 1
    assert "EnergyCAP did not answer within 2 seconds." in text_of(response)
    assert len(sandbox.log("task_list")) == 1


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ([{"malformed": True}], "could not be read as JSON"),
        ([{"html": True, "status": 502}] * 3, "EnergyCAP reported an error (HTTP 502)."),
    ],
    ids=["malformed JSON", "an HTML error page"],
)
def test_unusable_answers_give_a_clear_message(clerk_client, sandbox, faults, message):
    """Truncated JSON or a proxy's HTML page: no 500, no upstream markup on our page."""
    sandbox.fault("task_list", *faults)
    response = clerk_client.get(reverse("task_list"))
    assert response.status_code == 200
    body = response.content.decode()
    assert message in text_of(response)
    assert "nginx" not in body and "alert('upstream')" not in body


def test_connection_refused_says_so_and_a_later_retry_goes_through(clerk_client, sandbox, settings):
    """Nothing listens: a clear message, no retry sent or left half-done; later it works."""
    working = settings.ENERGYCAP_BASE_URL
    settings.ENERGYCAP_BASE_URL = f"http://127.0.0.1:{closed_port()}"
    page = clerk_client.get(reverse("task_list"))
    assert page.status_code == 200
    assert "EnergyCAP could not be reached (connection refused)." in text_of(page)

    url = reverse("retry_form", args=[TASK])
    data = {"action": "send", "form_token": str(uuid.uuid4()), "batch_mode": SELF_CONTAINED}
    refused = clerk_client.post(url, data, HTTP_HX_REQUEST="true")
    assert refused.status_code == 200
    assert "connection refused" in text_of(refused)
    # Refused before anything was recorded, or recorded as not sent: never "may have imported".
    assert not RetryAttempt.objects.may_have_imported().exists()

    settings.ENERGYCAP_BASE_URL = working
    again = review_and_send(clerk_client, batch_mode=SELF_CONTAINED)
    assert again["HX-Redirect"] == RetryAttempt.objects.latest("id").get_absolute_url()
    assert RetryAttempt.objects.latest("id").outcome == Outcome.SUBMITTED
    assert sandbox.count("kickout_post") == 1


# --- the re-import POST -------------------------------------------------------------------


def test_a_503_on_the_re_import_is_shown_and_trying_again_checks_the_task_first(
    clerk_client, sandbox
):
    """One POST, "refused (HTTP 503)" on the retry page; its link sends again after a re-check."""
    sandbox.fault("kickout_post", {"status": 503})
    sent = review_and_send(clerk_client, batch_mode=SELF_CONTAINED, import_note="First go")
    first = RetryAttempt.objects.get()
    assert sent["HX-Redirect"] == first.get_absolute_url()
    assert (first.outcome, first.upstream_status_code) == (Outcome.REJECTED, 503)
    assert sandbox.count("kickout_post") == 1

    retry_page = clerk_client.get(first.get_absolute_url())
    assert "EnergyCAP refused the re-import (HTTP 503)." in text_of(retry_page)
    again_link = reverse("task_detail", args=[TASK]) + f"?again={first.pk}"
    assert again_link in retry_page.content.decode()
    form = clerk_client.get(again_link).context["form"]
    assert form.initial["batch_mode"] == SELF_CONTAINED
    assert form.initial["import_note"] == "First go"

    since = sandbox.log()[-1]["seq"]
    review_and_send(clerk_client, batch_mode=SELF_CONTAINED, import_note="First go")
    second = RetryAttempt.objects.latest("id")
    assert second.outcome == Outcome.SUBMITTED
    assert sandbox.count("kickout_post") == 2
    # Right before the second POST, the task was fetched again (beside the batches, at once)
    # to see it still has kickouts.
    calls = [e["endpoint"] for e in sandbox.log(since=since)]
    assert sorted(calls[-3:-1]) == ["batch_list", "task_get"]
    assert calls[-1] == "kickout_post"


def test_a_post_that_times_out_after_being_read_is_unknown_and_never_resent(
    clerk_client, sandbox, settings
):
    """EnergyCAP did the work but answered late: outcome unknown, zero re-sends, a warning."""
    settings.ENERGYCAP_READ_TIMEOUT = 1
    sandbox.fault("kickout_post", {"hang": 4, "apply": True})
    started = time.monotonic()
    sent = review_and_send(clerk_client, batch_mode=SELF_CONTAINED)
    elapsed = time.monotonic() - started
    attempt = RetryAttempt.objects.get()
    assert sent["HX-Redirect"] == attempt.get_absolute_url()
    assert attempt.outcome == Outcome.UNKNOWN
    assert elapsed < 4, "the clerk is not kept waiting for the late answer"
    page = text_of(clerk_client.get(attempt.get_absolute_url()))
    assert "Outcome unknown. EnergyCAP did not answer within 1 second. The request was" in page
    assert page.count("check the task list before retrying") == 1
    assert "never re-sends a re-import by itself" in page

    # The same clerk trying again is stopped: the first one may well have imported.
    url = reverse("retry_form", args=[TASK])
    data = {"action": "send", "form_token": str(uuid.uuid4()), "batch_mode": SELF_CONTAINED}
    again = clerk_client.post(url, data, HTTP_HX_REQUEST="true")
    assert "Only a supervisor" in text_of(again)
    assert sandbox.count("kickout_post") == 1
