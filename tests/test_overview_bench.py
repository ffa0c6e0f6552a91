"""`python -m bench`'s overview phase keeps working: its seed stores what the page counts, and
the phase times the page over HTTP and reports against the budget (no timing asserted here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from bench import data
from bench import overview as bench_overview
from bench.web import signed_in
from kickouts import overview
from kickouts.models import Comparison, ImportCause, ImportSnapshot, KickoutRow


@dataclass
class SmallRun:
    """What a phase reads of `bench.phases.Run`, for a live test server."""

    base: str
    supervisor: object
    clerk: object
    quick: bool = True
    postgres: bool = False
    rows: list[tuple] = field(default_factory=list)

    def add(self, section, name, figure, target="", ok=None) -> None:
        self.rows.append((section, name, figure, target, ok))

    def url(self, name: str, *args, **query) -> str:
        return self.base + reverse(name, args=args) + ("?" + urlencode(query) if query else "")


@pytest.fixture
def year_of_retries(transactional_db):
    """Two years of the benchmark's retries (VACUUM on PostgreSQL: outside a transaction)."""
    users = data.ensure_people()
    data.load(data.generate(400, [users[name] for name in data.CLERKS]), say=lambda text: None)
    return users


def test_the_seed_stores_imports_rows_causes_and_comparisons_the_page_counts(year_of_retries):
    """A small seed: every import with its rows and per-cause counts, and the figures add up."""
    seeded = bench_overview.seed(lambda text: None, imports=30, rows=5)
    assert "30 imports" in seeded
    assert ImportSnapshot.objects.count() == 30 and KickoutRow.objects.count() == 150
    assert sum(ImportCause.objects.values_list("rows", flat=True)) == 150
    assert Comparison.objects.exists()
    sam = get_user_model().objects.get(pk=year_of_retries[data.SUPERVISORS[0]])
    chosen = overview.OverviewFilter(period="365")
    causes, _ = overview.by_cause(chosen, sam)
    assert (
        sum(line.kicked_out for line in causes)
        == KickoutRow.objects.filter(snapshot__in=chosen.imports()).count()
    )
    bench_overview.clear()
    assert not ImportSnapshot.objects.exists() and not Comparison.objects.exists()


def test_the_overview_phase_times_the_page_and_cleans_up(live_server, sandbox, year_of_retries):
    """The phase signs in as the bench's people, reports each case, and removes its rows."""
    base = live_server.url
    run = SmallRun(
        base,
        signed_in(base, data.SUPERVISORS[0], data.PASSWORD),
        signed_in(base, data.CLERKS[0], data.PASSWORD),
    )
    bench_overview.overview_phase(run)
    names = [row[1] for row in run.rows]
    assert "supervisor, last 365 days" in names and "clerk, last 30 days" in names
    assert all("failed" not in row[2] for row in run.rows), run.rows
    assert not ImportSnapshot.objects.exists()
