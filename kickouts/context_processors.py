from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from . import reconcile


def energycap(request):
    """Whether pages run against the built-in sandbox (every page shows a marker then)."""
    return {
        "uses_sandbox": settings.ENERGYCAP_USES_SANDBOX,
        "energycap_host": settings.ENERGYCAP_BASE_URL.split("://", 1)[-1],
        "poll_seconds": settings.STATUS_POLL_SECONDS,
    }


def decisions_waiting(request):
    """The navigation's badge for supervisors: a function, so the count is made only by a
    page that shows the navigation (not by polled fragments), once, for those who may decide."""
    return {"decisions_waiting": reconcile.waiting_count}


@dataclass(frozen=True)
class BackLink:
    """The kickout group a page was opened from (`?from=<group URL>`), to link back to it."""

    url: str
    message: str


def back_to_group(request):
    """`from`, when it is a kickout group's address on this site: task pages and the bulk form
    opened from a group link back to it (the group's links and form carry it)."""
    value = request.GET.get("from") or (
        request.POST.get("from") if request.method == "POST" else None
    )
    if not value or not url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return {}
    address = urlsplit(value)
    if address.scheme or address.netloc or address.path != reverse("queue_group"):
        return {}
    message = parse_qs(address.query).get("message", [""])[0]
    return {"back_to_group": BackLink(url=value, message=message)}
