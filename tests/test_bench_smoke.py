"""`python -m bench` drives the dashboard only through what it serves; these keep it working.

No timings here: the benchmark's HTML-driven send flow, its data generator and its history
filters, each against the current views, templates and models.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from bench import data, phases
from bench.web import HX, signed_in, submit
from kickouts.bulk_models import BulkLine, BulkRetry
from kickouts.models import RetryAttempt

from .conftest import PASSWORD


@pytest.mark.django_db(transaction=True)
def test_the_bench_reviews_and_sends_a_retry_through_the_served_forms(live_server, clerk, sandbox):
    """Task page → review → send → status panel, read from the HTML, makes exactly one POST."""
    base = live_server.url
    session = signed_in(base, clerk.username, PASSWORD)
    guid = sandbox.add_task(kickout_messages=["Account not found"])["taskGUId"]
    sent = submit(session, phases.confirm_form(session, base, guid), "send")
    panel = phases.status_panel_url(session, base, phases.retry_page(base, sent))
    assert session.get(panel, headers=HX, timeout=10).status_code in (200, 286)
    assert [entry["path"] for entry in sandbox.log("kickout_post")] == [
        f"/api/v202401/import/bill/task/{guid}/kickout"
    ]
    assert RetryAttempt.objects.get().source_task_guid == guid


@pytest.mark.django_db(transaction=True)
def test_generated_retries_load_and_every_bench_filter_is_one_the_pages_accept():
    """The bulk loader fills today's retry and bulk tables; each history and admin query is
    valid, and the bulks list and the bulk filter find the generated bulks."""
    users = data.ensure_people()
    data.load(data.generate(300, [users[name] for name in data.CLERKS]), say=lambda text: None)
    assert RetryAttempt.objects.count() == 300
    data.load_bulks(300)
    assert BulkRetry.objects.count() == 2 and BulkLine.objects.count() == 20
    assert RetryAttempt.objects.filter(bulk=2).count() == 10
    supervisor, admin = Client(), Client()
    supervisor.force_login(get_user_model().objects.get(username=data.SUPERVISORS[0]))
    admin.force_login(get_user_model().objects.get(username=data.ADMIN))
    for name, ours, theirs in phases.history_filters():
        page = supervisor.get(reverse("history"), ours)
        assert page.status_code == 200 and b"errorlist" not in page.content, name
        changelist = admin.get(reverse("admin:kickouts_retryattempt_changelist"), theirs)
        assert changelist.status_code == 200, name
    bulks = supervisor.get(reverse("bulk_list"))
    assert bulks.status_code == 200 and reverse("bulk_detail", args=[2]) in bulks.content.decode()
    in_bulk = supervisor.get(reverse("history"), {"bulk": 2}).content.decode()
    assert in_bulk.count('<div class="muted small">Retry #') == 10
