"""What table cells show, shared by the Django template tags and the Jinja2 row templates.

These run up to 250 times a page (the task list), so each is written for speed: the figures
behind each choice are in bench/results.md.
"""

from __future__ import annotations

import functools
import html
import re
from datetime import UTC

from django.urls import get_script_prefix, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from .converters import GuidConverter

GUID_RE = re.compile(GuidConverter.regex)
# Stand-ins that reverse() accepts and that no route's own text contains.
GUID_STAND_IN = "ffffffff-ffff-ffff-ffff-ffffffffffff"
PK_STAND_IN = "9876543210"


def task_url(guid, script_prefix: str | None = None) -> str:
    """`{% url 'task_detail' guid %}` for long tables: reverse() costs about 12 µs, 3 ms on a
    list of 250 tasks, so it runs once and each GUID takes the stand-in's place.

    `script_prefix`: get_script_prefix(), when the caller has it (reading it costs a few µs).
    """
    value = str(guid).lower()
    if not GUID_RE.fullmatch(value):
        return reverse("task_detail", args=[guid])  # raises NoReverseMatch, as {% url %} does
    if script_prefix is None:
        script_prefix = get_script_prefix()
    before, after = _around("task_detail", GUID_STAND_IN, script_prefix)
    return f"{before}{value}{after}"


def retry_url(pk, script_prefix: str | None = None) -> str:
    """`{% url 'retry_detail' pk %}` for long tables, as `task_url`."""
    if script_prefix is None:
        script_prefix = get_script_prefix()
    before, after = _around("retry_detail", PK_STAND_IN, script_prefix)
    return f"{before}{int(pk)}{after}"


@functools.cache
def _around(name: str, stand_in: str, script_prefix: str) -> tuple[str, str]:
    """What comes before and after the one argument of the URL `name` (per script prefix)."""
    before, found, after = reverse(name, args=[stand_in]).partition(stand_in)
    if not found:
        raise ValueError(f"the URL {name!r} does not hold its argument as given")
    return before, after


def local_time(value, empty: str = "—") -> SafeString:
    """A `<time>` carrying UTC, showing the server's zone until dashboard.js localises it."""
    if not value:
        return SafeString(f'<span class="muted">{html.escape(empty)}</span>')
    # The server's zone (TIME_ZONE), which the footer names; nothing activates another.
    return _local_time(value, timezone.get_default_timezone())


@functools.lru_cache(maxsize=4096)
def _local_time(value, zone) -> SafeString:
    """`local_time` of one moment in one zone, made once: the task list shows the same 500
    moments on every view, and even built from isoformat() (not format_html(), strftime(),
    mark_safe() or the per-request zone lookup) one took 5 µs. Equal moments are equal
    datetimes whatever their offset, and give the same text. Only the zone's name is text
    from elsewhere; it is escaped."""
    utc = value.astimezone(UTC).isoformat(timespec="seconds")[:19]  # 2026-01-02T03:04:05
    local = value.astimezone(zone)
    shown = local.isoformat(sep=" ", timespec="minutes")[:16]
    return SafeString(
        f'<time datetime="{utc}Z" data-local title="{utc[:10]} {utc[11:]} UTC">'
        f"{shown} {html.escape(local.tzname() or '')}</time>"
    )


def status_badge(task) -> SafeString:
    """A task's status as a badge: words, with a CSS key for the colour (`Task.status_key`)."""
    return _badge(task.status_key, task.status or "(no status)")


@functools.lru_cache(maxsize=256)
def _badge(key: str, words: str) -> SafeString:
    """The badge's HTML, made once per status (a handful; format_html took 10 µs a row)."""
    return format_html('<span class="badge badge-{}">{}</span>', key, words)


def bill_counts(task) -> str:
    """A bill import's "imported · analyzing · unresolved flags", a dash for what it lacks."""
    return " · ".join(
        "–" if count is None else str(count)
        for count in (task.current_success_count, task.analyzing_count, task.unresolved_flag_count)
    )


def truncate_chars(value, length: int) -> str:
    """Django's `truncatechars`, skipping its character-by-character walk (about 12 µs) for
    short ASCII text, as task notes and IDs mostly are (other text may need normalising)."""
    text = "" if value is None else str(value)
    if len(text) <= length and text.isascii():
        return text
    return Truncator(text).chars(length)
