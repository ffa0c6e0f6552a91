"""Start the sandbox as a child process and learn its URL.

The sandbox runs in its own process (not a thread of the caller) so that its state is shared by
every dashboard process and survives a test's Django set-up and tear-down.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from . import API_KEY_VARIABLE

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
LISTENING_PREFIX = "EnergyCAP sandbox listening on "
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class SandboxStartError(RuntimeError):
    """The sandbox process did not say it was listening; the message carries its stderr."""


class SandboxProcess:
    """A running sandbox child process. Stop it with ``stop()`` or use it as a context."""

    def __init__(self, process: subprocess.Popen[str], url: str, stderr_file: IO[str]) -> None:
        self.process = process
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self._stderr_file = stderr_file

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Terminate (SIGTERM: a clean exit), and kill if it has not gone after 5 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        if not self._stderr_file.closed:
            self._stderr_file.close()
            Path(self._stderr_file.name).unlink(missing_ok=True)

    def stderr_text(self) -> str:
        """What the sandbox has written to stderr so far (tracebacks of its own bugs)."""
        self._stderr_file.flush()
        return Path(self._stderr_file.name).read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SandboxProcess pid={self.pid} url={self.url}>"


def start_sandbox(
    *,
    port: int = 0,
    api_key: str = "sandbox-key",
    task_seconds: float = 20.0,
    seed: int = 1,
    latency: float = 0.0,
    python: str = sys.executable,
    host: str = "127.0.0.1",
) -> SandboxProcess:
    command = [
        python,
        "-m",
        "kickouts.sandbox",
        "--host",
        host,
        "--port",
        str(port),
        "--task-seconds",
        str(task_seconds),
        "--seed",
        str(seed),
        "--latency",
        str(latency),
        # The sandbox exits by itself if this process dies without stopping it.
        "--parent-pid",
        str(os.getpid()),
    ]
    # stderr goes to a file, not a pipe nobody reads: a chatty child would block on a full pipe.
    stderr_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
        mode="w+", prefix="energycap-sandbox-", suffix=".log", delete=False, encoding="utf-8"
    )
    # The key travels in the environment, not argv, where `ps` would show it to everyone.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", API_KEY_VARIABLE: api_key}
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=_read_until_listening, args=(process.stdout, lines), daemon=True
    ).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.05)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if line.startswith(LISTENING_PREFIX):
            return SandboxProcess(process, line[len(LISTENING_PREFIX) :].strip(), stderr_file)
        if not line:
            break  # end of output: the process is exiting
    if process.poll() is None:
        process.kill()
    process.wait()
    stderr_file.flush()
    stderr = Path(stderr_file.name).read_text(encoding="utf-8", errors="replace")
    stderr_file.close()
    Path(stderr_file.name).unlink(missing_ok=True)
    raise SandboxStartError(
        f"The EnergyCAP sandbox did not start (exit code {process.returncode}): "
        f"{stderr.strip() or 'no output on stderr'}"
    )


def _read_until_listening(stream: IO[str], lines: queue.Queue[str]) -> None:
    # Stops reading at the "listening" line; the sandbox prints nothing after it.
    while True:
        line = stream.readline()
        lines.put(line)
        if not line or line.startswith(LISTENING_PREFIX):
            return
