"""Start and stop what the benchmarks talk to: gunicorn serving the dashboard, and the sandbox.

The dashboard runs exactly as in production (`gunicorn dashboard.wsgi`, DEBUG off, collected
static files served by whitenoise), with `DJANGO_SETTINGS_MODULE=bench.settings` so the
framework floor route exists in the same worker. Logs go to `bench/out/logs/`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from .data import OUT_DIR

LOG_DIR = OUT_DIR / "logs"
SANDBOX_KEY = "bench-sandbox-key"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_environment(
    *, database_url: str, sandbox_port: int, poll_seconds: float, redis_url: str = ""
) -> dict[str, str]:
    """Production settings, except plain HTTP on loopback and the sandbox as EnergyCAP."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENERGYCAP_")}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DEBUG="false",
        SECRET_KEY="bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        ENERGYCAP_API_KEY=SANDBOX_KEY,
        ENERGYCAP_SANDBOX_PORT=str(sandbox_port),
        DATABASE_URL=database_url,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        SECURE_HSTS_SECONDS="0",
        STATUS_POLL_SECONDS=f"{poll_seconds:g}",
        PYTHONUNBUFFERED="1",
    )
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


@dataclass
class Gunicorn:
    name: str
    process: subprocess.Popen
    url: str
    log_path: Path
    description: str

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in children.read_text().split()]
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                # The command may contain spaces; the fields after its ")" do not.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid:
                    pids.append(int(stat.parent.name))
        return sorted(pids)

    def worker_pid(self) -> int:
        pids = self.worker_pids()
        if len(pids) != 1:
            raise RuntimeError(f"{self.name}: expected one worker, found {pids}")
        return pids[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: gunicorn's graceful shutdown
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gunicorn(
    name: str,
    env: dict[str, str],
    *,
    workers: int = 1,
    worker_class: str = "sync",
    threads: int = 1,
    timeout: int = 60,
) -> Gunicorn:
    """gunicorn on a free loopback port; returns once /health/live/ answers."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = LOG_DIR / f"gunicorn-{name}.log"
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    command = [
        gunicorn,
        "dashboard.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--threads",
        str(threads),
        # The README's production value: also what a streamed CSV must finish within.
        "--timeout",
        str(timeout),
        # No control socket in ~/.gunicorn: other gunicorns (tests, a second server) use it.
        "--no-control-socket",
    ]
    log = log_path.open("w", encoding="utf-8")
    process = subprocess.Popen(  # noqa: S603 - our own venv's gunicorn
        command,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    threads_text = f", {threads} threads" if worker_class == "gthread" else ""
    server = Gunicorn(
        name,
        process,
        url,
        log_path,
        f"gunicorn {workers} {worker_class} worker{'s' if workers > 1 else ''}{threads_text}",
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn {name} exited; see {log_path}")
        try:
            if requests.get(url + "/health/live/", timeout=2).status_code == 200:
                # Every worker up, so memory readings find them all.
                while len(server.worker_pids()) < workers and time.monotonic() < deadline:
                    time.sleep(0.1)
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"gunicorn {name} did not answer within {START_TIMEOUT:.0f} s")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def reset_peak_memory(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
