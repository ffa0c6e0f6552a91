"""What each answer to the re-import POST proves, row by row of the client's table.

HTTP answers go through the whole dashboard (review, send) against the sandbox's fault
injection; failures without an answer go through the client against real sockets.
"""

from __future__ import annotations

import socket
import uuid

import pytest
from django.urls import reverse

from kickouts.energycap import REIMPORT_ANSWERS, EnergyCap, Verdict
from kickouts.models import Outcome, RetryAttempt
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID

from .test_faults import closed_port, review_and_send, text_of

TASK = API_USER_KICKOUT_TASK_GUID
SELF_CONTAINED = "new self-contained batch"
BODY = {"batchSettings": {"batchMode": SELF_CONTAINED}}

# Table row -> the sandbox fault that produces it on the POST.
SANDBOX_ROWS = {
    "2xx with a task GUID": None,
    "2xx without a task GUID": {"status": 200},
    "2xx not JSON": {"malformed": True},
    "400": {"status": 400},
    "401": {"status": 401},
    "403": {"status": 403},
    "404": {"status": 404},
    "409": {"status": 409},
    "422": {"status": 422},
    "429": {"status": 429, "retryAfter": 30},
    "other 4xx": {"status": 418},
    "500": {"status": 500},
    "502": {"html": True, "status": 502},
    "503": {"status": 503},
    "504": {"status": 504},
    "other 5xx": {"status": 507},
    "other status": {"status": 302},
    "timeout after sending": {"hang": 3, "apply": True},
    "dropped after sending": {"drop": True},
}
# Rows where no answer comes at all: proven against sockets below.
SOCKET_ROWS = {"connection refused", "timeout before sending", "dropped before sending"}

RECORDED = {
    Verdict.ACCEPTED: Outcome.SUBMITTED,
    Verdict.REFUSED: Outcome.REJECTED,
    Verdict.NOT_SENT: Outcome.NOT_SENT,
    Verdict.UNKNOWN: Outcome.UNKNOWN,
}
PAGE_WORDS = {
    Verdict.ACCEPTED: "EnergyCAP started a new import of these kickouts",
    Verdict.REFUSED: "Nothing was imported: you may try again, no supervisor needed.",
    Verdict.UNKNOWN: "EnergyCAP may have started the import.",
}


def test_every_row_of_the_table_is_proven_here():
    """A new row in REIMPORT_ANSWERS needs a test in this file."""
    assert set(SANDBOX_ROWS) | SOCKET_ROWS == set(REIMPORT_ANSWERS)
    assert all(reason.strip() for _, reason in REIMPORT_ANSWERS.values())


@pytest.mark.parametrize("row", list(SANDBOX_ROWS))
def test_each_answer_to_the_re_import_is_recorded_as_what_it_proves(
    row, clerk_client, sandbox, settings
):
    """One POST; the record, the retry page and the next retry follow the row's verdict."""
    settings.ENERGYCAP_READ_TIMEOUT = 1
    if SANDBOX_ROWS[row] is not None:
        sandbox.fault("kickout_post", SANDBOX_ROWS[row])
    verdict = REIMPORT_ANSWERS[row][0]

    sent = review_and_send(clerk_client, batch_mode=SELF_CONTAINED)
    attempt = RetryAttempt.objects.get()
    assert sent["HX-Redirect"] == attempt.get_absolute_url()
    assert attempt.outcome == RECORDED[verdict]
    assert REIMPORT_ANSWERS[row][1] in attempt.upstream_message or verdict == Verdict.ACCEPTED
    assert sandbox.count("kickout_post") == 1
    page = text_of(clerk_client.get(attempt.get_absolute_url()))
    assert PAGE_WORDS[verdict] in page

    # The same clerk tries again: a refusal lets them, anything that may have imported
    # needs a supervisor's confirmation, and nothing is re-sent by itself.
    url = reverse("retry_form", args=[TASK])
    data = {"action": "review", "form_token": str(uuid.uuid4()), "batch_mode": SELF_CONTAINED}
    again = text_of(clerk_client.post(url, data, HTTP_HX_REQUEST="true"))
    if verdict == Verdict.REFUSED:
        assert "Check before sending" in again and "Only a supervisor" not in again
    else:
        assert "Only a supervisor" in again
    assert sandbox.count("kickout_post") == 1


def test_a_429_says_when_to_try_again_and_asks_no_supervisor(clerk_client, sandbox):
    """Rate limited: refused, with the wait EnergyCAP asked for, and a try-again link."""
    sandbox.fault("kickout_post", {"status": 429, "retryAfter": 30})
    review_and_send(clerk_client, batch_mode=SELF_CONTAINED)
    attempt = RetryAttempt.objects.get()
    assert (attempt.outcome, attempt.upstream_status_code) == (Outcome.REJECTED, 429)
    response = clerk_client.get(attempt.get_absolute_url())
    assert "try again in 30 seconds" in text_of(response)
    assert f"?again={attempt.pk}" in response.content.decode()
    assert not RetryAttempt.objects.may_have_imported().exists()


@pytest.mark.parametrize("status", [502, 504])
def test_a_gateway_error_is_never_called_a_refusal(status, clerk_client, sandbox):
    """502 and 504 may hide a started import: outcome unknown, no try-again link."""
    sandbox.fault("kickout_post", {"status": status})
    review_and_send(clerk_client, batch_mode=SELF_CONTAINED)
    attempt = RetryAttempt.objects.get()
    assert attempt.outcome == Outcome.UNKNOWN
    response = clerk_client.get(attempt.get_absolute_url())
    assert "Nothing was imported" not in text_of(response)
    assert "?again=" not in response.content.decode()


def test_a_refused_connection_is_not_sent(settings):
    """Nothing listens on the port: the request never left."""
    api = EnergyCap(f"http://127.0.0.1:{closed_port()}", settings.ENERGYCAP_API_KEY)
    answer = api.reimport_kickouts(TASK, BODY)
    assert (answer.answer, answer.verdict) == ("connection refused", Verdict.NOT_SENT)
    assert "connection refused" in answer.message


def test_a_connection_that_cannot_be_opened_in_time_is_not_sent(settings):
    """A listener whose backlog is full never completes the handshake: a connect timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        held = []
        try:
            # Fill the accept queue; the next handshake is then never answered.
            for _ in range(8):
                probe = socket.socket()
                probe.settimeout(0.3)
                try:
                    probe.connect(("127.0.0.1", port))
                except TimeoutError:
                    probe.close()
                    break
                held.append(probe)
            api = EnergyCap(
                f"http://127.0.0.1:{port}", settings.ENERGYCAP_API_KEY, connect_timeout=0.5
            )
            answer = api.reimport_kickouts(TASK, BODY)
        finally:
            for probe in held:
                probe.close()
    assert (answer.answer, answer.verdict) == ("timeout before sending", Verdict.NOT_SENT)


# The broadcast address: the kernel refuses the connect itself (no route, or EACCES).
@pytest.mark.allow_hosts(["127.0.0.1", "255.255.255.255"])
def test_a_connection_that_fails_while_being_opened_is_not_sent(settings):
    """No route to the host (or not allowed to it): the failure came before any write."""
    api = EnergyCap("http://255.255.255.255:80", settings.ENERGYCAP_API_KEY, connect_timeout=1)
    answer = api.reimport_kickouts(TASK, BODY)
    assert (answer.answer, answer.verdict) == ("dropped before sending", Verdict.NOT_SENT)
