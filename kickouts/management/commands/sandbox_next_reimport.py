"""See each outcome of a re-import in the sandbox: spoil the answer to the NEXT one.

`python manage.py sandbox_next_reimport 502` (or `timeout`, `lost`, `refused`) tells the
running sandbox how to treat the next `POST …/kickout`; `make run` must be running (its
sandbox), and the next retry sent from the dashboard shows the outcome in the README's
table ("What each outcome means for the clerk").
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kickouts.sandbox.control import SandboxControl, SandboxControlError

# Seconds past the dashboard's read timeout that a "timeout" answer arrives.
LATE_BY = 5.0


@dataclass(frozen=True)
class Answer:
    """One way to spoil the next re-import's answer."""

    what: str  # what the dashboard gets instead of EnergyCAP's answer
    fault: dict  # the sandbox's fault; with "apply", it spoils the answer after the work

    def said(self, *, acts: bool) -> str:
        if "status" in self.fault and self.fault["status"] < 500:
            return f"{self.what}: rejected, nothing imported, try again at once"
        if acts:
            return (
                f"{self.what} after EnergyCAP started the import: outcome unknown (a supervisor "
                f"links the import it made)"
            )
        return (
            f"{self.what} before EnergyCAP did anything: outcome unknown (nothing was imported; "
            f"a supervisor records that)"
        )


def answers(read_timeout: float) -> dict[str, Answer]:
    return {
        "502": Answer("a gateway's 502 page", {"status": 502, "html": True, "apply": True}),
        "timeout": Answer(
            f"no answer within the {read_timeout:g} s read timeout",
            {"hang": read_timeout + LATE_BY, "apply": True},
        ),
        "lost": Answer("a connection closed with no answer", {"drop": True, "apply": True}),
        "refused": Answer("EnergyCAP's refusal (409)", {"status": 409}),
    }


class Command(BaseCommand):
    help = (
        "Make the sandbox's NEXT re-import answer 502, time out or lose its answer (each after "
        "starting the import, unless --before-acting), or be refused, to see what the "
        "dashboard makes of it."
    )

    def add_arguments(self, parser):
        parser.add_argument("answer", choices=list(answers(settings.ENERGYCAP_READ_TIMEOUT)))
        parser.add_argument(
            "--before-acting",
            action="store_true",
            help="Spoil the answer before EnergyCAP does anything: nothing is imported.",
        )

    def handle(self, *args, answer: str, before_acting: bool, **options):
        if not settings.ENERGYCAP_USES_SANDBOX:
            raise CommandError(
                "ENERGYCAP_BASE_URL is set: this only steers the built-in sandbox, never a real "
                "EnergyCAP."
            )
        chosen = answers(settings.ENERGYCAP_READ_TIMEOUT)[answer]
        fault = dict(chosen.fault)
        if before_acting:
            fault.pop("apply", None)
        control = SandboxControl(settings.ENERGYCAP_BASE_URL)
        try:
            control.fault("kickout_post", fault)
        except (SandboxControlError, OSError) as exc:
            raise CommandError(
                f"The sandbox at {settings.ENERGYCAP_BASE_URL} did not take the fault ({exc}). "
                f"Is `make run` running, with the same ENERGYCAP_SANDBOX_PORT?"
            ) from None
        said = chosen.said(acts=bool(fault.get("apply")))
        self.stdout.write(f"The next re-import sent to the sandbox gets {said}.")
