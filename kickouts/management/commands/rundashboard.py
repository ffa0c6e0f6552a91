import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from kickouts.roles import AP_STAFF, SUPERVISORS
from kickouts.sandbox.process import start_sandbox

# Demo accounts exist only in sandbox mode: the sandbox holds no real bills.
DEMO_USERS = [
    ("clerk", "Carla Clerk", AP_STAFF),
    ("supervisor", "Sam Supervisor", SUPERVISORS),
    ("viewer", "Vic Viewer", None),
]
DEMO_PASSWORD = "kickouts-demo"  # noqa: S105 - sandbox demo accounts only
PROJECT_ROOT = Path(__file__).resolve().parents[3]
# A worker told to stop finishes its current step first; one step waits at most for
# one EnergyCAP answer (ENERGYCAP_READ_TIMEOUT).
WORKER_STOP_SECONDS = 30


def start_worker(addrport: str) -> subprocess.Popen:
    """One `manage.py db_worker` beside the dashboard, in its own process group.

    Its own group, so that Ctrl-C reaches only this command, which then stops the
    worker gracefully (SIGTERM) rather than twice (a second signal kills a running task).
    """
    return subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--no-reload", "--interval", "1"],
        cwd=PROJECT_ROOT,
        # Links in its emails point at this dashboard unless DASHBOARD_URL says otherwise.
        env={"DASHBOARD_URL": f"http://{addrport}", **os.environ},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


class Command(BaseCommand):
    help = (
        "Start everything for local use: migrations, the EnergyCAP sandbox (when "
        "ENERGYCAP_BASE_URL is unset), demo users, a background worker (db_worker), "
        "and the dashboard on 127.0.0.1:8000."
    )

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--task-seconds", type=float, default=20.0)

    def handle(self, *args, addrport, task_seconds, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        sandbox = None
        if settings.ENERGYCAP_USES_SANDBOX:
            try:
                sandbox = start_sandbox(
                    port=settings.ENERGYCAP_SANDBOX_PORT,
                    api_key=settings.ENERGYCAP_API_KEY,
                    task_seconds=task_seconds,
                    python=sys.executable,
                )
            except Exception as exc:  # noqa: BLE001 - say why, plainly
                raise CommandError(
                    f"The EnergyCAP sandbox did not start on port "
                    f"{settings.ENERGYCAP_SANDBOX_PORT}: {exc}. Is another copy running? "
                    f"Set ENERGYCAP_SANDBOX_PORT to use another port."
                ) from None
            self.stdout.write(f"EnergyCAP sandbox running at {sandbox.url}.")
            self._demo_users()
        else:
            self.stdout.write(f"Using EnergyCAP at {settings.ENERGYCAP_BASE_URL}.")
        worker = start_worker(addrport)
        self.stdout.write(f"Background worker running (pid {worker.pid}).")
        self.stdout.write(f"Dashboard: http://{addrport}/  (Ctrl-C stops everything)")
        # Stop the worker and the sandbox with the dashboard, on Ctrl-C and on a plain
        # `kill` too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            os.environ.setdefault("DJANGO_RUNSERVER_HIDE_WARNING", "true")
            call_command("runserver", addrport, use_reloader=False)
        finally:
            stop_worker(worker)
            if sandbox is not None:
                sandbox.stop()

    def _demo_users(self):
        User = get_user_model()
        self.stdout.write("Demo users (sandbox only):")
        for username, full_name, group in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.first_name, _, user.last_name = full_name.partition(" ")
            # The worker's emails to them are printed in this terminal (console backend).
            user.email = f"{username}@example.com"
            # A new hash on every start would sign everyone out of the last run's sessions.
            if not user.check_password(DEMO_PASSWORD):
                user.set_password(DEMO_PASSWORD)
            user.save()
            user.groups.set([Group.objects.get(name=group)] if group else [])
            role = group or "no role"
            self.stdout.write(f"  {username:<11} password {DEMO_PASSWORD}   ({role})")
