"""The table-cell helpers that replace slower Django built-ins give the built-ins' answers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.template.defaultfilters import truncatechars
from django.urls import NoReverseMatch, reverse, set_script_prefix
from django.utils.html import format_html

from kickouts import formatting
from kickouts.models import Outcome, RetryAttempt


@pytest.fixture
def script_prefix():
    """Serving the dashboard under /kickouts/ (SCRIPT_NAME), then back at the root."""
    set_script_prefix("/kickouts/")
    yield
    set_script_prefix("/")


def test_task_url_is_what_reverse_gives():
    for guid in (str(uuid.uuid4()), str(uuid.uuid4()).upper()):
        assert formatting.task_url(guid) == reverse("task_detail", args=[guid])


def test_task_url_and_retry_url_follow_the_script_prefix(script_prefix):
    guid = str(uuid.uuid4())
    assert formatting.task_url(guid) == f"/kickouts/tasks/{guid}/"
    assert formatting.task_url(guid) == reverse("task_detail", args=[guid])
    assert formatting.retry_url(7) == reverse("retry_detail", args=[7]) == "/kickouts/retries/7/"


def test_task_url_refuses_what_is_not_a_guid_as_url_does():
    with pytest.raises(NoReverseMatch):
        formatting.task_url("not-a-guid")
    with pytest.raises(NoReverseMatch):
        formatting.task_url(f"{uuid.uuid4()}/../admin")


def test_retry_url_is_what_reverse_gives():
    for pk in (1, 42, 9876543210, "15"):
        assert formatting.retry_url(pk) == reverse("retry_detail", args=[pk])


def reference_local_time(value, zone) -> str:
    """The tag as it was written with format_html and strftime, before it was made faster."""
    utc, local = value.astimezone(UTC), value.astimezone(zone)
    return format_html(
        '<time datetime="{}" data-local title="{} UTC">{}</time>',
        utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        f"{local:%Y-%m-%d %H:%M} {local.tzname()}",
    )


@pytest.mark.parametrize("zone_name", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_local_time_matches_the_reference_in_any_site_zone(settings, zone_name):
    from zoneinfo import ZoneInfo

    settings.TIME_ZONE = zone_name
    moments = [
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2026, 7, 1, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York's clocks move that morning
    ]
    for moment in moments:
        assert formatting.local_time(moment) == reference_local_time(moment, ZoneInfo(zone_name))


def test_local_time_without_a_value_shows_the_escaped_placeholder():
    assert formatting.local_time(None) == '<span class="muted">—</span>'
    assert formatting.local_time(None, "<b>never</b>") == (
        '<span class="muted">&lt;b&gt;never&lt;/b&gt;</span>'
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "short",
        "exactly thirteen",
        "a" * 13,
        "a" * 14,
        "Monthly EDI feed for all sites",
        "Cafe\u0301 cre\u0300me bru\u0302le\u0301e, twice",
        "e\u0301" * 20,
        None,
        48211,
    ],
)
def test_truncate_chars_is_djangos_truncatechars(text):
    for length in (1, 13, 20, 60):
        expected = truncatechars("" if text is None else text, length)
        assert formatting.truncate_chars(text, length) == expected


@pytest.mark.django_db
def test_outcome_label_is_get_outcome_display(clerk):
    for outcome in [*Outcome.values, "something-new"]:
        retry = RetryAttempt(requested_by=clerk, outcome=outcome)
        assert retry.outcome_label == retry.get_outcome_display()


def test_status_badge_names_the_status_and_escapes_it():
    from kickouts.payloads import Task

    def task(status, end="2026-11-20T10:00:00Z"):
        return Task.from_json({"taskGUId": str(uuid.uuid4()), "status": status, "endDate": end})

    assert formatting.status_badge(task("Completed with kickouts")) == (
        '<span class="badge badge-kickouts">Completed with kickouts</span>'
    )
    assert formatting.status_badge(task("", end=None)) == (
        '<span class="badge badge-running">(no status)</span>'
    )
    assert formatting.status_badge(task("Odd <b>one</b>")) == (
        '<span class="badge badge-other">Odd &lt;b&gt;one&lt;/b&gt;</span>'
    )


def test_the_jinja2_rows_link_under_the_script_prefix_they_are_rendered_in(script_prefix):
    """`{% jinja_rows %}` reads the prefix once per table; the links still follow it."""
    from django.template import Context, Template

    from kickouts.models import RetrySummary
    from kickouts.payloads import Task

    guid = str(uuid.uuid4())
    task = Task.from_json({"taskGUId": guid.upper(), "status": "Completed with kickouts"})
    summary = RetrySummary(count=2, latest_outcome=Outcome.SUBMITTED, latest_pk=17)
    table = Template(
        '{% load kickouts_tags %}{% jinja_rows "kickouts/task_rows.html" tasks=rows %}'
    )
    html = table.render(Context({"rows": [(task, summary)]}))
    assert f'href="/kickouts/tasks/{guid}/"' in html
    assert 'href="/kickouts/retries/17/"' in html
    set_script_prefix("/")
    html = table.render(Context({"rows": [(task, summary)]}))
    assert f'href="/tasks/{guid}/"' in html and 'href="/retries/17/"' in html


def test_bill_counts_show_a_dash_for_what_a_task_lacks():
    from kickouts.payloads import Task

    task = Task.from_json(
        {
            "taskGUId": str(uuid.uuid4()),
            "currentSuccessCount": 12,
            "analyzingCount": None,
            "unresolvedFlagCount": 0,
        }
    )
    assert formatting.bill_counts(task) == "12 · – · 0"
    assert formatting.bill_counts(Task.from_json({"taskGUId": str(uuid.uuid4())})) == "– · – · –"


def test_local_time_is_kept_per_moment_and_zone_never_across_zones(settings):
    """The same instant with another offset reads the same; a new site zone is not stale."""
    from zoneinfo import ZoneInfo

    moment = datetime(2026, 11, 3, 14, 30, 15, tzinfo=UTC)
    same = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))
    settings.TIME_ZONE = "America/New_York"
    assert formatting.local_time(moment) == formatting.local_time(same)
    assert ">2026-11-03 09:30 EST</time>" in formatting.local_time(moment)
    settings.TIME_ZONE = "Asia/Kolkata"
    assert formatting.local_time(same) == reference_local_time(moment, ZoneInfo("Asia/Kolkata"))
    assert ">2026-11-03 20:00 IST</time>" in formatting.local_time(moment)
