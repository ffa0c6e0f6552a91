"""The overview's links from its tables (kickouts/views/overview.py's `Links`), and a share."""

from django import template

register = template.Library()


@register.filter
def queue_link(links, bucket) -> str:
    """The queue's open imports begun in this week."""
    return links.queue(first=bucket.first, last=bucket.last)


@register.filter
def handled_link(links, bucket) -> str:
    """The queue's handled imports begun in this week."""
    return links.queue(first=bucket.first, last=bucket.last, show="handled")


@register.filter
def queue_cause_link(links, key: str) -> str:
    return links.queue(cause=key)


@register.filter
def history_cause_link(links, key: str) -> str:
    return links.history(cause=key)


@register.filter
def person_link(links, user_id: int) -> str:
    return links.history(user=user_id)


@register.filter
def wasted_link(links, key: str) -> str:
    return links.history(cause=key, result="nothing")


@register.filter
def percent(share: float) -> str:
    return f"{share:.0%}"
