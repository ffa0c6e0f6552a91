"""Requests refused before any view reads them."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render

from .scrubbing import NUL

logger = logging.getLogger("kickouts.access")


def _field_with_nul(data: QueryDict) -> str | None:
    """The first name or value holding a NUL character: its name, or None."""
    for name, values in data.lists():
        if NUL in name or any(NUL in value for value in values):
            return name.replace(NUL, "\\0")
    return None


class RefuseNulCharacters:
    """A NUL character (U+0000) in the query string or a form body: 400, saying where.

    No person types one and no form of ours sends one, but PostgreSQL refuses to store or
    even compare it (psycopg's DataError, a 500). Views read `request.GET` and
    `request.POST` directly in many places (filters, notes, the next page); this is the one
    place that keeps a NUL from all of them. Listed last in MIDDLEWARE, so the answer still
    carries the security headers and the signed-in page around it.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        field = _field_with_nul(request.GET)
        if field is not None:
            return self._refuse(request, "address", field)
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        # A view that reads its own body (a corrected file, kickouts/uploads.py) is left to
        # it: reading the body here would take the upload before the view sets its
        # size-limited upload handler. Its form's fields refuse a NUL themselves (Django's
        # ProhibitNullCharactersValidator).
        if request.method != "POST" or getattr(view_func, "reads_its_own_body", False):
            return None
        field = _field_with_nul(request.POST)
        return None if field is None else self._refuse(request, "form", field)

    def _refuse(self, request: HttpRequest, where: str, field: str) -> HttpResponse:
        logger.info("Refused %s %s: a NUL character in %r", request.method, request.path, field)
        context = {"where": where, "field": field, "label": field.replace("_", " ").capitalize()}
        return render(request, "400_nul.html", context, status=400)
