"""What the benchmark drives over HTTP on 127.0.0.1: gunicorn, signed-in browsers, forms read
from the HTML the dashboard serves (so the benchmark follows the templates), timings."""

from __future__ import annotations

import contextlib
import math
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import requests

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "bench" / "out"
TIMEOUT = 300
HX = {"HX-Request": "true"}
SANDBOX_KEY = "bench-sandbox-key"


class Gunicorn:
    """`gunicorn dashboard.wsgi` as in the README's Operations section, on a free port."""

    def __init__(self, env: dict[str, str], workers: int, threads: int) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        with socket.socket() as sock:  # a free port
            sock.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.description = f"gunicorn {workers} gthread workers × {threads} threads"
        command = f"dashboard.wsgi --bind {self.url[7:]} --workers {workers} --threads {threads}"
        # No control socket in ~/.gunicorn, which other gunicorns on the machine share.
        command += " --worker-class gthread --timeout 120 --no-control-socket"
        with (LOGS / "gunicorn.log").open("w") as log:
            gunicorn = str(Path(sys.executable).with_name("gunicorn"))
            self.process = subprocess.Popen(  # noqa: S603 - our own venv's gunicorn
                [gunicorn, *command.split()], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                requests.get(self.url + "/health/live/", timeout=2).raise_for_status()
                while len(self.worker_pids()) < workers:
                    time.sleep(0.1)
                return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not start; see bench/out/gunicorn.log")

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def stop(self) -> None:
        self.process.terminate()  # gunicorn's graceful shutdown
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextlib.contextmanager
def peak_growth(pids: list[int]):
    """Samples the workers' resident memory every 20 ms; yields a dict that holds, on leaving,
    the largest rise of one worker in "KiB"."""

    def rss_kib(pid: int) -> int:
        return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])

    start = {pid: rss_kib(pid) for pid in pids}
    peak, stop, result = dict(start), threading.Event(), dict[str, int]()

    def sample() -> None:
        while not stop.wait(0.02):
            peak.update({pid: max(kib, rss_kib(pid)) for pid, kib in peak.items()})

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["KiB"] = max(peak[pid] - start[pid] for pid in pids)


@dataclass
class Form:
    url: str
    fields: dict[str, str]
    buttons: dict[str, tuple[str, str | None]]  # button value -> (name, its own URL)


class _Forms(HTMLParser):
    """The forms of a page (or an htmx fragment) as a browser would submit them (hidden and
    text inputs, checked boxes; empty text areas and selects are left to their defaults)."""

    def __init__(self, page_url: str) -> None:
        super().__init__()
        self.page_url = page_url
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form":
            target = a.get("hx-post") or a.get("action") or self.page_url
            self.forms.append(Form(urljoin(self.page_url, target), {}, {}))
        elif self.forms and tag == "button" and a.get("name"):
            target = a.get("hx-post") or a.get("formaction")
            url = urljoin(self.page_url, target) if target else None
            self.forms[-1].buttons[a.get("value", "")] = (a["name"], url)
        elif self.forms and tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind not in ("radio", "checkbox", "submit") or "checked" in a:
                self.forms[-1].fields[a["name"]] = a.get("value", "")


def forms(html: str, page_url: str) -> list[Form]:
    parser = _Forms(page_url)
    parser.feed(html)
    return parser.forms


def form_with_button(html: str, page_url: str, value: str) -> Form:
    found = [form for form in forms(html, page_url) if value in form.buttons]
    if found:
        return found[0]
    raise RuntimeError(f"no form with a {value!r} button on {page_url}")


def submit(session: requests.Session, form: Form, button: str, **fields: str):
    """POST the form as htmx would after a click on `button` (redirects not followed)."""
    name, own_url = form.buttons[button]
    data = {**form.fields, **fields, name: button}
    headers = {**HX, "X-CSRFToken": session.cookies.get("csrftoken") or ""}
    return session.post(
        own_url or form.url, data=data, headers=headers, allow_redirects=False, timeout=TIMEOUT
    )


def signed_in(base_url: str, username: str, password: str) -> requests.Session:
    """A browser signed in through the real login form."""
    session = requests.Session()
    page = session.get(base_url + "/accounts/login/", timeout=TIMEOUT)
    form = forms(page.text, page.url)[0]
    data = {**form.fields, "username": username, "password": password}
    answer = session.post(form.url, data=data, allow_redirects=False, timeout=TIMEOUT)
    if answer.status_code != 302:
        raise RuntimeError(f"signing in as {username} answered {answer.status_code}")
    return session


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def p95(self) -> float:
        """Nearest rank: the maximum when there are fewer than 20 samples."""
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else math.nan


def timed(timing: Timing, send, ok=(200,)) -> requests.Response | None:
    """Time one request, body included; a refused status or a broken connection is a failure."""
    begin = time.perf_counter()
    try:
        response = send()
        response.content  # noqa: B018 - read the whole body inside the timing
        problem = None if response.status_code in ok else f"HTTP {response.status_code}"
    except requests.RequestException as exc:
        response, problem = None, type(exc).__name__
    # list.append is atomic: threads may time into the same Timing.
    timing.samples.append(time.perf_counter() - begin)
    if problem:
        timing.failures.append(problem)
    return None if problem else response
