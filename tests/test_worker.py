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
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from kickouts import follow_up
from kickouts.follow_up_models import FollowState, FollowUp
from kickouts.models import Outcome, RetryAttempt
from kickouts.sandbox.state import KICKOUT_TASK_GUID

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
        self.worker_id = worker_id
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

    def start(worker_id: str = "worker-1", **extra_env: str) -> Worker:
        worker = Worker({**env, **extra_env}, worker_id)
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


def follow_of(attempt: RetryAttempt) -> FollowUp | None:
    return FollowUp.objects.filter(pk=attempt.pk).first()


def sweeps_run():
    """The sweeps the workers ran (or are running), oldest first."""
    return DBTaskResult.objects.filter(task_path="kickouts.follow_up.follow_due").exclude(
        status="READY"
    )


def gets_of(sandbox, guid: str) -> list[dict]:
    return [e for e in sandbox.log("task_get") if e["path"].lower().endswith(guid)]


def running_retry(user, sandbox, *, started=None, **fields) -> RetryAttempt:
    """A submitted retry whose new task runs in the sandbox until the test ends it, followed
    from `started` (now)."""
    new_task = sandbox.add_task(end_date=None, batch_id=None)
    values = {"source_task_id": 47223, "answered_at": started or timezone.now(), **fields}
    attempt = make_retry(user, new_task_guid=new_task["taskGUId"].lower(), **values)
    follow_up.start(attempt, now=started)
    return attempt


# Short time budgets for the worker, so a claim a killed worker left runs out within seconds:
# one GET try with a 1 s read timeout, a 1 s email timeout (kickouts/follow_up.py's leases).
QUICK = {
    "ENERGYCAP_READ_TIMEOUT": "1",
    "ENERGYCAP_CONNECT_TIMEOUT": "0.5",
    "ENERGYCAP_GET_ATTEMPTS": "1",
    "ENERGYCAP_MAX_RETRY_AFTER": "0",
    "EMAIL_TIMEOUT": "1",
}


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
    assert follow_of(attempt).state == FollowState.FOLLOWING
    worker = start_worker()

    follow = wait_for(
        lambda: FollowUp.objects.filter(pk=attempt.pk, state=FollowState.ENDED).first(),
        "the retry to end and be reported",
        [worker],
    )
    assert follow.finished
    assert follow.status == "Completed"
    assert follow.end_date is not None
    assert follow.succeeded_at is not None
    assert follow.checked_at == follow.succeeded_at
    wait_for(lambda: sent_emails(mail_dir), "the email", [worker])
    time.sleep(1.5)  # time for a second email, if one were coming
    [message] = sent_emails(mail_dir)
    assert message["To"] == "carla@example.com"
    attempt.refresh_from_db()
    assert message["Subject"] == f"Retry of {attempt.source_label}: Completed"
    body = body_of(message)
    assert "Status: Completed" in body
    assert f"New import: Import {attempt.new_task_id}" in body
    assert f"{DASHBOARD_URL}/retries/{attempt.pk}/" in body
    assert follow.notification == "Emailed to carla@example.com."
    # Nobody watched: every status request came from the worker, about one per second, and
    # the ended task was asked about once at its end (the comparison reads that reading).
    gets = gets_of(sandbox, attempt.new_task_guid)
    elapsed = (follow.checked_at - follow.started_at).total_seconds()
    assert 1 <= len(gets) <= elapsed + 2
    assert not sweeps_run().filter(status="FAILED").exists()


def test_a_worker_killed_while_asking_is_followed_again_within_two_intervals_of_a_restart(
    clerk, sandbox, start_worker, mail_dir
):
    """kill -9 while a sweep waits for EnergyCAP: a restarted worker asks again within two
    polling intervals, and the killed sweep's queue row is not needed for it."""
    clerk.email = "carla@example.com"
    clerk.save()
    attempt = running_retry(clerk, sandbox)
    worker = start_worker("worker-1")
    wait_for(lambda: follow_of(attempt).succeeded_at, "a first follow-up", [worker])
    # The next ask hangs for 3 s: kill the worker while it waits.
    sandbox.fault("task_get", latency=3)
    asked = len(gets_of(sandbox, attempt.new_task_guid))
    wait_for(
        lambda: len(gets_of(sandbox, attempt.new_task_guid)) > asked,
        "a sweep asking EnergyCAP",
        [worker],
    )
    time.sleep(0.3)
    worker.kill()
    sandbox.clear_faults()
    killed_at = timezone.now()
    assert sweeps_run().filter(status="RUNNING").count() == 1  # died with it

    restarted = start_worker("worker-2")  # another worker: no id of the dead one is needed
    started = restarted.wait_until_started()
    wait_for(
        lambda: FollowUp.objects.filter(pk=attempt.pk, succeeded_at__gt=killed_at).exists(),
        "a follow-up after the restart",
        [restarted],
    )
    assert time.monotonic() - started <= 2 * 1.0 + 0.5  # two polling intervals (and a bit)

    sandbox.update_task(attempt.new_task_guid, status="Completed with kickouts")
    wait_for(
        lambda: FollowUp.objects.filter(pk=attempt.pk, state="ended").exists(),
        "the end",
        [restarted],
    )
    wait_for(lambda: sent_emails(mail_dir), "the email", [restarted])
    time.sleep(1)
    [message] = sent_emails(mail_dir)
    assert message["Subject"] == "Retry of Import 47223: Completed with kickouts"


def test_a_worker_killed_before_the_email_went_out_leaves_it_to_another_which_sends_it_once(
    clerk, sandbox, start_worker, mail_dir
):
    """kill -9 while a report compares the kickouts (its email not sent): once the report's
    claim runs out, another worker reports again and the email goes out once."""
    clerk.email = "carla@example.com"
    clerk.save()
    source = sandbox.add_task(kickout_messages=["Account not found"])["taskGUId"].lower()
    attempt = running_retry(clerk, sandbox, source_task_guid=source)
    worker = start_worker("worker-1", **QUICK)
    wait_for(lambda: follow_of(attempt).succeeded_at, "a first follow-up", [worker])
    # The comparison asks for the source's kickouts: they hang, and the worker is killed.
    sandbox.fault("kickout_summary", latency=5)
    sandbox.update_task(attempt.new_task_guid, status="Completed")
    wait_for(
        lambda: (
            FollowUp.objects.filter(pk=attempt.pk, state=FollowState.REPORTING)
            .exclude(due_at__lte=timezone.now())
            .exists()
            and sandbox.log("kickout_summary")
        ),
        "a report claimed and comparing",
        [worker],
    )
    worker.kill()
    sandbox.clear_faults()
    assert sent_emails(mail_dir) == []
    assert follow_of(attempt).notified_at is None

    restarted = start_worker("worker-2", **QUICK)
    follow = wait_for(
        lambda: FollowUp.objects.filter(pk=attempt.pk, state=FollowState.ENDED).first(),
        "the report, again",
        [restarted],
        timeout=60,
    )
    time.sleep(1)
    [message] = sent_emails(mail_dir)
    assert message["To"] == "carla@example.com"
    assert follow.notification == "Emailed to carla@example.com."
    assert attempt.comparison.state == "compared"


def test_energycap_down_while_following_backs_off_without_failing_and_records_its_last_success(
    clerk, sandbox, start_worker
):
    """503s while following: the worker waits longer each time, never fails, and recovers."""
    attempt = running_retry(clerk, sandbox)
    worker = start_worker()
    first = wait_for(lambda: follow_of(attempt).succeeded_at, "a first answer", [worker])
    # Three asks' worth of 503s (each ask tries three times).
    sandbox.fault("task_get", *[{"status": 503}] * 9)
    down = wait_for(
        lambda: FollowUp.objects.filter(pk=attempt.pk, failures__gte=2).first(),
        "two failed asks",
        [worker],
    )
    assert down.state == FollowState.FOLLOWING
    assert down.succeeded_at == first
    assert down.checked_at > first
    assert down.error.startswith("EnergyCAP reported an error (HTTP 503).")
    # Backing off: after two failures the next ask waits 4 intervals, not 1.
    assert (down.due_at - down.checked_at).total_seconds() >= 3.5

    sandbox.update_task(attempt.new_task_guid, status="Completed")
    ended = wait_for(
        lambda: FollowUp.objects.filter(pk=attempt.pk, state="ended").first(),
        "the end after EnergyCAP came back",
        [worker],
    )
    assert ended.failures == 0
    assert ended.error == ""
    assert ended.succeeded_at > first
    assert not sweeps_run().filter(status="FAILED").exists()


def test_two_workers_on_postgresql_never_ask_about_one_follow_up_at_once(
    clerk, sandbox, start_worker, mail_dir
):
    """Two workers and four stray sweeps: the asks about one task never overlap, both
    workers sweep, and one email goes out."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in make test's PostgreSQL pass")
    clerk.email = "carla@example.com"
    clerk.save()
    attempt = running_retry(clerk, sandbox)
    for _ in range(4):
        follow_up.follow_due.enqueue()  # strays: they find another sweep named, and end
    sandbox.fault("task_get", latency=0.3)
    workers = [start_worker("worker-1"), start_worker("worker-2")]
    wait_for(lambda: len(gets_of(sandbox, attempt.new_task_guid)) >= 6, "six asks", workers)
    sandbox.update_task(attempt.new_task_guid, status="Completed")
    wait_for(
        lambda: FollowUp.objects.filter(pk=attempt.pk, state="ended").exists(),
        "the end",
        workers,
    )
    wait_for(lambda: sent_emails(mail_dir), "the email", workers)
    time.sleep(2)

    gets = gets_of(sandbox, attempt.new_task_guid)
    times = [datetime.fromisoformat(e["time"]) for e in gets]
    # One ask at a time: each began after the one before had its (0.3 s late) answer.
    for earlier, later in zip(times, times[1:], strict=False):
        assert (later - earlier).total_seconds() >= 0.3
    ran = sweeps_run()
    assert {w for s in ran for w in s.worker_ids} == {"worker-1", "worker-2"}
    assert sum(s.return_value == "another sweep is scheduled" for s in ran) >= 4
    assert len(sent_emails(mail_dir)) == 1


def test_a_retry_followed_longer_than_the_maximum_stops_and_says_so(
    clerk, clerk_client, sandbox, start_worker
):
    """After FOLLOW_UP_MAX_SECONDS from the start of its follow-up, the sweep stops asking;
    the record and the page say why."""
    attempt = running_retry(clerk, sandbox, started=timezone.now() - timedelta(hours=25))
    worker = start_worker()
    stopped = wait_for(
        lambda: FollowUp.objects.filter(pk=attempt.pk, state="stopped").first(),
        "the follow-up to stop",
        [worker],
    )
    assert stopped.stopped_reason.startswith("Stopped following after 24 hours")
    page = clerk_client.get(f"/retries/{attempt.pk}/")
    assert "Stopped following after 24 hours" in page.content.decode()
