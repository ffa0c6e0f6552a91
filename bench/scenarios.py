"""The benchmarks themselves, each adding rows to the results table.

Every timing runs against the same gunicorn worker as the framework floor it is compared with,
in the same run. Upstream requests are counted from the sandbox's request log.
"""

from __future__ import annotations

import random
import re
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import requests

from kickouts.sandbox.control import SandboxControl
from kickouts.sandbox.state import API_USER_KICKOUT_TASK_GUID, RUNNING_TASK_GUID

from . import data
from .measure import MemorySampler, Timing, megabytes, ms, time_requests
from .report import Row, ratio_row, timing_figure
from .server import Gunicorn, memory_kib, reset_peak_memory

HX = {"HX-Request": "true"}
TASK_LINK_RE = re.compile(r'href="/tasks/[0-9a-f-]{36}/"')
HISTORY_ROW_RE = re.compile(r'href="/retries/\d+/"')


@dataclass
class Plan:
    """How many times each benchmark repeats (fewer with --quick)."""

    quick: bool
    floor: int = 300
    panel: int = 300
    task_list: int = 60
    task_page: int = 40
    history: int = 30
    admin: int = 10
    history_budget: float = 15.0
    admin_budget: float = 30.0
    viewers: int = 100
    watch_seconds: float = 30.0

    @classmethod
    def for_mode(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            floor=100,
            panel=100,
            task_list=20,
            task_page=15,
            history=10,
            admin=5,
            history_budget=5.0,
            admin_budget=10.0,
            watch_seconds=12.0,
        )


@dataclass
class Run:
    plan: Plan
    rows: int
    server: Gunicorn
    sandbox: SandboxControl
    sessions: dict[str, requests.Session]
    floor: Timing = field(default_factory=Timing)
    results: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sql: dict[str, str] = field(default_factory=dict)

    def url(self, path: str, **params) -> str:
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return f"{self.server.url}{path}" + (f"?{query}" if query else "")

    def add(self, row: Row) -> None:
        self.results.append(row)

    @property
    def paired_floor(self) -> tuple[requests.Session, str]:
        # Sent with a signed-in client's cookies, like every page it is compared with.
        return self.sessions["supervisor"], self.url("/bench/floor/")


# --- Sandbox set-up -------------------------------------------------------------------------


def prepare_sandbox(control: SandboxControl, *, list_tasks: int = 250) -> int:
    """Instant answers; the watched running tasks; bill imports enough for a 250-row list.

    Returns how many bill imports began in the last 90 days.
    """
    control.clear_faults()
    control.fault("*", latency=0.0)
    long_ago = (datetime.now(UTC) - timedelta(days=200)).isoformat()
    for guid in data.watch_guids():
        # Began long ago, so they stay out of the task list; never end by themselves.
        control.add_task(taskGUId=guid, begin_date=long_ago, end_date=None)
    seeded = 77  # the sandbox's bill imports within 90 days (78 in all, one 80+ days ago)
    rng = random.Random(7)
    statuses = ["Completed"] * 7 + ["Failed"]
    now = datetime.now(UTC)
    for index in range(list_tasks - seeded + 8):
        begin = now - timedelta(days=rng.uniform(0.1, 88))
        props = {
            "begin_date": begin.isoformat(),
            "end_date": (begin + timedelta(minutes=rng.randint(1, 30))).isoformat(),
            "task_note": rng.choice(["", "", "Monthly EDI feed", "Water true-up"]),
            "user_id": 1 + index % 6,
        }
        if index % 5 == 0:
            props["kickout_messages"] = ["Account not found", "Meter not found for account"]
        else:
            props["status"] = rng.choice(statuses)
        control.add_task(**props)
    return seeded + list_tasks - seeded + 8


def log_seq(control: SandboxControl) -> int:
    """The sequence number the next logged upstream request will get."""
    return int(control.log_page(since=10**12)["next"])


def upstream_since(control: SandboxControl, since: int) -> list[dict]:
    entries: list[dict] = []
    while True:
        page = control.log_page(since=since)
        entries += page["entries"]
        if not page["entries"] or page["next"] == since:
            return entries
        since = page["next"]


# --- Framework floor ------------------------------------------------------------------------


def floor(run: Run, *, first: bool) -> None:
    timing = time_requests(
        run.sessions["supervisor"],
        run.url("/bench/floor/"),
        repeats=run.plan.floor,
        warmup=30 if first else 5,
        budget=60,
    )
    run.floor = run.floor.merged(timing)
    if first:
        return
    # The reference of every ratio: listed first.
    run.results.insert(
        0,
        Row(
            "Framework floor",
            "trivial view HttpResponse('ok') behind the product's middleware, no session read "
            "(signed-in client; two passes: start and end of the run)",
            timing_figure(run.floor),
            note="the reference of every ratio below",
        ),
    )
    signed = time_requests(
        run.sessions["supervisor"],
        run.url("/bench/floor/signed-in/"),
        repeats=run.plan.floor // 2,
        warmup=5,
        budget=60,
        floor=run.paired_floor,
    )
    run.results.insert(
        1,
        ratio_row(
            "Framework floor",
            "the same view signed in (session + user lookup, as every product page)",
            signed,
            run.floor,
            "floor",
        ),
    )


# --- Status panel ---------------------------------------------------------------------------


def status_panel(run: Run, interval: float) -> None:
    from kickouts.models import RetryAttempt

    supervisor = run.sessions["supervisor"]
    pk = RetryAttempt.objects.get(new_task_guid=RUNNING_TASK_GUID).pk
    started = f"{time.time():.0f}"
    headers = {**HX, "HX-Current-URL": run.url(f"/retries/{pk}/")}
    panel = run.url(f"/retries/{pk}/status/", started=started, failures=0)
    before = log_seq(run.sandbox)
    typical = time_requests(
        supervisor,
        panel,
        repeats=run.plan.panel,
        warmup=10,
        budget=60,
        headers=headers,
        floor=run.paired_floor,
    )
    fetched = sum(e["endpoint"] == "task_get" for e in upstream_since(run.sandbox, before))
    total = typical.count + 10
    run.add(
        ratio_row(
            "Status panel (/retries/<id>/status/, HX-Request, RUNNING_TASK_GUID)",
            "typical: polled by many watchers, mostly shared-cache hits — TARGET APPLIES",
            typical,
            run.floor,
            "floor",
            at_most=3,
            note=f"{fetched} of {total} requests asked EnergyCAP (at most one per {interval:g} s "
            f"interval); {run.sql.get('panel', '')}".rstrip("; "),
        )
    )
    # Cold: the first look at each of many running tasks, so every request misses the cache,
    # asks the sandbox and stores what it saw on the retry record.
    watch = dict(
        RetryAttempt.objects.filter(new_task_guid__in=data.watch_guids()).values_list(
            "new_task_guid", "pk"
        )
    )
    urls = [
        run.url(f"/retries/{watch[guid]}/status/", started=started, failures=0)
        for guid in data.watch_guids()
    ]
    warmup = 5
    count = len(urls) - warmup if not run.plan.quick else 40
    before = log_seq(run.sandbox)
    cold = time_requests(
        supervisor,
        urls,
        repeats=count,
        warmup=warmup,
        budget=60,
        headers=HX,
        min_repeats=count,
        floor=run.paired_floor,
    )
    fetched = sum(e["endpoint"] == "task_get" for e in upstream_since(run.sandbox, before))
    run.add(
        ratio_row(
            "Status panel (/retries/<id>/status/, HX-Request, RUNNING_TASK_GUID)",
            "cold: cache miss (first look at a running task), upstream GET + record update",
            cold,
            run.floor,
            "floor",
            note=f"{fetched} upstream requests for {cold.count} timed panels",
        )
    )


# --- Task list and task page ------------------------------------------------------------------


def task_list(run: Run, tasks_in_period: int) -> None:
    clerk = run.sessions["clerk"]
    section = "Task list (/?period=90)"
    wide = clerk.get(run.url("/", period=90, per_page=250), timeout=60)
    shown = len(TASK_LINK_RE.findall(wide.text))
    if wide.status_code == 200 and shown >= 250:
        url = run.url("/", period=90, per_page=250)
        what = f"{shown} tasks on the page (per_page=250)"
    else:
        url = run.url("/", period=90)
        page = clerk.get(url, timeout=60)
        shown = len(TASK_LINK_RE.findall(page.text))
        what = (
            f"ONLY {shown} of {tasks_in_period} tasks on the page: the view shows "
            f"TASKS_PER_PAGE = {shown} and has no per_page parameter, so 250 cannot be measured"
        )
    before = log_seq(run.sandbox)
    clerk.get(url, timeout=60).raise_for_status()
    calls = Counter(e["endpoint"] for e in upstream_since(run.sandbox, before))
    timing = time_requests(
        clerk, url, repeats=run.plan.task_list, warmup=5, budget=60, floor=run.paired_floor
    )
    run.add(
        ratio_row(
            section,
            what,
            timing,
            run.floor,
            "floor",
            at_most=10,
            note=run.sql.get("task_list", ""),
        )
    )
    count = sum(calls.values())
    run.add(
        Row(
            "Upstream economy",
            "one task list view: upstream requests",
            f"{count} ({_endpoints(calls)})",
            target="1",
            result="PASS" if count == 1 else "MISS",
        )
    )


def task_page(run: Run) -> None:
    clerk = run.sessions["clerk"]
    url = run.url(f"/tasks/{API_USER_KICKOUT_TASK_GUID}/")
    first_seq = log_seq(run.sandbox)
    first = clerk.get(url, timeout=60)
    first.raise_for_status()
    cold = Counter(e["endpoint"] for e in upstream_since(run.sandbox, first_seq))
    second_seq = log_seq(run.sandbox)
    clerk.get(url, timeout=60).raise_for_status()
    warm = Counter(e["endpoint"] for e in upstream_since(run.sandbox, second_seq))
    has_form = 'name="batch_mode"' in first.text
    # What the page needs: the task (status, counts), the kickout summary (messages) and one
    # page of the detail grid (rows) to show; the open and pending batches for the form's
    # choices; the key's user (its permissions decide which batches it may use), cached.
    needed = {"task_get": 1, "kickout_summary": 1, "kickout_detail": 1, "batch_list": 1}
    minimum = sum(needed.values())
    count = sum(warm.values())
    run.add(
        Row(
            "Upstream economy",
            "one task page (Completed with kickouts, clerk sees the retry form"
            + ("" if has_form else " — FORM NOT SHOWN")
            + ")",
            f"{count} ({_endpoints(warm)}); first view with `me` uncached: "
            f"{sum(cold.values())} ({_endpoints(cold)})",
            target=f"{minimum} (+1 `me` per 5 min)",
            result="PASS" if count <= minimum and cold.get("me", 0) <= 1 and has_form else "MISS",
            note="task: status and counts; kickout summary: the messages; kickout detail: the "
            "rows; batch list: open+pending batches in one filtered request; me: the key's "
            "permissions, cached 300 s",
        )
    )
    timing = time_requests(
        clerk, url, repeats=run.plan.task_page, warmup=3, budget=60, floor=run.paired_floor
    )
    run.add(
        ratio_row(
            "Task page (/tasks/<guid>/, clerk)",
            "Completed with kickouts task with the retry form (no target given)",
            timing,
            run.floor,
            "floor",
            note=run.sql.get("task_page", ""),
        )
    )


def _endpoints(calls: Counter) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(calls.items())) or "none"


# --- History against the admin ----------------------------------------------------------------


@dataclass
class HistoryQuery:
    name: str
    history: dict
    admin: dict


def history_queries(rows: int) -> list[HistoryQuery]:
    """The same six questions asked of the history page and of the admin changelist."""
    from django.contrib.auth import get_user_model

    from kickouts.history_filters import Cursor
    from kickouts.models import RetryAttempt

    clerk = get_user_model().objects.get(username=data.CLERK)
    newest = RetryAttempt.objects.order_by("-requested_at").values_list("requested_at", flat=True)
    newest = newest.first()
    start = (newest - timedelta(days=365)).replace(day=1, hour=0, minute=0, second=0)
    start = start.replace(microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    guid = RetryAttempt.objects.filter(pk=rows // 3).values_list("source_task_guid", flat=True)[0]
    middle = rows // 2
    pk, at = (
        RetryAttempt.objects.order_by("-requested_at", "-id").values_list("pk", "requested_at")
    )[middle]
    in_month = RetryAttempt.objects.filter(requested_at__gte=start, requested_at__lt=end).count()
    clerk_rows = RetryAttempt.objects.filter(requested_by=clerk).count()
    return [
        HistoryQuery("unfiltered, first page", {}, {}),
        HistoryQuery(
            f"by user ({data.CLERK}, {clerk_rows:,} retries)",
            {"user": clerk.pk},
            {"requested_by__id__exact": clerk.pk},
        ),
        HistoryQuery(
            "by outcome (rejected)", {"outcome": "rejected"}, {"outcome__exact": "rejected"}
        ),
        HistoryQuery(
            f"by date range ({start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d}, "
            f"{in_month:,} retries)",
            {"date_from": f"{start:%Y-%m-%d}", "date_to": f"{end - timedelta(days=1):%Y-%m-%d}"},
            {
                "requested_at__gte": f"{start:%Y-%m-%d %H:%M:%S+00:00}",
                "requested_at__lt": f"{end:%Y-%m-%d %H:%M:%S+00:00}",
            },
        ),
        HistoryQuery("search by a source task GUID", {"q": guid}, {"q": guid}),
        HistoryQuery(
            f"deep page (older than row {middle:,} of {rows:,}: history's 'Older' cursor; "
            f"admin ?p={middle // 100 + 1})",
            {"before": str(Cursor(at, pk))},
            {"p": middle // 100 + 1},
        ),
    ]


def history(run: Run, queries: list[HistoryQuery]) -> None:
    supervisor = run.sessions["supervisor"]
    admin = run.sessions["admin"]
    section = f"History at scale ({run.rows:,} retries; supervisor vs superuser in the admin)"
    for query in queries:
        page = supervisor.get(run.url("/history/", **query.history), timeout=120)
        shown = len(HISTORY_ROW_RE.findall(page.text))
        ours = time_requests(
            supervisor,
            run.url("/history/", **query.history),
            repeats=run.plan.history,
            warmup=3,
            budget=run.plan.history_budget,
            floor=run.paired_floor,
        )
        theirs = time_requests(
            admin,
            run.url("/admin/kickouts/retryattempt/", **query.admin),
            repeats=run.plan.admin,
            warmup=1,
            budget=run.plan.admin_budget,
        )
        note = f"{shown} rows shown; {run.sql.get('history:' + query.name, '')}".rstrip("; ")
        if page.status_code != 200:
            note = f"answered {page.status_code}; " + note
        run.add(
            ratio_row(
                section, f"history: {query.name}", ours, run.floor, "floor", at_most=10, note=note
            )
        )
        admin_sql = run.sql.get("admin:" + query.name, "")
        run.add(
            ratio_row(
                section,
                f"history vs admin changelist: {query.name}",
                ours,
                theirs,
                "admin",
                below=True,
                note=f"admin {timing_figure(theirs)}; {admin_sql}".rstrip("; "),
            )
        )


def csv_export(run: Run) -> None:
    """Stream the whole history CSV, reading in chunks, while sampling the worker's memory."""
    supervisor = run.sessions["supervisor"]
    pid = run.server.worker_pid()
    reset = reset_peak_memory(pid)
    before = memory_kib(pid)
    received = 0
    lines = 0
    status = None
    error = ""
    started = time.perf_counter()
    with MemorySampler(pid) as sampler:
        try:
            with supervisor.get(run.url("/history.csv"), stream=True, timeout=300) as response:
                status = response.status_code
                for chunk in response.iter_content(chunk_size=64 * 1024):
                    received += len(chunk)
                    lines += chunk.count(b"\n")
        except requests.RequestException as exc:
            error = f"stream broke: {type(exc).__name__}"
    took = time.perf_counter() - started
    after = memory_kib(pid) if _alive(pid) else {}
    peak = max(sampler.peak_kib, after.get("VmHWM", 0) if reset else 0)
    growth = megabytes(peak - before["VmRSS"])
    rows = max(0, lines - 1)
    complete = status == 200 and rows == run.rows and not error
    run.add(
        Row(
            "CSV export (/history.csv, everything, supervisor)",
            "peak memory growth of the gunicorn worker while streaming",
            f"+{growth:.1f} MB (RSS {megabytes(before['VmRSS']):.1f} → peak "
            f"{megabytes(peak):.1f} MB)",
            target="< 50 MB",
            result="PASS" if growth < 50 and complete else "MISS",
            note=f"{rows:,} of {run.rows:,} rows, {received / 1e6:.1f} MB received in "
            f"{took:.1f} s ({rows / took if took else 0:,.0f} rows/s)"
            + (f"; HTTP {status}" if status != 200 else "")
            + (f"; {error}" if error else "")
            + ("" if reset else "; peak sampled every 20 ms (clear_refs not allowed)"),
        )
    )
    if not _alive(pid):
        run.notes.append(
            f"The worker serving the CSV (pid {pid}) died during the export; gunicorn's log "
            f"{run.server.log_path} says why (a sync worker is killed after --timeout)."
        )


def _alive(pid: int) -> bool:
    try:
        memory_kib(pid)
    except OSError:
        return False
    return True


def worker_memory(run: Run) -> None:
    pid = run.server.worker_pid()
    rss = megabytes(memory_kib(pid)["VmRSS"])
    run.add(
        Row(
            "Memory",
            f"VmRSS of the app worker after all the benchmarks above ({run.server.description})",
            f"{rss:.1f} MB",
            target="< 150 MB",
            result="PASS" if rss < 150 else "MISS",
        )
    )


# --- Many viewers of one running task ----------------------------------------------------------


def many_viewers(run: Run, server: Gunicorn, interval: float) -> None:
    """`viewers` threads poll one retry's status panel as htmx would, for `watch_seconds`."""
    from kickouts.models import RetryAttempt

    pk = RetryAttempt.objects.get(new_task_guid=RUNNING_TASK_GUID).pk
    cookies = {
        name: run.sessions[name].cookies.get_dict() for name in ("supervisor", "supervisor2")
    }
    watch_started = f"{time.time():.0f}"
    url = f"{server.url}/retries/{pk}/status/?started={watch_started}&failures=0"
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    duration = run.plan.watch_seconds
    begin_seq = log_seq(run.sandbox)
    begin = time.monotonic()
    stop_at = begin + duration

    def viewer(number: int) -> None:
        session = requests.Session()
        session.cookies.update(cookies["supervisor" if number % 2 else "supervisor2"])
        # Viewers opened the page at different moments within one interval.
        time.sleep(interval * number / run.plan.viewers)
        while time.monotonic() < stop_at:
            sent = time.perf_counter()
            try:
                response = session.get(url, headers=HX, timeout=30)
                status = response.status_code
            except requests.RequestException:
                status = 0
            took = time.perf_counter() - sent
            with lock:
                results.append((status, took))
            if status == 286:
                return
            # htmx's `load delay:3s`: the next poll 3 s after this answer was swapped in.
            time.sleep(interval)

    threads = [threading.Thread(target=viewer, args=(n,)) for n in range(run.plan.viewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - begin
    entries = [
        e
        for e in upstream_since(run.sandbox, begin_seq)
        if e["endpoint"] == "task_get" and RUNNING_TASK_GUID in e["path"]
    ]
    other = [e for e in upstream_since(run.sandbox, begin_seq) if e not in entries]
    times = sorted(datetime.fromisoformat(e["time"]).timestamp() for e in entries)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Fetches within the watch window proper (the last polls may run past it by one answer).
    first = times[0] if times else 0.0
    in_window = sum(1 for t in times if t < first + duration)
    per_interval = in_window / (duration / interval)
    served = len(results)
    failed = sum(1 for status, _ in results if status not in (200, 286))
    latencies = [took for _, took in results]
    p95 = sorted(latencies)[max(0, int(0.95 * len(latencies)) - 1)] if latencies else 0.0
    ok = per_interval <= 1.0 and (not gaps or min(gaps) >= 0.95 * interval) and not failed
    run.add(
        Row(
            "Upstream economy",
            f"{run.plan.viewers} viewers polling one running task every {interval:g} s for "
            f"{duration:g} s ({server.description}, Redis cache): status requests per interval",
            f"{per_interval:.2f} ({in_window} in {duration / interval:g} intervals; "
            f"shortest gap {min(gaps) if gaps else 0:.2f} s)",
            target="1",
            result="PASS" if ok else "MISS",
            note=f"{served} panel requests in {elapsed:.0f} s, {failed} failed, median "
            f"{ms(statistics.median(latencies) if latencies else 0)}, p95 {ms(p95)} under load"
            + (f"; other upstream requests: {len(other)}" if other else ""),
        )
    )
    sizes = [megabytes(memory_kib(pid)["VmRSS"]) for pid in server.worker_pids()]
    if sizes:
        run.notes.append(
            f"Workers of the {server.description} server after the viewers: VmRSS "
            + ", ".join(f"{size:.0f}" for size in sizes)
            + " MB."
        )


# --- Where the time goes ------------------------------------------------------------------------


def sql_profiles(run: Run, queries: list[HistoryQuery]) -> None:
    """Where a page's time goes: the same view run in this process, its SQL timed apart.

    Django's test client (no HTTP, no gunicorn) with a wrapper around every query and around
    the EnergyCAP client's requests; what is neither is Python: the view, forms and templates.
    """
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from kickouts import energycap
    from kickouts.models import RetryAttempt

    users = get_user_model().objects
    clients = {}
    for name in (data.SUPERVISOR, data.CLERK, data.ADMIN):
        client = Client()
        client.force_login(users.get(username=name))
        clients[name] = client

    upstream = _UpstreamTimer(energycap.client().session)

    def profile(key: str, who: str, path: str, params: dict, *, repeats: int = 5, **headers):
        client = clients[who]
        client.get(path, params, headers=headers)  # warm: caches, templates, connections
        totals, sql_times, counts, waits = [], [], [], []
        for _ in range(repeats):
            timer = _QueryTimer()
            upstream.seconds = 0.0
            with connection.execute_wrapper(timer):
                begin = time.perf_counter()
                client.get(path, params, headers=headers)
                totals.append(time.perf_counter() - begin)
            sql_times.append(timer.seconds)
            counts.append(timer.count)
            waits.append(upstream.seconds)
        total, sql = statistics.median(totals), statistics.median(sql_times)
        wait = statistics.median(waits)
        waiting = f", waiting for EnergyCAP (the sandbox) {ms(wait)}" if wait else ""
        run.sql[key] = (
            f"in-process {ms(total)}: SQL {ms(sql)} in {max(counts)} queries{waiting}, "
            f"Python {ms(max(0.0, total - sql - wait))}"
        )

    for query in queries:
        profile("history:" + query.name, data.SUPERVISOR, "/history/", query.history)
        profile(
            "admin:" + query.name,
            data.ADMIN,
            "/admin/kickouts/retryattempt/",
            query.admin,
            repeats=2,
        )
    pk = RetryAttempt.objects.get(new_task_guid=RUNNING_TASK_GUID).pk
    profile("panel", data.SUPERVISOR, f"/retries/{pk}/status/", {"failures": 0}, **HX)
    profile("task_list", data.CLERK, "/", {"period": 90, "per_page": 250})
    profile("task_page", data.CLERK, f"/tasks/{API_USER_KICKOUT_TASK_GUID}/", {})


class _UpstreamTimer:
    """Adds up the time this process's EnergyCAP client waits for answers (and reads them)."""

    def __init__(self, session) -> None:
        self.seconds = 0.0
        self._request = session.request
        session.request = self

    def __call__(self, *args, **kwargs):
        begin = time.perf_counter()
        try:
            return self._request(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - begin


class _QueryTimer:
    """A `connection.execute_wrapper` that adds up the time spent in the database."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        begin = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - begin
            self.count += 1
