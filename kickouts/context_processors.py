from django.conf import settings


def energycap(request):
    """Whether pages run against the built-in sandbox (every page shows a marker then)."""
    return {
        "uses_sandbox": settings.ENERGYCAP_USES_SANDBOX,
        "energycap_host": settings.ENERGYCAP_BASE_URL.split("://", 1)[-1],
        "poll_seconds": settings.STATUS_POLL_SECONDS,
    }
