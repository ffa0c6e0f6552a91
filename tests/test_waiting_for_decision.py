"""Supervisors see what waits for them: a badge in the navigation and a list, oldest first, of
the "outcome unknown" retries no one decided yet; the clerk's retry page says it is on it."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from kickouts import reconcile
from kickouts.models import Outcome, Reconciled, RetryAttempt

from .factories import make_retry
from .test_reconcile import decide, send_retry, text

WAITING = reverse("waiting_for_decision")
BADGE = re.compile(r'Waiting for a decision\s*<span class="badge badge-count">(\d+)</span>')


def badge(response) -> int | None:
    found = BADGE.search(response.content.decode())
    return int(found[1]) if found else None


@pytest.fixture
def unknown_retries(clerk, other_clerk):
    """Three undecided "outcome unknown" retries (3 h, 2 days and 10 min old), and others
    that wait for nothing: decided, submitted, refused."""
    now = timezone.now()
    waiting = [
        make_retry(clerk, outcome=Outcome.UNKNOWN, requested_at=now - timedelta(hours=3)),
        make_retry(other_clerk, outcome=Outcome.UNKNOWN, requested_at=now - timedelta(days=2)),
        make_retry(clerk, outcome=Outcome.UNKNOWN, requested_at=now - timedelta(minutes=10)),
    ]
    make_retry(clerk, outcome=Outcome.NONE_IMPORTED, reconciled=Reconciled.NONE_STARTED)
    make_retry(clerk, outcome=Outcome.SUBMITTED, reconciled=Reconciled.LINKED)
    make_retry(clerk, outcome=Outcome.SUBMITTED)
    make_retry(clerk, outcome=Outcome.REJECTED)
    return waiting


def test_a_supervisor_sees_a_badge_with_the_undecided_count_and_a_clerk_none(
    unknown_retries, supervisor_client, clerk_client, sandbox
):
    """On every page of the day: 3 for Sam; no link and no badge for Carla."""
    for url in (reverse("queue"), reverse("task_list"), reverse("history")):
        assert badge(supervisor_client.get(url)) == 3, url
    page = clerk_client.get(reverse("queue")).content.decode()
    assert "Waiting for a decision" not in page and "badge-count" not in page


def test_the_list_shows_them_oldest_first_with_their_age_and_links(
    unknown_retries, supervisor_client
):
    """Two days, three hours, ten minutes: each linked to its retry page."""
    response = supervisor_client.get(WAITING)
    assert response.status_code == 200
    assert [r.pk for r in response.context["retries"]] == [
        unknown_retries[1].pk,
        unknown_retries[0].pk,
        unknown_retries[2].pk,
    ]
    ages = re.findall(r'<td data-label="Waiting for" class="age">([^<]+)</td>', text(response))
    assert ages == ["2 days", "3 hours", "10 minutes"]
    links = re.findall(r'href="/retries/(\d+)/">Retry #', response.content.decode())
    assert links == [str(unknown_retries[i].pk) for i in (1, 0, 2)]
    assert badge(response) == 3


def test_the_badge_costs_one_count_and_polled_fragments_none(
    unknown_retries, supervisor_client, clerk_client, clerk
):
    """One COUNT of retries per page a supervisor opens (the list's too); a polled status
    panel and a clerk's page make none."""

    def counts(client, url, **headers) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url, **headers).status_code < 400
        return sum(
            1
            for q in queries.captured_queries
            if "COUNT(" in q["sql"].upper() and "kickouts_retryattempt" in q["sql"]
        )

    assert counts(supervisor_client, reverse("queue")) == 1
    assert counts(supervisor_client, WAITING) == 1
    assert counts(clerk_client, reverse("queue")) == 0
    running = make_retry(clerk, new_task_guid="c4a8e2f6-1d3b-4a97-b5c0-7e2f9d8a1b34")
    panel = reverse("status_panel", args=[running.pk])
    assert counts(supervisor_client, panel, HTTP_HX_REQUEST="true") == 0


@pytest.mark.postgres
def test_on_postgresql_the_count_reads_the_partial_index(unknown_retries):
    """The badge's COUNT is answered by `retry_waiting_decision`, not by the retry table."""
    if connection.vendor != "postgresql":
        pytest.skip("the plan is PostgreSQL's; `make test` runs this on PostgreSQL")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = reconcile.waiting_for_decision().order_by().explain()
    assert "retry_waiting_decision" in plan


def test_a_lost_answer_waits_on_the_list_until_a_supervisor_decides(
    clerk_client, supervisor_client, sandbox
):
    """Over real HTTP: a 502 leaves the retry unknown; Carla's page says Sam was shown it,
    Sam's badge and list have it, and his decision takes it off both."""
    sandbox.fault("kickout_post", {"status": 502, "html": True})
    send_retry(clerk_client, import_note="gateway gave up")
    attempt = RetryAttempt.objects.get()
    assert attempt.outcome == Outcome.UNKNOWN
    clerks_page = text(clerk_client.get(attempt.get_absolute_url()))
    assert "Supervisors have been shown this retry: it is on their list of retries waiting" in (
        clerks_page.replace("<strong>", "").replace("</strong>", "")
    )
    listed = supervisor_client.get(WAITING)
    assert [r.pk for r in listed.context["retries"]] == [attempt.pk]
    assert badge(listed) == 1
    decide(supervisor_client, attempt, "none_started", note="not in the task list")
    after = supervisor_client.get(WAITING)
    assert list(after.context["retries"]) == []
    assert badge(after) is None and "Nothing waits for a decision." in after.content.decode()
    # Reversed, it waits again.
    decide(supervisor_client, attempt, "reverse", note="looked again")
    assert badge(supervisor_client.get(reverse("queue"))) == 1
