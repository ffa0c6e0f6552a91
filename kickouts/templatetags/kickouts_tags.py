import json
from datetime import UTC

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


@register.filter
def pretty_json(value) -> str:
    """Indented JSON for showing a payload; the template escapes it."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


@register.filter
def used_by_text(form, field_name: str) -> str:
    return ", ".join(form.used_by(field_name))


@register.filter
def duration_words(seconds) -> str:
    """Elapsed time for people: "42 s", "3 min 5 s", "2 h 4 min"."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def settings_in_words(attempt) -> str:
    """The batch settings of a retry's payload, in words."""
    settings = (attempt.payload or {}).get("batchSettings", {})
    parts = []
    if "existingOpenBatchId" in settings:
        parts.append(f"into open batch #{settings['existingOpenBatchId']}")
    elif attempt.batch_mode == "use existing batch":
        parts.append("into the API user's only open batch")
    if "pendingBatchId" in settings:
        parts.append(f"into pending batch #{settings['pendingBatchId']}")
    if "newBatchCode" in settings:
        parts.append(f"batch code {settings['newBatchCode']}")
    elif attempt.batch_mode in {"new batch", "new self-contained batch"}:
        parts.append("batch code chosen by EnergyCAP")
    if "leaveExistingBatchesOpen" in settings:
        parts.append(
            "other open batches left open"
            if settings["leaveExistingBatchesOpen"]
            else "the API user's open batch closed first"
        )
    payload = attempt.payload or {}
    if payload.get("saveAsResolved"):
        parts.append("failed audits saved as resolved")
    return "; ".join(parts) or "no further settings"


@register.simple_tag
def local_time(value, empty: str = "—"):
    """A `<time>` carrying UTC, showing the server's zone until dashboard.js localises it.

    A tag, not an include: pages show up to 250 times, and an include with three date
    filters cost about 0.2 ms each (bench/results.md).
    """
    if not value:
        return format_html('<span class="muted">{}</span>', empty)
    utc = value.astimezone(UTC)
    return format_html(
        '<time datetime="{}" data-local title="{} UTC">{}</time>',
        utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        _server_local(value),
    )


def _server_local(value) -> str:
    # strftime, not Django's dateformat: a third of the cost on a page of 250 times.
    local = timezone.localtime(value)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"
