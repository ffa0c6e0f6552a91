"""Error reports to Sentry: no personal data, no local variables, and never the EnergyCAP key.

Called from settings.py only when SENTRY_DSN is set. The key could still reach an event
through a message or an exception's text (a URL, a header echoed back by a proxy), so every
event is scrubbed of its value, however deeply it is nested, before it leaves the process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kickouts.scrubbing import Scrubber

# Sentry's own word for a scrubbed value.
FILTERED = "[Filtered]"

Event = dict[str, Any]


def scrub(value: Any, secret: str) -> Any:
    """`value` with every occurrence of `secret` replaced by "[Filtered]", keys included
    (the app's one scrubber, `kickouts.scrubbing.Scrubber`)."""
    if not secret:
        return value
    return Scrubber([secret], replacement=FILTERED).data(value, keys=True)


def make_before_send(api_key: str) -> Callable[[Event, dict], Event]:
    """Sentry's `before_send`: the whole event, scrubbed of the key's value."""
    scrubber = Scrubber([api_key], replacement=FILTERED)

    def before_send(event: Event, hint: dict) -> Event:
        return scrubber.data(event, keys=True)

    return before_send


def init_sentry(dsn: str, api_key: str, **options: Any) -> None:
    """Start reporting errors to Sentry; `options` go to `sentry_sdk.init` (release, …)."""
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration

    before_send = make_before_send(api_key)
    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration()],
        # No user names, e-mail addresses, IPs or cookies in reports.
        send_default_pii=False,
        # A frame's locals may hold a request's headers, and so the key.
        include_local_variables=False,
        before_send=before_send,
        before_send_transaction=before_send,
        **options,
    )
