"""What table cells show: moments, status badges, bill counts and people (kickouts_tags)."""

from __future__ import annotations

from datetime import UTC

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString


def local_time(value, empty: str = "—") -> SafeString:
    """A `<time>` carrying UTC, showing the server's zone until dashboard.js localises it."""
    if not value:
        return format_html('<span class="muted">{}</span>', empty)
    utc = value.astimezone(UTC)
    # The server's zone (TIME_ZONE), which the footer names; nothing activates another.
    local = value.astimezone(timezone.get_default_timezone())
    return format_html(
        '<time datetime="{}" data-local title="{} UTC">{}</time>',
        f"{utc:%Y-%m-%dT%H:%M:%SZ}",
        f"{utc:%Y-%m-%d %H:%M:%S}",
        f"{local:%Y-%m-%d %H:%M} {local.tzname()}",
    )


def status_badge(task) -> SafeString:
    """A task's status as a badge: words, with a CSS key for the colour (`Task.status_key`)."""
    return format_html(
        '<span class="badge badge-{}">{}</span>', task.status_key, task.status or "(no status)"
    )


def bill_counts(task) -> str:
    """A bill import's "imported · analyzing · unresolved flags", a dash for what it lacks."""
    return " · ".join(
        "–" if count is None else str(count)
        for count in (task.current_success_count, task.analyzing_count, task.unresolved_flag_count)
    )


# Who made a change the dashboard made by itself (a failed re-import reopening its source).
DASHBOARD = "the dashboard"


def person(user) -> str:
    """Who did something: a user's full name, else their login; "the dashboard" for none."""
    if not user:
        return DASHBOARD
    return user.get_full_name() or user.get_username()
