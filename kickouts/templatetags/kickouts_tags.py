import json

from django import template

from .. import formatting

register = template.Library()

register.filter("bill_counts", formatting.bill_counts)
register.simple_tag(formatting.local_time, name="local_time")
register.simple_tag(formatting.status_badge, name="status_badge")


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
