"""Timing, statistics and signed-in HTTP clients for the benchmarks.

Requests are sequential, from one `requests.Session` per user (gunicorn's sync worker closes
every connection, so each request includes its TCP connect, as the floor's does). A timing is
the wall time from sending the request to having read the whole body.
"""

from __future__ import annotations

import math
import re
import statistics
import threading
import time
from dataclasses import dataclass, field

import requests

from .server import memory_kib

CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
TIMEOUT = 120


@dataclass
class Timing:
    """Seconds per request of one benchmark, after its warm-up."""

    samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    body_bytes: int = 0
    # The floor, sampled alternately with this benchmark: both see the same machine load.
    reference: Timing | None = None

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def p95(self) -> float:
        """Nearest-rank 95th percentile (the maximum when there are fewer than 20 samples)."""
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    def merged(self, other: Timing) -> Timing:
        return Timing(self.samples + other.samples, self.errors + other.errors, self.body_bytes)


def signed_in(base_url: str, username: str, password: str) -> requests.Session:
    """A session signed in through the real login form (CSRF cookie and token included)."""
    session = requests.Session()
    page = session.get(base_url + "/accounts/login/", timeout=TIMEOUT)
    page.raise_for_status()
    match = CSRF_RE.search(page.text)
    if not match:
        raise RuntimeError("the login page has no CSRF token")
    answer = session.post(
        base_url + "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": match[1]},
        headers={"Referer": base_url + "/accounts/login/"},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    if answer.status_code != 302:
        raise RuntimeError(f"signing in as {username} answered {answer.status_code}")
    return session


def time_requests(
    session: requests.Session,
    urls: list[str] | str,
    *,
    repeats: int,
    warmup: int,
    budget: float,
    min_repeats: int = 5,
    headers: dict[str, str] | None = None,
    expect: tuple[int, ...] = (200,),
    floor: tuple[requests.Session, str] | None = None,
) -> Timing:
    """GET each URL in turn (cycling) `warmup` times untimed, then up to `repeats` times timed.

    Stops early after `budget` seconds of timed requests once `min_repeats` are in, so a slow
    page (the admin on a million rows) cannot stretch the whole run. With `floor`, each timed
    request follows one timed request of the floor, kept in `reference`.
    """
    if isinstance(urls, str):
        urls = [urls]
    timing = Timing(reference=Timing() if floor else None)
    for index in range(warmup):
        session.get(urls[index % len(urls)], headers=headers, timeout=TIMEOUT).close()
    started = time.monotonic()
    for index in range(warmup, warmup + repeats):
        url = urls[index % len(urls)]
        if floor is not None and timing.reference is not None:
            floor_session, floor_url = floor
            begin = time.perf_counter()
            floor_session.get(floor_url, timeout=TIMEOUT).close()
            timing.reference.samples.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        response = session.get(url, headers=headers, timeout=TIMEOUT)
        body = response.content
        elapsed = time.perf_counter() - begin
        if response.status_code not in expect:
            timing.errors.append(f"{response.status_code} from {url}")
        timing.samples.append(elapsed)
        timing.body_bytes = len(body)
        if timing.count >= min_repeats and time.monotonic() - started > budget:
            break
    return timing


class MemorySampler:
    """Samples a process's VmRSS every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, memory_kib(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            self._stop.wait(self.interval)


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "–"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def megabytes(kib: float) -> float:
    """KiB (as /proc reports) to MB of 1,000,000 bytes, the stricter reading of a MB target."""
    return kib * 1024 / 1_000_000
