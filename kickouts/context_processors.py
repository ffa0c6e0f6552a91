from django.conf import settings

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
