"""The supervisor's overview: each figure against a small team's hand-counted month, the access
rules, the CSVs, and the numbers agreeing with the queue's and the history's.

The month (Quinn's imports, stored from the sandbox by the worker's own code):
- A, begun 20 days ago: 4 "account not found" rows and 4 "meter not found" rows; Carla marked
  it handled (a corrected file) 10 days ago.
- B, begun 5 days ago: 2 account rows and 2 rows no cause knows; open.
- C, begun 2 days ago: 1 account row and 1 meter row; Carla re-imported it today (retry r1):
  the account row fixed, the meter row still kicked out, so it is handled but not cleared.
- D, begun 40 days ago: 3 account rows (outside the 30 days).
Retries of the month: r1 Carla (fixed some: 1 of 2), r2 Oscar (re-imported D's 3 account rows,
fixed nothing), r3 Carla (refused), r4 Carla (outcome unknown), r5 Sam (fixed everything: 1
meter row); r6 Carla 40 days ago (fixed everything, outside).
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.core import mail
from django.core.cache import cache
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from kickouts import charts, compare, overview, snapshots, weekly
from kickouts.causes import OTHER, cause_key
from kickouts.models import (
    ComparisonCause,
    HandledReason,
    ImportCause,
    ImportSnapshot,
    KickoutRow,
    Outcome,
    Sweep,
    UserSettings,
    WeeklySummary,
)

from .factories import make_retry
from .test_queue import ACCOUNT, METER, QUINN, UNKNOWN, add_import

ACCOUNT_KEY, METER_KEY = cause_key(ACCOUNT), cause_key(METER)


def _compared(retry, changes: list[tuple[str, str]]) -> None:
    """Store a before and after as the worker does: (change, message) per source row."""
    rows = [{"change": change, "message": message, "was": ""} for change, message in changes]
    compare._store(retry, state="compared", result=compare.Compared(rows=rows))


def _at(days_ago: float):
    return timezone.now() - timedelta(days=days_ago)


@pytest.fixture
def month(sandbox, clerk, other_clerk, supervisor):
    """Quinn's four imports and the six retries of the module's docstring."""
    made = {
        "A": add_import(sandbox, [ACCOUNT, METER], 4, days_ago=20),
        "B": add_import(sandbox, [ACCOUNT, UNKNOWN], 2, days_ago=5),
        "C": add_import(sandbox, [ACCOUNT, METER], 1, days_ago=2),
        "D": add_import(sandbox, [ACCOUNT], 3, days_ago=40),
    }
    snapshots.snapshot_period(90, QUINN)
    stored = {name: ImportSnapshot.objects.get(task_guid=t["taskGUId"]) for name, t in made.items()}
    a = stored["A"]
    a.mark_handled(user=clerk, reason=HandledReason.CORRECTED_FILE)
    a.handled_changes.update(changed_at=_at(10))
    ImportSnapshot.objects.filter(pk=a.pk).update(handled_at=_at(10))
    r1 = make_retry(clerk, source_task_guid=stored["C"].task_guid)
    _compared(r1, [("fixed", ACCOUNT), ("still", METER)])
    stored["C"].mark_handled(user=clerk, reason=HandledReason.REIMPORTED)
    r2 = make_retry(other_clerk, source_task_guid=stored["D"].task_guid)
    _compared(r2, [("still", ACCOUNT)] * 3)
    make_retry(clerk, outcome=Outcome.REJECTED)
    make_retry(clerk, outcome=Outcome.UNKNOWN)
    r5 = make_retry(supervisor)
    _compared(r5, [("fixed", METER)])
    r6 = make_retry(clerk, requested_at=_at(40))
    _compared(r6, [("fixed", ACCOUNT)])
    return stored


def test_rows_are_stored_with_their_cause_and_each_import_with_its_counts_per_cause(month):
    """The worker's store writes the cause of each row and the import's per-cause counts."""
    b = month["B"]
    assert set(b.rows.values_list("cause", flat=True)) == {ACCOUNT_KEY, OTHER}
    counts = dict(ImportCause.objects.filter(snapshot=b).values_list("cause", "rows"))
    assert counts == {ACCOUNT_KEY: 2, OTHER: 2}


def test_open_rows_by_cause_rise_with_imports_and_fall_when_handled(month, supervisor):
    """Open rows at the end of each day: A's 8 until it was handled, then B's, then C's."""
    figures = overview.open_rows(overview.OverviewFilter(period="30"))
    by_day = {b.first: n for b, n in zip(figures.buckets, figures.totals, strict=True)}
    today = timezone.localdate()
    assert by_day[today - timedelta(days=21)] == 0
    assert by_day[today - timedelta(days=20)] == 8
    assert by_day[today - timedelta(days=11)] == 8
    assert by_day[today - timedelta(days=10)] == 0
    assert by_day[today - timedelta(days=5)] == 4
    assert by_day[today - timedelta(days=2)] == 6
    assert by_day[today] == 4  # C was re-imported today
    last = {s.key: s.values[-1] for s in figures.series}
    assert last == {ACCOUNT_KEY: 2, METER_KEY: 0, OTHER: 2}


def test_imports_per_week_and_the_share_cleared(month):
    """Three imports in the month; only A is cleared (C's re-import left a row)."""
    weeks = overview.imports_by_week(overview.OverviewFilter(period="30"))
    assert sum(w.imports for w in weeks) == 3
    assert sum(w.cleared for w in weeks) == 1
    ninety = overview.imports_by_week(overview.OverviewFilter(period="90"))
    assert sum(w.imports for w in ninety) == 4


def test_retries_per_week_by_how_they_ended_and_rows_fixed(month, supervisor):
    """One retry of each result in the month, and 2 rows fixed (r1's and r5's)."""
    chosen = overview.OverviewFilter(period="30")
    weeks = overview.retries_by_week(chosen, overview._retry_counts(chosen, supervisor))
    totals = {result: sum(w.counts[result] for w in weeks) for result in overview.RESULTS}
    assert totals == {"everything": 1, "some": 1, "nothing": 1, "failed": 1, "unknown": 1}
    assert sum(w.rows_fixed for w in weeks) == 2


def test_per_cause_rows_fixed_open_and_the_median_wait_to_cleared(month, supervisor):
    """Kicked out and open from the imports; fixed from the retries; A waited 10 days."""
    causes, wasted = overview.by_cause(overview.OverviewFilter(period="30"), supervisor)
    lines = {line.key: line for line in causes}
    account, meter, other = lines[ACCOUNT_KEY], lines[METER_KEY], lines[OTHER]
    assert (account.kicked_out, account.still_open, account.fixed_by_reimport) == (7, 2, 1)
    assert (meter.kicked_out, meter.still_open, meter.fixed_by_reimport) == (5, 0, 1)
    assert (other.kicked_out, other.still_open, other.fixed_by_reimport) == (2, 2, 0)
    assert account.fixed_by_corrected_file == meter.fixed_by_corrected_file == 0
    assert account.median_days == meter.median_days == 10.0
    assert other.median_days is None
    assert [(w.key, w.retries, w.rows) for w in wasted] == [(ACCOUNT_KEY, 1, 3)]


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two(month, clerk):
    """B cleared 1 day after it began, A 10 days: the account cause's median is 5.5."""
    b = month["B"]
    b.mark_handled(user=clerk, reason=HandledReason.DUPLICATE_BILLS)
    ImportSnapshot.objects.filter(pk=b.pk).update(handled_at=b.begin_date + timedelta(days=1))
    imports = overview.OverviewFilter(period="30").imports()
    medians = overview.median_days_to_cleared(imports)
    assert medians[ACCOUNT_KEY] == 5.5
    assert medians[OTHER] == 1.0


def test_per_person_retries_bulks_rows_fixed_and_imports_marked_handled(
    month, supervisor, clerk, other_clerk
):
    """Carla: 3 retries, 1 row fixed, 2 imports marked; Oscar 1 retry; Sam 1 and 1 row."""
    chosen = overview.OverviewFilter(period="30")
    people = overview.by_person(chosen, supervisor, overview._retry_counts(chosen, supervisor))
    rows = {p.user_id: (p.retries, p.bulks, p.rows_fixed, p.handled) for p in people}
    assert rows == {
        clerk.pk: (3, 0, 1, 2),
        other_clerk.pk: (1, 0, 0, 0),
        supervisor.pk: (1, 0, 1, 0),
    }


def test_a_clerk_sees_the_imports_but_only_their_own_work(month, clerk_client):
    """AP staff: the period's imports as the queue shows everyone, their own retries only."""
    figures = clerk_client.get(reverse("overview")).context["figures"]
    assert not figures.sees_everyone
    assert [p.name for p in figures.people] == ["Carla Clerk"]
    totals = {r: sum(w.counts[r] for w in figures.retries) for r in overview.RESULTS}
    assert totals == {"everything": 0, "some": 1, "nothing": 0, "failed": 1, "unknown": 1}
    assert figures.wasted == []
    assert sum(w.imports for w in figures.imports) == 3


def test_no_role_no_overview_and_signed_out_goes_to_sign_in(outsider_client, client):
    """A user in no group is refused; a signed-out visitor is sent to sign in."""
    assert outsider_client.get(reverse("overview")).status_code == 403
    assert outsider_client.get(reverse("overview_csv") + "?chart=causes").status_code == 403
    assert client.get(reverse("overview")).status_code == 302


def test_the_navigation_links_the_overview_for_staff_only(supervisor_client, outsider_client):
    """Supervisors and AP staff see the link; a user with no role does not."""
    assert f'href="{reverse("overview")}"' in supervisor_client.get(reverse("queue")).text
    assert f'href="{reverse("overview")}"' not in outsider_client.get(reverse("queue")).text


def test_the_page_draws_every_chart_with_its_table_and_csv_link(month, supervisor_client):
    """Six SVG charts, no inline style or script, each with a CSV link."""
    page = supervisor_client.get(reverse("overview"), {"period": "90"})
    assert page.status_code == 200
    html = page.text
    assert html.count('class="bar-chart"') == 6
    assert "style=" not in html and "<script>" not in html
    for chart in ("open-rows", "imports", "retries", "causes", "people", "wasted"):
        assert f"{reverse('overview_csv')}?chart={chart}&amp;period=90" in html


def _csv(response) -> list[list[str]]:
    body = b"".join(response) if response.streaming else response.content
    text = body.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


def test_each_csv_has_the_numbers_of_its_table(month, supervisor_client):
    """The causes CSV is the table; the retries CSV adds up to the month's five retries."""
    causes = _csv(supervisor_client.get(reverse("overview_csv") + "?chart=causes"))
    assert causes[0][:3] == ["cause", "rows_kicked_out", "rows_fixed_by_reimport"]
    account = next(row for row in causes if row[0] == "Account code not matched")
    assert account == ["Account code not matched", "7", "1", "0", "2", "10.0"]
    retries = _csv(supervisor_client.get(reverse("overview_csv") + "?chart=retries"))
    assert sum(sum(int(c) for c in row[2:7]) for row in retries[1:]) == 5
    wasted = _csv(supervisor_client.get(reverse("overview_csv") + "?chart=wasted"))
    assert wasted[1] == ["Account code not matched", "1", "3"]
    response = supervisor_client.get(reverse("overview_csv") + "?chart=people")
    assert response["Content-Disposition"].startswith('attachment; filename="overview-people-')
    assert supervisor_client.get(reverse("overview_csv") + "?chart=nothing").status_code == 404


def test_a_csv_cell_a_spreadsheet_would_run_is_quoted(month, supervisor_client, clerk):
    """A person named like a formula comes out with an apostrophe."""
    clerk.first_name, clerk.last_name = "=HYPERLINK(1)", ""
    clerk.save()
    people = _csv(supervisor_client.get(reverse("overview_csv") + "?chart=people"))
    assert ["'=HYPERLINK(1)", "3", "0", "1", "2"] in people


def test_the_numbers_agree_with_the_queue_and_the_history_for_the_same_filters(
    month, supervisor, supervisor_client
):
    """Open rows now and per cause match the queue; each result's count matches the history."""
    chosen = overview.OverviewFilter(period="30", user=QUINN)
    figures = supervisor_client.get(reverse("overview"), {"user": QUINN}).context["figures"]
    links = supervisor_client.get(reverse("overview"), {"user": QUINN}).context["links"]
    queue = supervisor_client.get(links.queue()).context["groups"]
    assert sum(g["rows"] for g in queue) == figures.open_rows.totals[-1] == 4
    for line in figures.causes:
        groups = supervisor_client.get(links.queue(cause=line.key)).context["groups"]
        assert sum(g["rows"] for g in groups) == line.still_open, line.key
    for result in overview.RESULTS:
        page = supervisor_client.get(links.history(result=result, per_page=100))
        counted = sum(w.counts[result] for w in figures.retries)
        assert len(page.context["page"].retries) == counted, result
    wasted = supervisor_client.get(links.history(cause=ACCOUNT_KEY, result="nothing"))
    assert len(wasted.context["page"].retries) == figures.wasted[0].retries
    assert chosen.first_day.isoformat() in links.history()


def test_links_narrow_the_queue_to_a_cause_and_its_csv_too(month, supervisor_client):
    """The queue at a cause lists only that cause's messages, and so does its CSV."""
    links = overview.OverviewFilter(period="90")
    url = reverse("queue") + f"?from={links.first_day}&cause={ACCOUNT_KEY}"
    groups = supervisor_client.get(url).context["groups"]
    assert [g["message"] for g in groups] == [ACCOUNT]
    rows = _csv(
        supervisor_client.get(reverse("queue_csv") + f"?from={links.first_day}&cause={ACCOUNT_KEY}")
    )
    assert len(rows) - 1 == 5  # B's 2 and D's 3; A and C are handled


def test_classify_kickouts_stores_causes_of_rows_stored_before(month):
    """Rows and counts wiped as if stored before the overview come back from the command."""
    KickoutRow.objects.update(cause="")
    ImportCause.objects.all().delete()
    ComparisonCause.objects.all().delete()
    call_command("classify_kickouts", stdout=io.StringIO())
    assert not KickoutRow.objects.filter(cause="").exists()
    assert dict(ImportCause.objects.filter(snapshot=month["B"]).values_list("cause", "rows")) == {
        ACCOUNT_KEY: 2,
        OTHER: 2,
    }
    assert ComparisonCause.objects.filter(cause=ACCOUNT_KEY, before=3, fixed=0).count() == 1


# -- the weekly summary -------------------------------------------------------------------


@pytest.fixture
def sam_opted_in(supervisor):
    supervisor.email = "sam@example.com"
    supervisor.save()
    UserSettings.objects.create(user=supervisor, weekly_summary=True)
    return supervisor


def test_only_supervisors_are_offered_the_weekly_summary(supervisor_client, clerk_client):
    """The box is on a supervisor's settings page, not a clerk's."""
    assert "weekly_summary" in supervisor_client.get(reverse("user_settings")).text
    assert "weekly_summary" not in clerk_client.get(reverse("user_settings")).text


def test_a_supervisor_opts_in_on_the_settings_page(supervisor, supervisor_client):
    """Ticking the box saves it and queues the weekly sweep."""
    supervisor_client.post(reverse("user_settings"), {"weekly_summary": "on"})
    assert UserSettings.of(supervisor).weekly_summary
    assert weekly.recipients() == []  # no email address yet
    supervisor.email = "sam@example.com"
    supervisor.save()
    assert weekly.recipients() == [supervisor]


def test_the_weekly_summary_says_open_rows_by_cause_retries_and_the_oldest_imports(
    month, sam_opted_in
):
    """Open rows now (4) against a week ago (none: A was handled, B and C had not begun)."""
    email = weekly.summary_email(sam_opted_in)
    assert email.subject == "Kickouts this week: 4 open rows (+4 on the week before)"
    summary = overview.week_summary(sam_opted_in)
    assert (summary.open_now, summary.open_week_before) == (4, 0)
    assert summary.retries == 5 and summary.rows_fixed == 2
    assert [s.task_guid for s in summary.oldest_open] == [month["B"].task_guid]
    assert "Open kickout rows: 4 (a week ago: 0, +4)" in email.body
    assert reverse("overview") in email.body


def test_the_weekly_summary_is_sent_once_per_week_however_many_sweeps_run(sam_opted_in):
    """Two sweeps, and the command after them: one email, one row; the pair is unique."""
    monday = weekly.send_time(weekly.week_of(timezone.now()))
    weekly.sweep()
    weekly.sweep()
    if timezone.now() < monday:
        assert mail.outbox == []  # not yet Monday morning
        weekly.make_due(timezone.now(), early=True)
        weekly.sweep()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["sam@example.com"]
    out = io.StringIO()
    call_command("send_weekly_summaries", stdout=out)
    assert len(mail.outbox) == 1
    assert "sent 0 weekly summaries" in out.getvalue()
    assert "Emailed to sam@example.com" in out.getvalue()
    with pytest.raises(IntegrityError), transaction.atomic():
        WeeklySummary.objects.create(user=sam_opted_in, week=weekly.week_of(timezone.now()))


def test_a_claim_left_by_a_dead_worker_comes_due_again(sam_opted_in):
    """A row claimed and never sent is sent by the next sweep once its lease has passed."""
    now = timezone.now()
    weekly.make_due(now, early=True)
    assert len(weekly.claim_due(now)) == 1  # the worker that claimed it dies here
    assert weekly.claim_due(now + timedelta(minutes=1)) == []
    row = WeeklySummary.objects.get()
    WeeklySummary.objects.filter(pk=row.pk).update(due_at=now - timedelta(seconds=1))
    weekly.sweep()
    assert len(mail.outbox) == 1
    assert WeeklySummary.objects.get().sent_at is not None


def test_the_command_previews_without_sending(sam_opted_in):
    """--preview prints the email and records nothing."""
    out = io.StringIO()
    call_command("send_weekly_summaries", "--preview", stdout=out)
    assert "To: sam@example.com" in out.getvalue() and "Open kickout rows" in out.getvalue()
    assert mail.outbox == [] and not WeeklySummary.objects.exists()


def test_the_figures_are_kept_a_few_minutes_and_never_shared_across_scopes(
    month, supervisor_client, clerk_client, clerk, other_clerk
):
    """A new retry shows once the kept figures expire; a clerk never reads the team's figures."""
    first = supervisor_client.get(reverse("overview")).context["figures"]
    mine = clerk_client.get(reverse("overview")).context["figures"]
    assert [p.name for p in mine.people] == ["Carla Clerk"] and len(first.people) == 3
    make_retry(other_clerk, outcome=Outcome.REJECTED)
    kept = supervisor_client.get(reverse("overview")).context["figures"]
    assert kept.computed_at == first.computed_at
    cache.clear()  # as CACHE_SECONDS passing does
    fresh = supervisor_client.get(reverse("overview")).context["figures"]
    failed = sum(w.counts["failed"] for w in fresh.retries)
    assert failed == 2 and fresh.computed_at > first.computed_at
    other = supervisor_client.get(reverse("overview"), {"user": QUINN}).context["figures"]
    assert other.chosen.user == QUINN


def test_the_weekly_sweep_queues_itself_for_next_monday_morning(sam_opted_in):
    """After a sweep the one queued weekly sweep runs at the next Monday's sending time.
    (This week's summary is already sent: on a Monday after the sending time the sweep would
    send it and queue its successor soon, as a sweep that sent does; CI met that case.)"""
    now = timezone.now()
    WeeklySummary.objects.create(
        user=sam_opted_in, week=weekly.week_of(now), due_at=None, sent_at=now
    )
    weekly.sweep()
    queued = Sweep.objects.get(name=weekly.send_due.name)
    assert queued.task_id and queued.run_at == weekly.next_send_time(now)
    assert queued.run_at.astimezone(timezone.get_default_timezone()).weekday() == 0
    assert weekly.wake() is False  # already queued: a page view adds nothing


@pytest.mark.parametrize("count", [2, 6, 13, 31, 53])
def test_a_charts_labels_are_cut_to_fit_their_columns(count):
    """Column labels never run into each other: each is cut (with "…") to the room it has,
    seen by hand as "Meter cannot …Vendor code m…" under the causes."""
    columns = [
        charts.Column(f"Bill dates outside the account's service dates {n}", [])
        for n in range(count)
    ]
    chart = charts.stacked("t", [], columns)
    xs = [label.x for label in chart.labels]
    room = min(b - a for a, b in zip(xs, xs[1:], strict=False)) if len(xs) > 1 else charts.MAX_SLOT
    assert chart.labels and all(
        len(label.text) * charts.CHAR_WIDTH <= room for label in chart.labels
    ), [label.text for label in chart.labels]
    assert all(label.text.endswith("…") for label in chart.labels)
