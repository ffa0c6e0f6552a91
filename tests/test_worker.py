"""Retries followed to their end by a real `manage.py db_worker`, with nobody watching.

Each test starts worker processes on the test database (SQLite in the first pass of `make
test`, PostgreSQL in the second) and the sandbox over real HTTP, and reads what they did
from the database, the sandbox's request log and the emails they wrote to files.
"""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from kickouts.models import FollowState, Outcome, RetryAttempt
from kickouts.sandbox.state import KICKOUT_TASK_GUID
from kickouts.tasks import follow_retry, notify_requester, start_following

from .factories import make_retry
from .retry_helpers import post_retry

pytestmark = pytest.mark.django_db(transaction=True)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_URL = "https://kickouts.example.com"
TIMEOUT = 40


def database_url() -> str:
    """The test database pytest-django made, as the worker's DATABASE_URL."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host = s["HOST"] or "127.0.0.1"
    return f"postgres://{s['USER'] or ''}{password}@{host}:{s['PORT'] or 5432}/{s['NAME']}"


class Worker:
    """One `manage.py db_worker` process; its output kept in a file for failures."""

    def __init__(self, env: dict[str, str], worker_id: str):
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            mode="w+", prefix="db-worker-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "db_worker",
                "--no-reload",
                "--no-startup-delay",
                "--interval",
                "0.2",
                "--worker-id",
                worker_id,
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def wait_until_started(self) -> float:
        """Wait for the worker's "Starting worker" line; the moment it came."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if "Starting worker" in self.output():
                return time.monotonic()
            assert self.process.poll() is None, self.output()
            time.sleep(0.05)
        raise AssertionError(f"the worker did not start:\n{self.output()}")

    def kill(self) -> None:
        """kill -9: no chance to finish anything."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


@pytest.fixture
def mail_dir(tmp_path) -> Path:
    path = tmp_path / "mail"
    path.mkdir()
    return path


@pytest.fixture
def start_worker(sandbox_process, mail_dir):
    """Start workers on the test database; all are stopped after the test."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "ENERGYCAP_BASE_URL": sandbox_process.url,
        "STATUS_POLL_SECONDS": "1",
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
        "DASHBOARD_URL": DASHBOARD_URL,
        "PYTHONUNBUFFERED": "1",
    }
    started: list[Worker] = []

    def start(worker_id: str = "worker-1") -> Worker:
        worker = Worker(env, worker_id)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def sent_emails(mail_dir: Path) -> list[email.message.Message]:
    """Every message the file backend wrote (it separates messages with a line of dashes)."""
    messages = []
    for path in sorted(mail_dir.iterdir()):
        for chunk in path.read_bytes().split(b"-" * 79):
            if chunk.strip():
                messages.append(email.message_from_bytes(chunk.strip()))
    return messages


def body_of(message: email.message.Message) -> str:
    return message.get_payload(decode=True).decode(message.get_content_charset() or "utf-8")


def wait_for(condition, what: str, workers=(), timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    logs = "\n".join(worker.output() for worker in workers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def follow_steps(retry_id: int):
    return DBTaskResult.objects.filter(
        task_path="kickouts.tasks.follow_retry", args_kwargs__args=[retry_id]
    )


def running_retry(user, sandbox, **fields) -> RetryAttempt:
    """A submitted retry whose new task runs in the sandbox until the test ends it."""
    new_task = sandbox.add_task(end_date=None, batch_id=None)
    values = {"source_task_id": 47223, "answered_at": timezone.now(), **fields}
    return make_retry(user, new_task_guid=new_task["taskGUId"].lower(), **values)


def test_a_retry_is_followed_to_its_end_with_no_page_open_and_the_clerk_emailed_once(
    clerk, clerk_client, sandbox, start_worker, mail_dir
):
    """Carla sends a retry and closes the page: the worker records the end and emails her."""
    clerk.email = "carla@example.com"
    clerk.save()
    sandbox.reset(task_seconds=3)
    sandbox.configure(next_outcomes=["Completed"])
    post_retry(
        clerk_client, KICKOUT_TASK_GUID, action="send", batch_mode="new self-contained batch"
    )
    attempt = RetryAttempt.objects.get()
    assert attempt.outcome == Outcome.SUBMITTED
    assert attempt.follow_state == FollowState.FOLLOWING
    worker = start_worker()

    attempt = wait_for(
        lambda: RetryAttempt.objects.filter(follow_state=FollowState.ENDED).first(),
        "the retry to end",
        [worker],
    )
    assert attempt.new_task_finished
    assert attempt.new_task_status == "Completed"
    assert attempt.new_task_end_date is not None
    assert attempt.follow_succeeded_at is not None
    assert attempt.follow_checked_at == attempt.follow_succeeded_at
    wait_for(lambda: sent_emails(mail_dir), "the email", [worker])
    time.sleep(1.5)  # time for a second email, if one were coming
    [message] = sent_emails(mail_dir)
    assert message["To"] == "carla@example.com"
    assert message["Subject"] == f"Retry of Bill Import {attempt.source_task_id}: Completed"
    body = body_of(message)
    assert "Status: Completed" in body
    assert f"{DASHBOARD_URL}/retries/{attempt.pk}/" in body
    attempt.refresh_from_db()
    assert attempt.notification == "Emailed to carla@example.com."
    # Nobody watched: every status request came from the worker, about one per second.
    gets = [e for e in sandbox.log("task_get") if e["path"].endswith(attempt.new_task_guid)]
    elapsed = (attempt.follow_checked_at - attempt.answered_at).total_seconds()
    assert 1 <= len(gets) <= elapsed + 2
    assert not follow_steps(attempt.pk).filter(status="FAILED").exists()


def test_a_worker_killed_mid_follow_and_restarted_follows_again_within_two_intervals(
    clerk, sandbox, start_worker, mail_dir
):
    """kill -9 while a step waits for EnergyCAP: the restarted worker picks the chain up."""
    clerk.email = "carla@example.com"
    clerk.save()
    attempt = running_retry(clerk, sandbox)
    start_following(attempt.pk)
    worker = start_worker("worker-1")
    wait_for(
        lambda: RetryAttempt.objects.get(pk=attempt.pk).follow_checked_at,
        "a first follow-up",
        [worker],
    )
    # The next ask hangs for 3 s: kill the worker while it waits.
    sandbox.fault("task_get", latency=3)
    wait_for(
        lambda: (
            follow_steps(attempt.pk).filter(status="RUNNING").exists()
            and RetryAttempt.objects.get(pk=attempt.pk).follow_busy_until
        ),
        "a step asking EnergyCAP",
        [worker],
    )
    time.sleep(0.3)
    worker.kill()
    sandbox.clear_faults()
    killed_at = timezone.now()
    assert follow_steps(attempt.pk).filter(status="RUNNING").count() == 1  # died with it

    restarted = start_worker("worker-1")
    started = restarted.wait_until_started()
    wait_for(
        lambda: (
            RetryAttempt.objects.filter(pk=attempt.pk, follow_checked_at__gt=killed_at)
            .exclude(follow_succeeded_at=None)
            .exists()
        ),
        "a follow-up after the restart",
        [restarted],
    )
    assert time.monotonic() - started <= 2 * 1.0 + 0.5  # two polling intervals (and a bit)

    sandbox.update_task(attempt.new_task_guid, status="Completed with kickouts")
    wait_for(
        lambda: RetryAttempt.objects.filter(pk=attempt.pk, follow_state="ended").exists(),
        "the end",
        [restarted],
    )
    wait_for(lambda: sent_emails(mail_dir), "the email", [restarted])
    [message] = sent_emails(mail_dir)
    assert message["Subject"] == "Retry of Bill Import 47223: Completed with kickouts"


def test_energycap_down_while_following_backs_off_without_failing_and_records_its_last_success(
    clerk, sandbox, start_worker
):
    """503s while following: the worker waits longer each time, never fails, and recovers."""
    attempt = running_retry(clerk, sandbox)
    start_following(attempt.pk)
    worker = start_worker()
    first = wait_for(
        lambda: RetryAttempt.objects.get(pk=attempt.pk).follow_succeeded_at,
        "a first answer",
        [worker],
    )
    # Three asks' worth of 503s (each ask tries three times).
    sandbox.fault("task_get", *[{"status": 503}] * 9)
    down = wait_for(
        lambda: RetryAttempt.objects.filter(pk=attempt.pk, follow_failures__gte=2).first(),
        "two failed asks",
        [worker],
    )
    assert down.follow_state == FollowState.FOLLOWING
    assert down.follow_succeeded_at == first
    assert down.follow_checked_at > first
    assert "503" in down.follow_error or down.follow_error
    # Backing off: after two failures the next ask waits 4 intervals, not 1.
    assert (down.follow_next_at - down.follow_checked_at).total_seconds() >= 3.5

    sandbox.update_task(attempt.new_task_guid, status="Completed")
    ended = wait_for(
        lambda: RetryAttempt.objects.filter(pk=attempt.pk, follow_state="ended").first(),
        "the end after EnergyCAP came back",
        [worker],
    )
    assert ended.follow_failures == 0
    assert ended.follow_error == ""
    assert ended.follow_succeeded_at > first
    assert not follow_steps(attempt.pk).filter(status="FAILED").exists()


def test_two_workers_on_postgresql_never_follow_one_retry_twice(
    clerk, sandbox, start_worker, mail_dir
):
    """Two workers and four stray steps for one retry: one chain asks, one email goes out."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in make test's PostgreSQL pass")
    clerk.email = "carla@example.com"
    clerk.save()
    attempt = running_retry(clerk, sandbox)
    start_following(attempt.pk)
    for _ in range(4):
        follow_retry.enqueue(attempt.pk)  # e.g. rescues from panels and refresh_retries
    workers = [start_worker("worker-1"), start_worker("worker-2")]
    wait_for(
        lambda: sum(str(s.return_value).startswith("asked") for s in follow_steps(attempt.pk)) >= 4,
        "four follow-ups",
        workers,
    )
    sandbox.update_task(attempt.new_task_guid, status="Completed")
    wait_for(
        lambda: RetryAttempt.objects.filter(pk=attempt.pk, follow_state="ended").exists(),
        "the end",
        workers,
    )
    notify_requester.enqueue(attempt.pk)  # a stray second notification loses the race
    wait_for(lambda: sent_emails(mail_dir), "the email", workers)
    time.sleep(2)

    steps = list(follow_steps(attempt.pk).exclude(status="READY"))
    asked = sorted(
        (s for s in steps if str(s.return_value).startswith("asked")), key=lambda s: s.started_at
    )
    assert len(asked) >= 3, "\n".join(
        f"{s.status} {s.return_value} {s.worker_ids} {s.enqueued_at:%S.%f} {s.run_after:%S.%f} "
        f"{s.started_at:%S.%f} {s.finished_at:%S.%f}"
        for s in sorted(steps, key=lambda s: s.started_at)
    )
    assert {w for s in steps for w in s.worker_ids} == {"worker-1", "worker-2"}
    # One follower: no two asks overlap in time, whichever worker ran them.
    for earlier, later in zip(asked, asked[1:], strict=False):
        assert earlier.finished_at <= later.started_at
    assert sum(s.return_value == "followed by another step" for s in steps) >= 4
    gets = [e for e in sandbox.log("task_get") if e["path"].endswith(attempt.new_task_guid)]
    assert len(gets) == len(asked)
    assert len(sent_emails(mail_dir)) == 1


def test_a_retry_followed_longer_than_the_maximum_stops_and_says_so(
    clerk, clerk_client, sandbox, start_worker
):
    """After FOLLOW_UP_MAX_SECONDS the follower stops; the record and the page say why."""
    attempt = running_retry(clerk, sandbox, answered_at=timezone.now() - timedelta(hours=25))
    start_following(attempt.pk)
    worker = start_worker()
    stopped = wait_for(
        lambda: RetryAttempt.objects.filter(pk=attempt.pk, follow_state="stopped").first(),
        "the follower to stop",
        [worker],
    )
    assert stopped.follow_stopped_reason.startswith("Stopped following after 24 hours")
    page = clerk_client.get(f"/retries/{attempt.pk}/")
    assert "Stopped following after 24 hours" in page.content.decode()
