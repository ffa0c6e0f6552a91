import json

from django import template

from .. import batch_modes, causes, formatting, uploads

register = template.Library()

register.filter("bill_counts", formatting.bill_counts)
register.filter("person", formatting.person)
register.simple_tag(formatting.local_time, name="local_time")
register.simple_tag(formatting.status_badge, name="status_badge")
# What to do about a kickout message: kickouts/causes.py, the one table of causes.
register.filter("advice", causes.advice_for)
# A file's size as people read it: "18 KB", "9.5 MB".
register.filter("file_size", uploads.format_size)
register.filter("cause_label", causes.cause_label)


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
    """The batch settings of a retry's payload, in words (batch_modes.MODES)."""
    payload = attempt.payload or {}
    parts = batch_modes.settings_in_words(attempt.batch_mode, payload.get("batchSettings", {}))
    if payload.get("saveAsResolved"):
        parts.append("failed audits saved as resolved")
    return "; ".join(parts) or "no further settings"
