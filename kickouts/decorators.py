"""Access decorators that understand htmx and log every refusal."""

from __future__ import annotations

import logging
from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect

logger = logging.getLogger("kickouts.access")


def login_required(view):
    """Like Django's, but an htmx request gets `HX-Redirect` so the whole page goes to login."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        logger.info("Refused signed-out request to %s", request.path)
        if getattr(request, "htmx", False):
            login = resolve_url(settings.LOGIN_URL)
            current = request.htmx.current_url_abs_path or request.get_full_path()
            return HttpResponseClientRedirect(redirect_to_login(current, login)["Location"])
        return redirect_to_login(request.get_full_path())

    return wrapper


def permission_required(perm: str):
    """Refuse (403) a signed-in user without `perm`, and log who tried what."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.has_perm(perm):
                logger.warning(
                    "Refused %s %s to user %s: lacks %s",
                    request.method,
                    request.path,
                    request.user.get_username(),
                    perm,
                )
                raise PermissionDenied(perm)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
