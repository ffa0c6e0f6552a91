"""The results table: printed after a run and written to bench/results.md."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .measure import Timing, ms

RESULTS = Path(__file__).resolve().parent / "results.md"
COLUMNS = ("Benchmark", "Figure", "Reference (same run)", "Ratio", "Target", "Result")


@dataclass
class Row:
    section: str
    name: str
    figure: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    result: str = ""  # PASS, MISS, or empty when there is no target
    note: str = ""


def timing_figure(timing: Timing) -> str:
    return f"median {ms(timing.median)} · p95 {ms(timing.p95)} (n={timing.count})"


def ratio_row(
    section: str,
    name: str,
    timing: Timing,
    reference: Timing,
    reference_name: str,
    *,
    at_most: float | None = None,
    below: bool = False,
    note: str = "",
) -> Row:
    """A timing against a reference: PASS when the median ratio is within `at_most`
    (or under 1 with `below`) and no request failed. A floor sampled alternately with the
    timing (its `reference`) is preferred to the run's pooled floor."""
    if reference_name == "floor" and timing.reference is not None and timing.reference.count:
        reference = timing.reference
        reference_name = "floor (interleaved)"
    ratio = timing.median / reference.median if reference.median else math.nan
    target = ""
    result = ""
    if at_most is not None:
        target = f"≤ {at_most:g}× {reference_name.split()[0]}"
        result = "PASS" if ratio <= at_most else "MISS"
    elif below:
        target = f"< 1× {reference_name}"
        result = "PASS" if ratio < 1 else "MISS"
    if timing.errors:
        result = "MISS" if result else ""
        note = f"{len(timing.errors)} failed ({timing.errors[0]}); {note}".rstrip("; ")
    return Row(
        section,
        name,
        timing_figure(timing),
        f"{reference_name} {ms(reference.median)}",
        f"{ratio:.2f}×",
        target,
        result,
        note,
    )


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    import django

    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": cpu,
        "memory": memory,
        "Python": platform.python_version(),
        "Django": django.get_version(),
        "OS": platform.platform(),
    }


def _cells(row: Row) -> list[str]:
    name = row.name + (f" — {row.note}" if row.note else "")
    return [name, row.figure, row.reference, row.ratio, row.target, row.result]


def text_table(rows: list[Row]) -> str:
    """A Markdown table (readable as plain text too), one section heading per group."""
    lines = []
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines += ["", f"### {section}", ""]
            lines.append("| " + " | ".join(COLUMNS) + " |")
            lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        cells = [cell.replace("|", "\\|") for cell in _cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).strip()


def summary(rows: list[Row]) -> str:
    passed = sum(row.result == "PASS" for row in rows)
    missed = [row for row in rows if row.result == "MISS"]
    lines = [f"{passed} PASS, {len(missed)} MISS"]
    lines += [f"- MISS: {row.section.split(' (')[0]}: {row.name}" for row in missed]
    return "\n".join(lines)


def write_results(
    rows: list[Row], setup: dict[str, str], took: float, command: str, notes: list[str]
) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"The latest run of `{command}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"took {took / 60:.1f} minutes. Overwritten by every run; where a target is missed the "
        "table says MISS.",
        "",
        "## Machine and set-up",
        "",
    ]
    for key, value in {**machine(), **setup}.items():
        lines.append(f"- **{key}**: {value}")
    lines += ["", "## Results", "", text_table(rows), "", summary(rows), ""]
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- {note}" for note in notes]
        lines.append("")
    RESULTS.write_text("\n".join(lines), encoding="utf-8")
