"""The measurements. Each phase adds rows to the results; upstream calls come from the
sandbox's request log, timings from this process's clock (request sent to body read)."""

from __future__ import annotations

import html
import random
import re
import threading
import time
from collections import Counter, namedtuple
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import requests
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count
from django.urls import reverse

from kickouts.bulk_models import BulkRetry
from kickouts.history_filters import Cursor
from kickouts.models import RetryAttempt as Retry
from kickouts.sandbox.control import SandboxControl

from . import data, web
from .web import HX, SANDBOX_KEY, TIMEOUT, Form, Timing, form_with_button, signed_in, submit, timed

MODE = "new self-contained batch"  # needs no batch of its own: every send can succeed


Row = namedtuple("Row", "section name figure target result")  # result: PASS, MISS or ""


@dataclass
class Run:
    quick: bool
    postgres: bool
    base: str
    sandbox: SandboxControl
    workers: list[int]
    poll_seconds: float
    rows: list[Row] = field(default_factory=list)
    retry_pages: list[str] = field(default_factory=list)
    round_trip: float = 0.0
    load_seconds: float = 60.0
    latency: float = 0.2

    def __post_init__(self) -> None:
        people = [*data.CLERKS, data.SUPERVISORS[0], data.ADMIN]
        sessions = [signed_in(self.base, name, data.PASSWORD) for name in people]
        *self.clerks, self.supervisor, self.admin = sessions
        self.clerk = self.clerks[0]

    def add(self, section, name, figure, target="", ok: bool | None = None) -> None:
        result = "" if ok is None else "PASS" if ok else "MISS"
        self.rows.append(Row(section, name, figure, target, result))

    def url(self, name: str, *args, **query) -> str:
        return self.base + reverse(name, args=args) + ("?" + urlencode(query) if query else "")

    def seq(self) -> int:
        return int(self.sandbox.log_page(since=10**12)["next"])

    def calls_since(self, seq: int) -> Counter:
        return Counter(e["endpoint"] for e in self.sandbox.log(since=seq))

    def new_task(self) -> str:
        """A bill import that ended with kickouts, one nobody has opened or retried yet."""
        messages = ["Account not found", "Meter not found for account"]
        return self.sandbox.add_task(kickout_messages=messages)["taskGUId"]

    def trips(self, seconds: float) -> str:
        return f"{seconds / self.round_trip:.2f}"


def _counts(calls: Counter) -> str:
    parts = ", ".join(f"{name} {n}" for name, n in sorted(calls.items()))
    return f"{sum(calls.values())}" + (f" ({parts})" if parts else "")


def _ms(timing: Timing) -> str:
    text = f"median {timing.median * 1000:.0f} ms, p95 {timing.p95 * 1000:.0f} ms"
    text += f", n={len(timing.samples)}"
    return text + (f", {len(timing.failures)} failed" if timing.failures else "")


def parallel(work, count: int) -> None:
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(work, range(count)))


def round_trip(run: Run) -> None:
    """One round trip as the dashboard's host sees it: a GET straight to the sandbox."""
    api, timing, guid = requests.Session(), Timing(), run.new_task()
    api.headers["ECI-ApiKey"] = SANDBOX_KEY
    for _ in range(11 if run.quick else 21):
        timed(timing, lambda: api.get(f"{run.sandbox.base_url}/api/v3/task/{guid}", timeout=9))
    timing.samples.pop(0)  # the connection's set-up
    run.round_trip = timing.median
    run.add("Pages", "one round trip (RT): a GET straight to the sandbox", _ms(timing))


def pages(run: Run) -> None:
    """A clerk's own steps, each on a task nobody has opened: the list, the task page, review,
    send; then the status panel of what was sent, and the history."""
    repeats = 5 if run.quick else 20
    kinds = ["task list", "task page", "retry review", "send", "status panel", "history"]
    timings = {kind: Timing() for kind in kinds}
    calls: dict[str, list[Counter]] = {kind: [] for kind in kinds}
    clerk = run.clerk

    def step(kind, send, ok=(200,), keep=True):
        seq, timing = run.seq(), timings[kind] if keep else Timing()
        response = timed(timing, send, ok)
        if response is None:
            raise RuntimeError(f"{kind}: {timing.failures[-1]}")
        if keep:
            calls[kind].append(run.calls_since(seq))
        return response

    try:
        for index in range(repeats + 1):
            keep = index > 0  # the first pass warms the workers and the cached `me`
            step("task list", lambda: clerk.get(run.url("task_list"), timeout=TIMEOUT), keep=keep)
            url = run.url("task_detail", run.new_task())
            page = step("task page", lambda u=url: clerk.get(u, timeout=TIMEOUT), keep=keep)
            form = form_with_button(page.text, url, "review")
            review = lambda f=form: submit(clerk, f, "review", batch_mode=MODE)  # noqa: E731
            confirm = form_with_button(step("retry review", review, keep=keep).text, url, "send")
            sent = step("send", lambda f=confirm: submit(clerk, f, "send"), (200, 302), keep)
            run.retry_pages.append(retry_page(run.base, sent))
        for _ in range(repeats):
            step("history", lambda: run.supervisor.get(run.url("history"), timeout=TIMEOUT))
        panel = status_panel_url(clerk, run.base, run.retry_pages[-1])
        for _ in range(repeats * 3):
            poll = lambda: clerk.get(panel, headers=HX, timeout=TIMEOUT)  # noqa: E731
            step("status panel", poll, (200, 286))
    finally:  # what was measured is reported, also when a later step broke
        targets = {"task list": 1.3, "task page": 1.3, "retry review": 1.3, "send": 2.3}
        for kind in [kind for kind in kinds if calls[kind]]:
            timing, target, counts = timings[kind], targets.get(kind), calls[kind]
            totals = [sum(c.values()) for c in counts]
            usual = Counter(totals).most_common(1)[0][0]
            example = _counts(counts[totals.index(usual)])
            figure = f"**{run.trips(timing.median)} RT** median, {run.trips(timing.p95)} RT p95 "
            figure += f"({_ms(timing)}); upstream calls {example}, at most {max(totals)}"
            ok = None if target is None else timing.median / run.round_trip <= target
            run.add("Pages", kind, figure, f"≤ {target} RT" if target else "", ok)


def confirm_form(session: requests.Session, base: str, guid: str) -> Form:
    """Open a task and review a retry of it: the form whose Send button sends it."""
    url = base + reverse("task_detail", args=[guid])
    page = session.get(url, timeout=TIMEOUT)
    page.raise_for_status()
    review = submit(session, form_with_button(page.text, url, "review"), "review", batch_mode=MODE)
    return form_with_button(review.text, url, "send")


def retry_page(base: str, sent: requests.Response) -> str:
    """Where a send led: htmx is told with HX-Redirect, a plain POST with a redirect."""
    target = sent.headers.get("HX-Redirect") or sent.headers.get("Location", "")
    if not target:
        raise RuntimeError(f"the send answered {sent.status_code} without going to a retry")
    return base + target if target.startswith("/") else target


def status_panel_url(session: requests.Session, base: str, retry_page: str) -> str:
    """The URL the retry page's status panel polls (as htmx would read it)."""
    page = session.get(retry_page, timeout=TIMEOUT)
    page.raise_for_status()
    head, tail = reverse("status_panel", args=[987654321]).split("987654321")
    links = [html.unescape(link) for link in re.findall(r'hx-get="([^"]+)"', page.text)]
    links = [link for link in links if link.startswith(head) and tail in link]
    if not links:
        raise RuntimeError(f"{retry_page} shows no status panel")
    return base + max(links, key=len)  # the polling one carries its query


def history_filters() -> list[tuple[str, dict, dict]]:
    """(name, history query, admin changelist query): every history filter, and text search
    for a GUID, a batch code and note words, each matching what the data holds."""
    clerk = get_user_model().objects.get(username=data.CLERKS[1])
    first = Retry.objects.order_by("id").values_list("requested_at", flat=True)[0]
    start = first + timedelta(days=400)
    month = datetime(start.year, start.month, 1, tzinfo=UTC)
    end = (month + timedelta(days=32)).replace(day=1)
    guid = Retry.objects.get(id=Retry.objects.count() // 3).source_task_guid
    code = Retry.objects.exclude(batch_code="").values_list("batch_code", flat=True)[7]
    codes = Retry.objects.filter(batch_code=code).count()
    note = Retry.objects.filter(import_note__startswith="Meter swap").first()
    note = note.import_note if note else "Meter swap"
    day, mode = "%Y-%m-%d", "use pending batch"
    # Halfway down, as "Older" links reach it (keyset), and as the admin's pages do (OFFSET).
    half = Retry.objects.count() // 2
    middle = str(Cursor.of(Retry.objects.get(id=half)))
    return [
        ("unfiltered", {}, {}),
        (f"by user ({clerk.username})", {"user": clerk.pk}, {"requested_by__id__exact": clerk.pk}),
        ("by outcome (rejected)", {"outcome": "rejected"}, {"outcome__exact": "rejected"}),
        ("by final status (Failed)", {"final_status": "Failed"}, {"follow_up__status": "Failed"}),
        (f"by batch mode ({mode})", {"batch_mode": mode}, {"batch_mode": mode}),
        (
            f"by date ({month:%Y-%m})",
            {"date_from": f"{month:{day}}", "date_to": f"{end - timedelta(1):{day}}"},
            {"requested_at__gte": month.isoformat(), "requested_at__lt": end.isoformat()},
        ),
        ("search: a task GUID", {"q": guid}, {"q": guid}),
        (f"search: a batch code ({codes} matching)", {"q": code}, {"q": code}),
        ("search: note words (1 matching)", {"q": note}, {"q": note}),
        (f"a page {half:,} retries deep", {"before": middle}, {"p": max(1, half // 100)}),
    ]


BUDGET_SECONDS = 0.050  # p95 of a page that makes no EnergyCAP call (README, Benchmarks)
BUDGET = "p95 ≤ 50 ms"
BUDGET_SECTION = "Pages with no EnergyCAP call: p95 ≤ 50 ms"


def history(run: Run) -> None:
    """Each filter on the history page against the budget, beside a trivial view
    (/health/live/ behind the same middleware, sampled alternately) and the admin
    changelist (a superuser) with the same filter; then the supervisors' list of bulks."""
    admin_repeats = 2 if run.quick else 3
    retries = Retry.objects.count()
    for name, ours, theirs in history_filters():
        page, _ = within_budget(run, f"history, {name}", run.supervisor, run.url("history", **ours))
        admin, url = Timing(), run.url("admin:kickouts_retryattempt_changelist", **theirs)
        started = time.monotonic()
        while len(admin.samples) <= admin_repeats and time.monotonic() - started < 60:
            timed(admin, lambda u=url: run.admin.get(u, timeout=TIMEOUT))
        admin.samples.pop(0)  # warm-up
        last = run.rows.pop()
        figure = f"{last.figure}; admin changelist {_ms(admin)}: {admin.median / page.median:.0f}×"
        run.rows.append(last._replace(figure=figure))
    bulks = BulkRetry.objects.count()
    within_budget(run, f"bulk retries ({bulks:,} bulks)", run.supervisor, run.url("bulk_list"))
    run.add(BUDGET_SECTION, "(the history's rows)", f"{retries:,} retries")


def within_budget(run: Run, name: str, session, url: str) -> tuple[Timing, Timing]:
    """A page's p95 against the budget, beside a trivial view (/health/live/ behind the same
    middleware) sampled alternately, for context. On PostgreSQL only, the budget's database."""
    page, floor = Timing(), Timing()
    for _ in range((10 if run.quick else 40) + 1):
        timed(floor, lambda: session.get(run.url("health_live"), timeout=TIMEOUT))
        timed(page, lambda: session.get(url, timeout=TIMEOUT))
    page.samples.pop(0), floor.samples.pop(0)  # warm-up
    figure = f"**p95 {page.p95 * 1000:.0f} ms**, median {page.median * 1000:.0f} ms "
    figure += f"(n={len(page.samples)}{', failed' if page.failures else ''}); trivial view "
    figure += f"median {floor.median * 1000:.1f} ms ({page.median / floor.median:.1f}×)"
    ok = page.p95 <= BUDGET_SECONDS and not page.failures
    target = BUDGET + ("" if run.postgres else " on PostgreSQL")
    run.add(BUDGET_SECTION, name, figure, target, ok if run.postgres else None)
    return page, floor


def download(session, url: str) -> tuple[float, float, float, int, int]:
    """Seconds to the first byte, to the first data row and to the end of a streamed CSV;
    its bytes and lines."""
    begin = time.perf_counter()
    first_byte = first_row = None
    size = lines = 0
    with session.get(url, stream=True, timeout=TIMEOUT) as response:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=None):  # pieces as they arrive
            first_byte = first_byte or time.perf_counter() - begin
            size, lines = size + len(chunk), lines + chunk.count(b"\n")
            if lines >= 2 and first_row is None:  # the header line, then a row
                first_row = time.perf_counter() - begin
    end = time.perf_counter() - begin
    return first_byte or end, first_row or end, end, size, lines


def csv_within_budget(run: Run, name: str, url: str) -> None:
    """A streamed CSV: its first row against the budget (the download has begun, with
    data), the whole file reported beside it."""
    first_byte, first_row, whole = Timing(), Timing(), Timing()
    for _ in range((5 if run.quick else 20) + 1):
        timings = download(run.clerk, url)
        for timing, seconds in zip((first_byte, first_row, whole), timings[:3], strict=True):
            timing.samples.append(seconds)
        size, lines = timings[3:]
    for timing in (first_byte, first_row, whole):
        timing.samples.pop(0)  # warm-up
    figure = f"first row **p95 {first_row.p95 * 1000:.0f} ms** (median "
    figure += f"{first_row.median * 1000:.0f} ms; first byte p95 {first_byte.p95 * 1000:.0f} ms); "
    figure += f"all {lines - 1:,} rows, {size / 1e6:.1f} MB: median {whole.median * 1000:.0f} ms, "
    figure += f"p95 {whole.p95 * 1000:.0f} ms (n={len(whole.samples)})"
    ok = first_row.p95 <= BUDGET_SECONDS
    target = f"first row {BUDGET}" + ("" if run.postgres else " on PostgreSQL")
    run.add(BUDGET_SECTION, name, figure, target, ok if run.postgres else None)


def csv_export(run: Run) -> None:
    """All rows as CSV, streamed, while the workers' memory is sampled."""
    received, lines, begin = 0, 0, time.perf_counter()
    with web.peak_growth(run.workers) as memory:
        csv = run.supervisor.get(run.url("history_csv"), stream=True, timeout=TIMEOUT)
        with csv as response:
            for chunk in response.iter_content(chunk_size=1 << 16):
                received += len(chunk)
                lines += chunk.count(b"\n")
    took = time.perf_counter() - begin
    complete = response.status_code == 200 and lines - 1 >= Retry.objects.count() - 50
    figure = (
        f"{lines - 1:,} rows, {received / 1e6:.0f} MB in **{took:.1f} s**; the worker's peak "
        f"memory **+{memory['KiB'] / 1024:.1f} MiB**"
    )
    ok = complete and memory["KiB"] < 50 * 1024
    run.add("CSV export", "every row, supervisor", figure, "all rows, < 50 MiB", ok)


def viewers(run: Run) -> None:
    """N people watch one running retry's status panel: how often is EnergyCAP asked?"""
    count, seconds = (20, 12.0) if run.quick else (100, 30.0)
    panel = status_panel_url(run.clerk, run.base, run.retry_pages[0])
    served, seq, begin = Timing(), run.seq(), time.monotonic()

    def watch(number: int) -> None:
        browser = requests.Session()
        # The retry's own clerk and a supervisor: the people who may see it.
        browser.cookies.update((run.clerk, run.supervisor)[number % 2].cookies)
        time.sleep(run.poll_seconds * number / count)  # pages opened at different moments
        while time.monotonic() - begin < seconds:
            timed(served, lambda: browser.get(panel, headers=HX, timeout=TIMEOUT), (200, 286))
            time.sleep(run.poll_seconds)

    parallel(watch, count)
    asked = [datetime.fromisoformat(e["time"]) for e in run.sandbox.log("task_get", since=seq)]
    gaps = [(b - a).total_seconds() for a, b in zip(asked, asked[1:], strict=False)] or [0.0]
    per_interval = len(asked) / (sum(gaps) / run.poll_seconds + 1)  # n GETs in n intervals: 1
    figure = f"**{per_interval:.2f}** upstream GETs per {run.poll_seconds} s interval (shortest "
    figure += f"gap {min(gaps):.2f} s); {len(served.samples)} panels served, {_ms(served)}"
    name = f"{count} viewers of a running retry's status panel for {seconds:g} s"
    ok = min(gaps) >= 0.95 * run.poll_seconds and not served.failures
    run.add("Upstream economy", name, figure, "≤ 1 per interval", ok)


def load(run: Run) -> None:
    """20 clerks browse for a minute (the list, a task, their own retry's status panel);
    half-way all of them send the same task at the same moment. Stops by itself."""
    seconds, tally = run.load_seconds, dict[str, Timing]()
    sample = "00000000-0000-4000-8000-000000000000"
    link = re.escape(reverse("task_detail", args=[sample]))
    task_link = re.compile(link.replace(re.escape(sample), "([0-9a-f-]{36})"))
    clerks, own, storm_task = run.clerks, [run.new_task() for _ in run.clerks], run.new_task()
    panels, confirms = [""] * len(clerks), list[Form | None]([None] * len(clerks))

    def prepare(n: int) -> None:  # each has a retry of their own, and reviewed the storm task
        sent = submit(clerks[n], confirm_form(clerks[n], run.base, own[n]), "send")
        panels[n] = status_panel_url(clerks[n], run.base, retry_page(run.base, sent))
        confirms[n] = confirm_form(clerks[n], run.base, storm_task)

    parallel(prepare, len(clerks))

    def call(kind: str, send, ok=(200,)) -> requests.Response | None:
        return timed(tally.setdefault(kind, Timing()), send, ok)

    def browse(n: int) -> None:
        clerk, rng = clerks[n], random.Random(n)
        while time.monotonic() < deadline:
            listing = call("task list", lambda: clerk.get(run.url("task_list"), timeout=TIMEOUT))
            guids = task_link.findall(listing.text) if listing is not None else []
            time.sleep(rng.uniform(0.5, 2))
            if guids:
                url = run.url("task_detail", rng.choice(guids))
                call("task page", lambda u=url: clerk.get(u, timeout=TIMEOUT))
            for _ in range(3):
                time.sleep(run.poll_seconds)
                poll = lambda: clerk.get(panels[n], headers=HX, timeout=TIMEOUT)  # noqa: E731
                call("status panel", poll, (200, 286))

    def send(n: int) -> None:
        tab = requests.Session()  # a second tab: its own connection, the same cookies
        tab.cookies.update(clerks[n].cookies)
        barrier.wait()
        confirm = confirms[n]
        assert confirm is not None  # prepared above
        call(f"send ({len(clerks)} at once)", lambda: submit(tab, confirm, "send"), (200, 302))

    seq, barrier = run.seq(), threading.Barrier(len(clerks))
    deadline = time.monotonic() + seconds
    browsing = threading.Thread(target=parallel, args=(browse, len(clerks)))
    browsing.start()
    time.sleep(seconds / 2)
    parallel(send, len(clerks))
    browsing.join()
    entries = run.sandbox.log(since=seq)
    posts = sum(1 for e in entries if e["endpoint"] == "kickout_post" and storm_task in e["path"])
    section = f"Load: {len(clerks)} clerks for {seconds:g} s"
    for kind, timing in sorted(tally.items()):
        run.add(section, kind, f"{_ms(timing)}; {run.trips(timing.median)} RT median")
    run.add(section, "EnergyCAP requests", _counts(Counter(e["endpoint"] for e in entries)))
    failed = sum(len(t.failures) for t in tally.values())
    name = f"{len(clerks)} simultaneous sends of one task: re-import POSTs"
    figure = f"**{posts}**; {failed} of {sum(len(t.samples) for t in tally.values())} failed"
    run.add(section, name, figure, "exactly 1, none failed", posts == 1 and not failed)


CAUSES = ["Account not found", "Meter not found for account", "Bill overlaps an existing bill"]
CAUSES += ["Vendor code does not match account", "Account is inactive", "Dates in mixed formats"]
CAUSES += ["Bill dates are outside the account's service dates", "Meter is not assigned"]


def kickout_queue(run: Run) -> None:
    """500 imports with 20,000 kickout rows: the first load (requests in flight), then the
    queue page, the largest group's page (first and deep pages), the whole queue's CSV and
    that group's, each against the budget."""
    from kickouts.models import ImportSnapshot, KickoutRow
    from kickouts.snapshots import snapshot_period

    imports, rng, now = 50 if run.quick else 500, random.Random(14), datetime.now(UTC)
    ImportSnapshot.objects.all().delete()
    for _ in range(imports):  # 4 messages x 10 rows: 40 rows an import
        begin = now - timedelta(days=rng.uniform(0.1, 29))
        end = (begin + timedelta(minutes=rng.randint(1, 20))).isoformat()
        task = dict(kickout_messages=rng.sample(CAUSES, 4), rows_per_message=10)
        run.sandbox.add_task(**task, user_id=rng.randint(1, 6), begin_date=f"{begin}", end_date=end)
    seq, began = run.seq(), time.monotonic()
    stored = snapshot_period(30)[1]
    took, kinds = time.monotonic() - began, ("kickout_summary", "kickout_detail")
    log = [e for e in run.sandbox.log(since=seq) if e["endpoint"] in kinds]
    starts = [datetime.fromisoformat(e["time"]).timestamp() for e in log]
    # Each answer is `latency` late: requests begun within less than that were in flight at once.
    busiest = max((sum(s <= o < s + 0.95 * run.latency for o in starts) for s in starts), default=0)
    section = f"Kickout queue: {stored} imports, {KickoutRow.objects.count():,} kickout rows"
    figure = f"{stored} imports stored in {took:.1f} s; at most **{busiest}** kickout requests "
    figure += f"begun within {run.latency * 1000:.0f} ms"
    run.add(section, "first load (the worker's code)", figure, "≤ 4 in flight", busiest <= 4)
    if run.postgres:  # as autovacuum would soon after: this run replaced every stored import
        with connection.cursor() as cursor:
            for model in (ImportSnapshot, KickoutRow):
                cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    # The largest group: the most rows to count and sort.
    group = (
        KickoutRow.objects.values("message")
        .annotate(rows=Count("id"))
        .order_by("-rows", "message")
        .values_list("message", flat=True)
        .first()
    )
    seq = run.seq()
    run.clerk.get(run.url("queue"), timeout=TIMEOUT)  # the first view asks for a listing
    rows = KickoutRow.objects.count()
    in_group = KickoutRow.objects.filter(message=group).count()
    within_budget(run, f"kickout queue ({rows:,} rows)", run.clerk, run.url("queue"))
    url = run.url("queue_group", message=group)
    within_budget(run, f"a kickout group ({in_group:,} rows)", run.clerk, url)
    url = run.url("queue_group", message=group, page=50, imports_page=5)
    within_budget(run, "the same group, rows page 50, imports page 5", run.clerk, url)
    csv_within_budget(run, f"CSV of the whole queue ({rows:,} rows)", run.url("queue_csv"))
    url = run.url("queue_csv", message=group)
    csv_within_budget(run, f"CSV of the largest group ({in_group:,} rows)", url)
    calls = sum(run.calls_since(seq).values())
    run.add(section, "upstream calls of the pages above", f"{calls}", "0", calls == 0)


PHASES = [round_trip, pages, history, csv_export, viewers, load, kickout_queue]

# The overview's phase lives in its own module (bench/overview.py).
from .overview import overview_phase  # noqa: E402

PHASES.append(overview_phase)


def chosen(names: str | None) -> list:
    """The phases named (all when none is), in their usual order; the round trip always."""
    if not names:
        return PHASES
    wanted = {name.strip() for name in names.split(",")}
    unknown = wanted - {step.__name__ for step in PHASES}
    if unknown:
        raise SystemExit(f"No such phase: {', '.join(sorted(unknown))}")
    return [step for step in PHASES if step is round_trip or step.__name__ in wanted]
