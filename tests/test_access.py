"""Who may open what: every URL, for every role, as a page, as an htmx fragment and as a POST.

The table below is the permission matrix. It is checked against the URLconf itself, so a new
URL cannot ship without someone deciding (here) who may open it.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter

from kickouts.converters import GuidConverter
from kickouts.models import ImportSnapshot, Outcome, RetryAttempt, SnapshotState
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID, RUNNING_TASK_GUID

from .conftest import signed_in_client
from .factories import make_retry

# Not ours to test here: Django's admin has its own staff checks, and the sign-in views are
# where a signed-out visitor is sent.
SKIPPED_PREFIXES = ("admin/",)
SKIPPED_NAMES = {"login", "logout"}

ROLES = ("outsider", "clerk", "other_clerk", "supervisor")
LOGIN = "login"  # a signed-out visitor is sent to sign in (302, or HX-Redirect for htmx)
PUBLIC = "public"  # health endpoints: anyone, signed in or not (tests/test_health.py)

# "clerk" owns the retry used for <int:pk>; "other_clerk" is another clerk in AP staff.
EVERYONE = dict.fromkeys(ROLES, 200)
RETRIERS = {"outsider": 403, "clerk": 200, "other_clerk": 200, "supervisor": 200}
OWNER_OR_SUPERVISOR = {"outsider": 404, "clerk": 200, "other_clerk": 404, "supervisor": 200}
# Marking an import handled (or reopening it) answers with a redirect back.
MARKERS = {"outsider": 403, "clerk": 302, "other_clerk": 302, "supervisor": 302}
# Without htmx the panel's URL sends the browser to the retry page it belongs to.
USERNAMES = {"outsider": "nora", "clerk": "carla", "other_clerk": "oscar", "supervisor": "sam"}
PANEL_PAGE = {"outsider": 404, "clerk": 302, "other_clerk": 404, "supervisor": 302}

# route name -> request kind -> role -> status. Kinds: GET (a page), HTMX (a GET with
# HX-Request), POST and HTMX POST (only where the view takes a POST).
EXPECTED: dict[str, dict[str, dict[str, int]] | str] = {
    "home": {"GET": dict.fromkeys(ROLES, 302)},
    "task_list": {"GET": EVERYONE, "HTMX": EVERYONE},
    "task_detail": {"GET": EVERYONE, "HTMX": EVERYONE},
    "retry_form": {"GET": RETRIERS, "HTMX": RETRIERS, "POST": RETRIERS, "HTMX POST": RETRIERS},
    "smart_batch_preview": {"GET": RETRIERS, "HTMX": RETRIERS},
    "retry_detail": {"GET": OWNER_OR_SUPERVISOR, "HTMX": OWNER_OR_SUPERVISOR},
    "status_panel": {"GET": PANEL_PAGE, "HTMX": OWNER_OR_SUPERVISOR},
    # The bulk retry's own routes; <int:pk> is the clerk's retry's id, and no bulk has it.
    "bulk_form": {"POST": RETRIERS, "HTMX POST": RETRIERS},
    "bulk_detail": {"GET": dict.fromkeys(ROLES, 404), "HTMX": dict.fromkeys(ROLES, 404)},
    "bulk_cancel": {"POST": {**dict.fromkeys(ROLES, 404), "outsider": 403}},
    "bulk_list": {
        "GET": {**dict.fromkeys(ROLES, 403), "supervisor": 200},
        "HTMX": {**dict.fromkeys(ROLES, 403), "supervisor": 200},
    },
    "history": {"GET": RETRIERS, "HTMX": RETRIERS},
    "history_csv": {"GET": RETRIERS},
    # The overview: supervisors and AP staff (their own work), nobody else.
    "overview": {"GET": RETRIERS, "HTMX": RETRIERS},
    "overview_csv": {"GET": RETRIERS},
    "queue": {"GET": EVERYONE, "HTMX": EVERYONE},
    "queue_group": {"GET": EVERYONE, "HTMX": EVERYONE},
    "queue_csv": {"GET": EVERYONE},
    "import_csv": {"GET": EVERYONE},
    # No reason chosen in the matrix's POST: the view sends the clerk back to the task page.
    "mark_handled": {"POST": MARKERS},
    "mark_many_handled": {"POST": MARKERS},
    "reopen": {"POST": MARKERS},
    # Only a supervisor settles an "outcome unknown" retry; the matrix's POST records nothing
    # (no decision chosen) and sends them back to the retry page.
    "reconcile_retry": {
        "POST": {"outsider": 403, "clerk": 403, "other_clerk": 403, "supervisor": 302}
    },
    # The "outcome unknown" retries waiting for a decision: for those who may decide.
    "waiting_for_decision": {
        "GET": {**dict.fromkeys(ROLES, 403), "supervisor": 200},
        "HTMX": {**dict.fromkeys(ROLES, 403), "supervisor": 200},
    },
    # The corrected-file form, asked for no import (the matrix names none): it says so (400).
    "corrected_file_form": {
        kind: {**dict.fromkeys(ROLES, 400), "outsider": 403}
        for kind in ("GET", "HTMX", "POST", "HTMX POST")
    },
    # The clerk's retry is a re-import: it has no file to download, for anyone.
    "corrected_file_download": {"GET": dict.fromkeys(ROLES, 404)},
    "user_settings": {
        "GET": EVERYONE,
        "HTMX": EVERYONE,
        "POST": dict.fromkeys(ROLES, 302),  # saved, then back to the page
        "HTMX POST": dict.fromkeys(ROLES, 302),
    },
    "health_live": PUBLIC,
    "health_ready": PUBLIC,
}


@dataclass(frozen=True)
class Route:
    name: str
    route: str
    converters: dict


def project_routes() -> list[Route]:
    """Every named route of the URLconf, minus the admin and the sign-in views."""
    found: list[Route] = []

    def walk(patterns, prefix: str, converters: dict, namespace: str) -> None:
        for entry in patterns:
            route = prefix + str(entry.pattern)
            merged = {**converters, **getattr(entry.pattern, "converters", {})}
            if route.startswith(SKIPPED_PREFIXES):
                continue
            if isinstance(entry, URLResolver):
                inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                walk(entry.url_patterns, route, merged, inner)
            elif isinstance(entry, URLPattern):
                assert entry.name, f"{route} has no name, so no row in the permission table"
                name = namespace + entry.name
                if name not in SKIPPED_NAMES:
                    found.append(Route(name, route, merged))

    walk(get_resolver().url_patterns, "", {}, "")
    return found


def url_for(route: Route, *, guid: str, pk: int) -> str:
    """The route's URL with a real sandbox task GUID and a real retry id filled in."""
    kwargs = {}
    for argument, converter in route.converters.items():
        if isinstance(converter, GuidConverter):
            kwargs[argument] = guid
        elif isinstance(converter, IntConverter):
            kwargs[argument] = pk
        else:  # pragma: no cover - tells the next person what to add
            raise AssertionError(f"no test value for <{argument}> in {route.route}")
    return reverse(route.name, kwargs=kwargs)


def send(client: Client, kind: str, url: str):
    """One request of the given kind; POSTs only choose a batch mode, they never send."""
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_CURRENT_URL": "http://testserver" + url}
    if kind == "GET":
        return client.get(url)
    if kind == "HTMX":
        return client.get(url, **htmx)
    data = {"action": "choose", "batch_mode": "new self-contained batch"}
    if kind == "POST":
        return client.post(url, data)
    if kind == "HTMX POST":
        return client.post(url, data, **htmx)
    raise AssertionError(kind)


def observable(attempt: RetryAttempt) -> dict:
    """What a retry record says about the request, leaving out `new_task_*`: those cache
    what EnergyCAP last said about the new task, which the status panel refreshes."""
    return {
        field.attname: getattr(attempt, field.attname)
        for field in RetryAttempt._meta.concrete_fields
        if not field.name.startswith("new_task_") or field.name == "new_task_guid"
    }


@pytest.fixture
def clerks_retry(clerk) -> RetryAttempt:
    """Carla's retry, whose new import task is still running."""
    return make_retry(
        clerk, source_task_guid=API_USER_KICKOUT_TASK_GUID, new_task_guid=RUNNING_TASK_GUID
    )


@pytest.fixture
def queued_import(db) -> ImportSnapshot:
    """The kickouts of the API user's import, as the dashboard stored them."""
    return ImportSnapshot.objects.create(
        task_guid=API_USER_KICKOUT_TASK_GUID, task_id=47001, state=SnapshotState.READY
    )


@pytest.fixture
def clients(outsider, clerk, other_clerk, supervisor) -> dict[str, Client]:
    users = {"outsider": outsider, "clerk": clerk, "other_clerk": other_clerk}
    users["supervisor"] = supervisor
    return {role: signed_in_client(user) for role, user in users.items()}


def _matrix_routes() -> list[str]:
    return sorted(name for name, expected in EXPECTED.items() if expected != PUBLIC)


def test_every_url_has_a_row_in_the_permission_table():
    """A new URL fails this test until someone decides who may open it."""
    assert {route.name for route in project_routes()} == set(EXPECTED)


@pytest.mark.parametrize("name", _matrix_routes())
def test_a_signed_out_visitor_is_sent_to_sign_in_everywhere(
    name, client, sandbox, clerks_retry, caplog
):
    """Pages redirect to sign-in; htmx gets HX-Redirect; nothing is asked of EnergyCAP."""
    route = next(r for r in project_routes() if r.name == name)
    url = url_for(route, guid=API_USER_KICKOUT_TASK_GUID, pk=clerks_retry.pk)
    login = reverse("login")
    caplog.set_level(logging.INFO, logger="kickouts.access")
    for kind in EXPECTED[name]:
        caplog.clear()
        response = send(client, kind, url)
        refusals = [r.getMessage() for r in caplog.records if r.name == "kickouts.access"]
        assert any("signed-out" in m and url in m for m in refusals), (kind, refusals)
        if kind.startswith("HTMX"):
            assert response.status_code == 200, (kind, url)
            assert response["HX-Redirect"].startswith(login + "?next="), (kind, url)
        else:
            assert response.status_code == 302, (kind, url)
            assert response["Location"].startswith(login + "?next="), (kind, url)
    assert sandbox.log() == []


@pytest.mark.parametrize("name", _matrix_routes())
def test_each_role_gets_exactly_what_the_table_says(
    name, clients, sandbox, clerks_retry, queued_import, caplog
):
    """No group: tasks only. AP staff: retries, own retry pages. Supervisors: everything."""
    route = next(r for r in project_routes() if r.name == name)
    url = url_for(route, guid=API_USER_KICKOUT_TASK_GUID, pk=clerks_retry.pk)
    caplog.set_level(logging.INFO, logger="kickouts.access")
    got, wanted = {}, {}
    for kind, by_role in EXPECTED[name].items():
        for role in ROLES:
            caplog.clear()
            response = send(clients[role], kind, url)
            status = response.status_code
            # A status panel whose task ended answers 286: "stop polling", still a success.
            got[kind, role] = 200 if status == 286 else status
            wanted[kind, role] = by_role[role]
            if status == 403:
                # The refusal names who tried what, for whoever reads the logs.
                refusals = [r.getMessage() for r in caplog.records if r.name == "kickouts.access"]
                assert any(USERNAMES[role] in m and url in m for m in refusals), refusals
    assert got == wanted
    assert sandbox.count("kickout_post") == 0


def test_health_endpoints_are_public_by_design(client, db):
    """Load balancers do not sign in (what the answers say: tests/test_health.py)."""
    for name in (n for n, expected in EXPECTED.items() if expected == PUBLIC):
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        assert response["Content-Type"] == "application/json"


def test_a_clerk_gets_404_for_another_clerks_retry_and_a_supervisor_sees_it(
    other_clerk, clients, clerks_retry
):
    """Retry pages belong to who asked and to supervisors; others cannot tell they exist."""
    oscars = make_retry(
        other_clerk, source_task_guid=API_USER_KICKOUT_TASK_GUID, outcome=Outcome.REJECTED
    )
    assert clients["clerk"].get(oscars.get_absolute_url()).status_code == 404
    assert clients["other_clerk"].get(oscars.get_absolute_url()).status_code == 200
    assert clients["supervisor"].get(oscars.get_absolute_url()).status_code == 200
    assert clients["other_clerk"].get(clerks_retry.get_absolute_url()).status_code == 404


# --- CSRF --------------------------------------------------------------------------------


def _csrf_client(user) -> Client:
    c = Client(enforce_csrf_checks=True)
    c.force_login(user)
    return c


def test_every_url_refuses_a_post_without_a_csrf_token(clerk, sandbox, clerks_retry):
    """Django checks the token before any view runs, GET-only views included."""
    c = _csrf_client(clerk)
    for route in project_routes():
        url = url_for(route, guid=API_USER_KICKOUT_TASK_GUID, pk=clerks_retry.pk)
        response = c.post(url, {"action": "send"}, HTTP_HX_REQUEST="true")
        assert response.status_code == 403, url
    assert c.post(reverse("logout")).status_code == 403
    assert sandbox.count("kickout_post") == 0
    assert RetryAttempt.objects.count() == 1


def test_htmx_sends_the_token_from_hx_headers_on_body(clerk, sandbox):
    """base.html puts the token in double-quoted JSON; htmx sends it as X-CSRFToken."""
    c = _csrf_client(clerk)
    page = c.get(reverse("task_detail", args=[API_USER_KICKOUT_TASK_GUID]))
    match = re.search(r"<body hx-headers='(\{[^']*\})'>", page.content.decode())
    assert match, "the body tag carries hx-headers with single quotes around JSON"
    headers = json.loads(match.group(1))  # strict JSON: double quotes only
    assert set(headers) == {"X-CSRFToken"} and headers["X-CSRFToken"]
    url = reverse("retry_form", args=[API_USER_KICKOUT_TASK_GUID])
    data = {
        "action": "send",
        "form_token": str(uuid.uuid4()),
        "batch_mode": "new self-contained batch",
    }

    refused = c.post(url, data, HTTP_HX_REQUEST="true")
    assert refused.status_code == 403
    assert sandbox.count("kickout_post") == 0

    accepted = c.post(url, data, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=headers["X-CSRFToken"])
    assert accepted.status_code == 200
    assert accepted["HX-Redirect"] == RetryAttempt.objects.get().get_absolute_url()
    assert sandbox.count("kickout_post") == 1


def test_no_get_changes_anything(clients, sandbox, clerks_retry):
    """Every GET, page or fragment, for every role: no retry row changes, nothing is posted."""
    before = [observable(a) for a in RetryAttempt.objects.order_by("pk")]
    sneaky = {
        "action": "send",
        "form_token": str(uuid.uuid4()),
        "batch_mode": "new self-contained batch",
        "again": str(clerks_retry.pk),
    }
    for route in project_routes():
        url = url_for(route, guid=API_USER_KICKOUT_TASK_GUID, pk=clerks_retry.pk)
        for c in clients.values():
            assert c.get(url).status_code < 500
            assert c.get(url, sneaky, HTTP_HX_REQUEST="true").status_code < 500
    assert [observable(a) for a in RetryAttempt.objects.order_by("pk")] == before
    assert sandbox.count("kickout_post") == 0
