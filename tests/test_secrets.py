"""The EnergyCAP API key never leaves the server: not in a page, a log line or an error report."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from django.core.signals import got_request_exception
from django.test import Client
from django.urls import reverse
from django.views.debug import ExceptionReporter

from dashboard.sentry import FILTERED, make_before_send, scrub
from kickouts import follow_up
from kickouts.follow_up_models import FollowUp
from kickouts.models import Outcome, RetryAttempt
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID, RUNNING_TASK_GUID

from .conftest import signed_in_client
from .factories import follow, make_retry
from .retry_helpers import post_retry
from .test_access import EXPECTED, PUBLIC, project_routes, send, url_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def api_key() -> str:
    key = django_settings.ENERGYCAP_API_KEY
    assert len(key) >= 12, "the search below needs a key long enough not to match by chance"
    return key


def wire_text(response) -> str:
    """Everything the browser receives: status line, headers, cookies and body."""
    body = (
        b"".join(response.streaming_content)
        if response.streaming
        else response.content  # a file, a CSV or a page
    )
    head = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    return f"{response.status_code}\n{head}\n{response.cookies.output()}\n" + body.decode(
        "utf-8", "replace"
    )


def log_text(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in records)


@pytest.fixture
def everyone(client, outsider, clerk, other_clerk, supervisor) -> dict[str, Client]:
    """A signed-out visitor and one signed-in client per role."""
    users = {"outsider": outsider, "clerk": clerk, "other_clerk": other_clerk}
    users["supervisor"] = supervisor
    return {"signed out": client} | {role: signed_in_client(u) for role, u in users.items()}


def test_no_page_fragment_or_log_line_contains_the_key(everyone, clerk, sandbox, caplog):
    """Every route, every role, page and htmx, plus a real retry and upstream errors."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    clerk_client = everyone["clerk"]
    # A real retry (review, then send), so retry pages show a real payload and answer.
    seen = [
        post_retry(clerk_client, API_USER_KICKOUT_TASK_GUID, batch_mode="new self-contained batch")
    ]
    seen.append(
        post_retry(
            clerk_client,
            API_USER_KICKOUT_TASK_GUID,
            action="send",
            batch_mode="new self-contained batch",
        )
    )
    attempt = RetryAttempt.objects.get()
    make_retry(
        clerk,
        source_task_guid=RUNNING_TASK_GUID,
        outcome=Outcome.UNKNOWN,
        upstream_message="EnergyCAP did not answer within 1 second.",
    )
    for route in project_routes():
        url = url_for(route, guid=API_USER_KICKOUT_TASK_GUID, pk=attempt.pk)
        kinds = ["GET", "HTMX"] if EXPECTED[route.name] == PUBLIC else EXPECTED[route.name]
        for c in everyone.values():
            seen.extend(send(c, kind, url) for kind in kinds)
    seen.append(everyone["supervisor"].get(reverse("health_ready"), {"upstream": "1"}))
    # Upstream errors: a refused key (its page talks about the key), HTML and bad JSON.
    sandbox.fault("task_list", {"status": 401})
    sandbox.fault("kickout_summary", *[{"html": True, "status": 502}] * 3)
    sandbox.fault("kickout_detail", {"malformed": True})
    seen.append(clerk_client.get(reverse("task_list")))
    seen.append(clerk_client.get(reverse("task_detail", args=[API_USER_KICKOUT_TASK_GUID])))
    seen.append(clerk_client.get(reverse("task_detail", args=[API_USER_KICKOUT_TASK_GUID])))
    assert all(r.status_code != 500 for r in seen)

    key = api_key()
    assert len(seen) > 100
    leaks = [r.request["PATH_INFO"] for r in seen if key in wire_text(r)]
    assert leaks == []
    assert caplog.records, "logging was captured"
    assert key not in log_text(caplog.records)


def test_error_pages_with_debug_off_do_not_contain_the_key(clerk_client, outsider_client):
    """404, 403 and 400 are the project's own short pages, with no settings or tracebacks."""
    assert not django_settings.DEBUG
    responses = {
        404: clerk_client.get("/no/such/page/"),
        403: outsider_client.get(reverse("retry_form", args=[API_USER_KICKOUT_TASK_GUID])),
        400: clerk_client.get(reverse("task_list"), HTTP_HOST="evil.example.com"),
    }
    for status, response in responses.items():
        assert response.status_code == status
        assert api_key() not in wire_text(response)
        assert "Traceback" not in wire_text(response)
        assert "ENERGYCAP" not in wire_text(response)


class UpstreamBug(RuntimeError):
    """Stands for any unexpected failure inside the HTTP stack, below `EnergyCap._request`."""


@pytest.fixture
def broken_transport(monkeypatch):
    """The transport fails after the request (with its ECI-ApiKey header) was prepared."""

    def send(self, request, **kwargs):
        assert request.headers["ECI-ApiKey"]  # the key really is in the frames below
        raise UpstreamBug("the connection pool is in a state nobody expected")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)


def test_a_500_page_log_and_exception_report_do_not_contain_the_key(
    clerk_client, broken_transport, caplog
):
    """An unexpected exception inside the client: the 500 page, the log and the report."""
    caplog.set_level(logging.DEBUG)
    reports = []

    def keep(sender, request, **kwargs):
        # What AdminEmailHandler and Sentry get: the request and the live traceback.
        reports.append(ExceptionReporter(request, *sys.exc_info()))

    got_request_exception.connect(keep)
    try:
        clerk_client.raise_request_exception = False
        response = clerk_client.get(reverse("task_list"))
    finally:
        got_request_exception.disconnect(keep)

    assert response.status_code == 500
    assert "Something went wrong" in wire_text(response)
    [report] = reports
    frames = [frame["function"] for frame in report.get_traceback_frames()]
    assert "_request" in frames, "raised inside EnergyCap._request, with the client in locals"
    html = report.get_traceback_html()
    assert "&lt;EnergyCap http://127.0.0.1:" in html  # the client is there, by its repr
    key = api_key()
    assert key not in wire_text(response)
    assert key not in report.get_traceback_text()
    assert key not in html
    assert key not in log_text(caplog.records)
    assert any(r.name == "django.request" and r.exc_info for r in caplog.records)


def test_the_sandbox_request_log_keeps_no_key(clerk_client, sandbox, sandbox_process):
    """The fake's own log records that a key came, never its value."""
    clerk_client.get(reverse("task_detail", args=[API_USER_KICKOUT_TASK_GUID]))
    entries = sandbox.log()
    assert entries and all(entry["hasKey"] for entry in entries)
    key = api_key()
    assert key not in json.dumps(entries)
    assert key not in sandbox_process.stderr_text()


# --- Sentry ------------------------------------------------------------------------------


def test_before_send_scrubs_the_key_from_the_whole_event():
    """Messages, exception values, breadcrumbs, headers, dict keys, lists and URL-encoded."""
    key = "k3y/with+odd=chars-7c1e9d"
    event = {
        "message": f"failed with key {key}",
        "exception": {
            "values": [
                {
                    "type": "RuntimeError",
                    "value": f"proxy echoed ECI-ApiKey: {key}",
                    "stacktrace": {"frames": [{"vars": {"api_key": key, key: [key, (key,)]}}]},
                }
            ]
        },
        "breadcrumbs": {
            "values": [{"message": "GET /api/v3/me?k=k3y%2Fwith%2Bodd%3Dchars-7c1e9d"}]
        },
        "request": {"headers": {"ECI-ApiKey": key}, "query_string": "k=k3y%2Fwith%2Bodd%3Dchars"},
        "extra": {"raw": key.encode(), "count": 3, "none": None},
    }
    cleaned = make_before_send(key)(event, {})
    text = json.dumps(cleaned, default=lambda b: b.decode())
    assert key not in text
    assert "k3y%2Fwith%2Bodd%3Dchars-7c1e9d" not in text
    assert cleaned["request"]["headers"]["ECI-ApiKey"] == FILTERED
    assert cleaned["extra"]["count"] == 3 and cleaned["extra"]["none"] is None
    assert cleaned["message"] == f"failed with key {FILTERED}"
    assert scrub({"a": "b"}, "") == {"a": "b"}


SENTRY_PROBE = """
import json, logging, django, requests, sentry_sdk
from sentry_sdk.transport import Transport
django.setup()
from kickouts.energycap import EnergyCap

sent = []
class Keep(Transport):
    def capture_envelope(self, envelope):
        sent.append(envelope.serialize().decode("utf-8", "replace"))

client = sentry_sdk.get_client()
options = client.options
client.transport = Keep(options)

def send(self, request, **kwargs):
    # A proxy that echoes the request headers into its error: the worst case.
    raise RuntimeError("proxy refused: " + repr(dict(request.headers)))
requests.adapters.HTTPAdapter.send = send

logging.getLogger("kickouts.energycap").warning("about to call EnergyCAP")
try:
    EnergyCap("http://127.0.0.1:9", "PROBE-KEY-0123456789abcdef").current_user()
except RuntimeError:
    sentry_sdk.capture_exception()
sentry_sdk.flush(2)
print(json.dumps({
    "send_default_pii": options["send_default_pii"],
    "include_local_variables": options["include_local_variables"],
    "before_send": getattr(options["before_send"], "__module__", None),
    "sent": sent,
}))
"""


def test_settings_start_sentry_without_pii_locals_or_the_key_when_a_dsn_is_set():
    """SENTRY_DSN set: settings.py starts Sentry through dashboard.sentry, and events are clean."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "SENTRY_DSN": "https://public@sentry.invalid/1",
        "ENERGYCAP_API_KEY": "PROBE-KEY-0123456789abcdef",
        "ENERGYCAP_BASE_URL": "http://127.0.0.1:9",
    }
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", SENTRY_PROBE],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["send_default_pii"] is False
    assert found["include_local_variables"] is False
    assert found["before_send"] == "dashboard.sentry"
    [envelope] = found["sent"]
    assert "proxy refused" in envelope and FILTERED in envelope
    assert "about to call EnergyCAP" in envelope  # breadcrumbs are scrubbed too, not dropped
    assert "PROBE-KEY-0123456789abcdef" not in envelope
    assert '"vars"' not in envelope


# --- Upstream text that repeats the key ---------------------------------------------------


def shows_no_secret(response) -> bool:
    """Neither the key nor any other request header's value ("kickouts-dashboard")."""
    text = wire_text(response)
    return api_key() not in text and "kickouts-dashboard" not in text


@pytest.mark.parametrize(
    ("endpoint", "faults", "page"),
    [
        ("task_list", [{"status": 400, "echo": True}], "task_list"),
        ("task_get", [{"status": 401, "echo": True}], "task_detail"),
        ("kickout_summary", [{"status": 500, "echo": True}], "task_detail"),
        ("task_get", [{"html": True, "status": 502, "echo": True}] * 3, "task_detail"),
        ("batch_list", [{"status": 409, "echo": True}], "retry_form"),
    ],
    ids=[
        "JSON message on the task list",
        "401 naming the key",
        "500 on the kickouts",
        "HTML page echoing the headers",
        "refused batches on the retry form",
    ],
)
def test_an_error_that_echoes_the_request_headers_shows_no_secret(
    clerk_client, sandbox, caplog, endpoint, faults, page
):
    """The sandbox repeats our headers in its error, as gateways do: the page redacts them."""
    caplog.set_level(logging.DEBUG)
    sandbox.fault(endpoint, *faults)
    args = [] if page == "task_list" else [API_USER_KICKOUT_TASK_GUID]
    response = clerk_client.get(reverse(page, args=args))
    assert response.status_code == 200
    assert shows_no_secret(response)
    if not faults[0].get("html"):
        assert "[redacted]" in wire_text(response), "EnergyCAP's own words are still shown"
    assert api_key() not in log_text(caplog.records)


def test_a_task_message_and_note_quoting_the_key_are_redacted_everywhere(
    clerk, clerk_client, sandbox
):
    """The task list, the task page, the status panel, the retry page and the record."""
    key = api_key()
    sandbox.update_task(
        API_USER_KICKOUT_TASK_GUID,
        message=f"Import used ECI-ApiKey {key}",
        task_note=f"key={key}",
    )
    pages = [
        clerk_client.get(reverse("task_list")),
        clerk_client.get(reverse("task_detail", args=[API_USER_KICKOUT_TASK_GUID])),
    ]
    assert "key=[redacted]" in wire_text(pages[0])
    assert "Import used ECI-ApiKey [redacted]" in wire_text(pages[1])

    # A retry whose new task ends with a message quoting the key.
    sent = post_retry(
        clerk_client,
        API_USER_KICKOUT_TASK_GUID,
        action="send",
        batch_mode="new self-contained batch",
    )
    assert sent.status_code == 302
    attempt = RetryAttempt.objects.get()
    sandbox.update_task(attempt.new_task_guid, status="Failed", message=f"Echo: {key}")
    follow_up.sweep()  # the worker's sweep sees the end, and then reports it
    follow_up.sweep()
    panel = clerk_client.get(
        reverse("status_panel", args=[attempt.pk]), {"started": "0"}, HTTP_HX_REQUEST="true"
    )
    pages += [panel, clerk_client.get(attempt.get_absolute_url())]
    assert "Echo: [redacted]" in wire_text(panel)
    assert all(shows_no_secret(r) for r in pages)
    assert FollowUp.objects.get(pk=attempt.pk).message == "Echo: [redacted]"


@pytest.mark.parametrize(
    "fault",
    [{"status": 400, "echo": True}, {"status": 401, "echo": True}, {"status": 502, "echo": True}],
    ids=["refused", "401", "gateway"],
)
def test_a_re_import_error_echoing_the_key_is_stored_and_shown_redacted(
    clerk_client, outsider_client, supervisor_client, sandbox, fault
):
    """The retry record keeps EnergyCAP's words without the key; no page shows it."""
    sandbox.fault("kickout_post", fault)
    post_retry(
        clerk_client,
        API_USER_KICKOUT_TASK_GUID,
        action="send",
        batch_mode="new self-contained batch",
    )
    attempt = RetryAttempt.objects.get()
    assert "[redacted]" in attempt.upstream_message
    assert api_key() not in json.dumps(observable_fields(attempt))
    pages = [
        clerk_client.get(attempt.get_absolute_url()),
        supervisor_client.get(attempt.get_absolute_url()),
        supervisor_client.get(reverse("history")),
        supervisor_client.get(reverse("history_csv")),
        clerk_client.get(reverse("task_list")),
        outsider_client.get(reverse("task_list")),
        outsider_client.get(reverse("task_detail", args=[API_USER_KICKOUT_TASK_GUID])),
    ]
    assert all(r.status_code == 200 for r in pages)
    assert all(shows_no_secret(r) for r in pages)


def observable_fields(attempt: RetryAttempt) -> dict:
    return {f.name: str(getattr(attempt, f.attname)) for f in attempt._meta.concrete_fields}


def test_the_data_migration_redacts_the_key_in_records_made_before(transactional_db, clerk):
    """Records that stored an echoed key: 0004 replaces it, and leaves the rest as it was."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    key = api_key()
    before, after = (
        ("kickouts", "0003_retryattempt_retry_running_time"),
        (
            "kickouts",
            "0004_scrub_upstream_secrets",
        ),
    )
    leaked = make_retry(
        clerk,
        upstream_message=f"Bad Request: request headers ECI-ApiKey: {key}; Accept: */*",
        new_task_guid=str(uuid.uuid4()),
    )
    # Made before 0011, the new task's message was a column of the retry; 0011 carries the
    # follow-up's back there when migrating back.
    follow(leaked, message=f"{key}{key}")
    clean = make_retry(clerk, upstream_message="Nothing secret here", outcome=Outcome.REJECTED)
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    executor.loader.build_graph()
    executor.migrate([after])
    # The model as 0004 left it: later migrations move fields the current model reads.
    then = executor.loader.project_state([after]).apps.get_model("kickouts", "RetryAttempt")
    texts = dict(
        then.objects.values_list("pk", "upstream_message").filter(pk__in=[leaked.pk, clean.pk])
    )
    leaked_task_message = then.objects.values_list("new_task_message", flat=True).get(pk=leaked.pk)
    assert texts[leaked.pk] == "Bad Request: request headers ECI-ApiKey: [redacted]; Accept: */*"
    assert leaked_task_message == "[redacted][redacted]"
    assert texts[clean.pk] == "Nothing secret here"
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # the later migrations, for later tests


def test_kickout_messages_and_a_file_name_quoting_the_key_are_redacted(clerk_client, sandbox):
    """The kickout summary, its message links and the detail grid: no key, EnergyCAP's words."""
    key = api_key()
    task = sandbox.add_task(kickout_messages=[f"Bad header ECI-ApiKey={key}"], file_name=key)
    guid = task["taskGUId"]
    page = clerk_client.get(reverse("task_detail", args=[guid]))
    chosen = clerk_client.get(
        reverse("task_detail", args=[guid]), {"message": "Bad header ECI-ApiKey=[redacted]"}
    )
    assert page.status_code == chosen.status_code == 200
    assert "Bad header ECI-ApiKey=[redacted]" in wire_text(page)
    assert shows_no_secret(page) and shows_no_secret(chosen)
