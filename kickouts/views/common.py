"""What the views share: the request type, reading numbers from links, the period choices,
and who may see a retry."""

from __future__ import annotations

import logging

from django.http import Http404, HttpRequest
from django_htmx.middleware import HtmxDetails

from ..models import RetryAttempt

# The task list's and the kickout queue's periods, in days.
PERIODS = {"7": 7, "30": 30, "90": 90}
MAX_PAGE_NUMBER = 100_000
access_logger = logging.getLogger("kickouts.access")


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def ascii_number(value: str | None, *, maximum: int) -> int | None:
    """A whole number up to `maximum` in ASCII digits, else None.

    `"²".isdigit()` is true and `int("١٢")` is 12: neither is a number a link of ours carries.
    """
    value = (value or "").strip()
    if not (value.isascii() and value.isdigit() and len(value) <= len(str(maximum))):
        return None
    number = int(value)
    return number if number <= maximum else None


def positive_int(value: str | None, default: int = 1) -> int:
    return max(1, ascii_number(value, maximum=MAX_PAGE_NUMBER) or default)


def visible_attempt(request: HttpRequest, pk: int, *, with_requester: bool = True) -> RetryAttempt:
    """The retry, if this user may see it; another clerk's retry is a (logged) 404."""
    # Polled every few seconds: one indexed lookup (with the follow-up, which the panel
    # reads), and the permission check only when it is someone else's.
    related = ["follow_up", "requested_by"] if with_requester else ["follow_up"]
    attempt: RetryAttempt | None = (
        RetryAttempt.objects.select_related(*related).filter(pk=pk).order_by().first()
    )
    if attempt is None:
        raise Http404("No such retry.")
    if attempt.requested_by_id != request.user.pk and not request.user.has_perm(
        "kickouts.view_all_retries"
    ):
        access_logger.warning(
            "Refused %s %s to user %s: another user's retry",
            request.method,
            request.path,
            request.user.get_username(),
        )
        raise Http404("No such retry.")
    return attempt
