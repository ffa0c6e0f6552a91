"""What the table cells show: times, badges, counts, links and shortened text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.template.defaultfilters import truncatechars
from django.template.loader import get_template
from django.urls import set_script_prefix
from django.utils.html import escape, format_html

from kickouts import formatting
from kickouts.models import Outcome


@pytest.fixture
def script_prefix():
    """Serving the dashboard under /kickouts/ (SCRIPT_NAME), then back at the root."""
    set_script_prefix("/kickouts/")
    yield
    set_script_prefix("/")


def reference_local_time(value, zone) -> str:
    """The `<time>` element as dashboard.js expects it, built independently of the tag."""
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


def render_task_row(task, summary=None) -> str:
    """One row of the task list, as the page renders it (its `task-row` partial)."""
    row = get_template("kickouts/task_list.html#task-row")
    return row.render({"task": task, "retries": summary})


def test_the_task_rows_link_under_the_script_prefix_they_are_rendered_in(script_prefix):
    """Served under /kickouts/, the rows link there; back at the root, they link there."""
    from kickouts.models import RetrySummary
    from kickouts.payloads import Task

    guid = str(uuid.uuid4())
    task = Task.from_json({"taskGUId": guid.upper(), "status": "Completed with kickouts"})
    summary = RetrySummary(count=2, latest_outcome=Outcome.SUBMITTED, latest_pk=17)
    html = render_task_row(task, summary)
    assert f'href="/kickouts/tasks/{guid}/"' in html
    assert 'href="/kickouts/retries/17/"' in html
    assert "2 · Submitted" in html
    set_script_prefix("/")
    html = render_task_row(task, summary)
    assert f'href="/tasks/{guid}/"' in html and 'href="/retries/17/"' in html


def test_a_long_task_note_is_shortened_and_escaped_in_its_row():
    """Notes past 60 characters end in an ellipsis; markup in them is shown as text."""
    from kickouts.payloads import Task

    note = "<b>Monthly</b> EDI feed for every site of the northern region, twice a month"
    task = Task.from_json({"taskGUId": str(uuid.uuid4()), "taskNote": note})
    html = render_task_row(task)
    assert f'<td class="note">{escape(truncatechars(note, 60))}</td>' in html
    assert "<b>" not in html
    assert "…" in html


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


def test_local_time_reads_the_same_instant_alike_and_follows_the_site_zone(settings):
    """The same instant with another offset reads the same; a new site zone counts at once."""
    from zoneinfo import ZoneInfo

    moment = datetime(2026, 11, 3, 14, 30, 15, tzinfo=UTC)
    same = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))
    settings.TIME_ZONE = "America/New_York"
    assert formatting.local_time(moment) == formatting.local_time(same)
    assert ">2026-11-03 09:30 EST</time>" in formatting.local_time(moment)
    settings.TIME_ZONE = "Asia/Kolkata"
    assert formatting.local_time(same) == reference_local_time(moment, ZoneInfo("Asia/Kolkata"))
    assert ">2026-11-03 20:00 IST</time>" in formatting.local_time(moment)
