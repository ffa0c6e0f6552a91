"""Hostile input on every URL: generated query strings, form values and path segments.

For each route of the URLconf (so a new URL is covered without editing this file), each
role, GET and POST, plain and htmx: never a 5xx, and never a filter sent to EnergyCAP that
the sandbox's filter parser (strict, like the documented language) refuses.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kickouts.sandbox.filters import FilterError, parse_filter
from kickouts.sandbox.server import BATCH_FILTER_FIELDS, TASK_FILTER_FIELDS
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID

from .conftest import signed_in_client
from .factories import make_retry
from .test_access import Route, project_routes

FILTER_FIELDS = {"task_list": TASK_FILTER_FIELDS, "batch_list": BATCH_FILTER_FIELDS}
# Every name a view reads: those meant to carry a number, and the others.
NUMBER_PARAMETERS = (
    "page",
    "per_page",
    "rows",
    "again",
    "started",
    "failures",
    "user",
    "before",
    "after",
    "existing_open_batch_id",
    "pending_batch_id",
    "duplicate_of",
)
TEXT_PARAMETERS = (
    "period",
    "kickouts",
    "message",
    "batch_mode",
    "upstream",
    "date_from",
    "date_to",
    "outcome",
    "final_status",
    "q",
    "action",
    "new_batch_code",
    "leave_existing_batches_open",
    "import_note",
    "comment",
    "save_as_resolved",
    "confirm_duplicate",
    "form_token",
    "task",
    "profile",
    "confirm_rows",
)
ACTIONS = ("choose", "smart_path", "review", "edit", "send")
MODES = (
    "use existing batch",
    "new batch",
    "new self-contained batch",
    "use pending batch",
    "smart batch",
)

# Not quite numbers: "²".isdigit() is true, int("١٢") is 12, float("nan") is a float.
NUMBERISH = st.sampled_from(["²", "١٢", "１２", "-1", "0", "9" * 40, "1e999", "nan", " 7", "3.5"])
# Text that breaks naive code: quotes, the filter language's own characters and words,
# control characters, markup.
TRICKY = st.sampled_from(
    [
        "'",
        "''",
        "' or '1'='1",
        "a' and batchCode equals 'b",
        "x'|'y",
        " and ",
        "|",
        "\x00",
        "\x07\x1b[31m",
        "\u202e",
        "\r\n",
        "%00",
        "<script>",
        "{{ 7*7 }}",
        "GAS-NOV",
        "SBX-907",
        "907",
    ]
)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
LONG = st.integers(min_value=256, max_value=5000).map(lambda n: "Ā" * n)
# one_of picks its branches evenly, so repeating one makes it likelier.
VALUES = st.one_of(TRICKY, TRICKY, NUMBERISH, TEXT, LONG, st.sampled_from(MODES + ACTIONS))
NUMBERS = st.one_of(NUMBERISH, NUMBERISH, NUMBERISH, TRICKY, TEXT, LONG)
# Every number-carrying name each time (the views ignore what they do not read), any of
# the others, and names no view reads.
PARAMS = st.builds(
    lambda numbers, texts, unknown: unknown | numbers | texts,
    st.fixed_dictionaries(dict.fromkeys(NUMBER_PARAMETERS, NUMBERS)),
    st.fixed_dictionaries({}, optional=dict.fromkeys(TEXT_PARAMETERS, VALUES)),
    st.dictionaries(TEXT, VALUES, max_size=2),
)


def path_value(draw, converter_name: str, pk: int) -> str:
    """Mostly the real task or retry (so the view runs), else what the converter refuses."""
    if converter_name == "guid":
        real = API_USER_KICKOUT_TASK_GUID
        odd = [API_USER_KICKOUT_TASK_GUID.upper(), str(uuid.uuid4())]
    else:
        real = str(pk)
        odd = ["9" * 30, "0"]
    if draw(st.integers(0, 9)) < 7:
        return real
    hostile = st.one_of(st.sampled_from(odd), NUMBERISH, TRICKY, TEXT.filter(bool))
    return quote(draw(hostile), safe="")


def url_of(route: Route, draw, pk: int) -> str:
    url = "/" + route.route
    for argument, converter in route.converters.items():
        name = "guid" if "Guid" in type(converter).__name__ else "int"
        url = url.replace(f"<{name}:{argument}>", path_value(draw, name, pk))
    return url


@pytest.fixture
def clients(client, outsider, clerk, supervisor) -> dict[str, Client]:
    users = {"outsider": outsider, "clerk": clerk, "supervisor": supervisor}
    return {"signed out": client} | {role: signed_in_client(u) for role, u in users.items()}


def refused_filters(entries: list[dict]) -> list[tuple[str, str, str]]:
    refused = []
    for entry in entries:
        text = entry["query"].get("filter")
        fields = FILTER_FIELDS.get(entry["endpoint"])
        if text is None or fields is None:
            continue
        try:
            parse_filter(text, fields)
        except FilterError as error:
            refused.append((entry["endpoint"], text, str(error)))
    return refused


@pytest.mark.parametrize("route", project_routes(), ids=lambda r: r.name)
def test_hostile_input_never_gives_a_server_error(route, clients, clerk, sandbox):
    """Each URL with generated input, sent by every role: no 5xx, no refused filter."""
    attempt = make_retry(clerk, source_task_guid=API_USER_KICKOUT_TASK_GUID)
    since = sandbox.log_page()["next"]

    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def hostile_request(data):
        url = url_of(route, data.draw, attempt.pk)
        htmx = {"HTTP_HX_REQUEST": "true"} if data.draw(st.booleans()) else {}
        params = data.draw(PARAMS)
        form = data.draw(PARAMS)
        query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
        for role, client in clients.items():
            got = client.get(url, params, **htmx)
            assert got.status_code < 500, (role, "GET", url, params)
            posted = client.post(f"{url}?{query}", form, **htmx)
            assert posted.status_code < 500, (role, "POST", url, params, form)

    hostile_request()
    assert refused_filters(sandbox.log(since=since)) == []


def test_the_filter_check_tells_a_refused_filter_from_a_good_one():
    """The check above is not vacuous: the sandbox's parser refuses what EnergyCAP would."""
    entries = [
        {"endpoint": "batch_list", "query": {"filter": "batchCode equals 'O''Hara'"}},
        {"endpoint": "batch_list", "query": {"filter": "batchCode equals 'O'Hara'"}},
        {"endpoint": "task_list", "query": {"filter": "beginDate last 30 days"}},
        {"endpoint": "task_list", "query": {"filter": "beginDate last 30 days and"}},
    ]
    refused = [text for _, text, _ in refused_filters(entries)]
    assert refused == ["batchCode equals 'O'Hara'", "beginDate last 30 days and"]
