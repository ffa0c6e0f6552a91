"""Small helpers for tests that drive the retry form through its URL."""

from __future__ import annotations

import uuid

from django.urls import reverse


def retry_url(guid: str) -> str:
    return reverse("retry_form", args=[guid])


def post_retry(client, guid: str, action: str = "review", htmx: bool = False, **fields):
    """POST the retry form as a browser would; every value a string, like a real form."""
    data = {"action": action, "form_token": str(uuid.uuid4())}
    for name, value in fields.items():
        if value is True:
            data[name] = "on"
        elif value is False or value is None:
            continue
        else:
            data[name] = str(value)
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    return client.post(retry_url(guid), data, **headers)


def form_errors(response) -> dict[str, list[str]]:
    form = response.context["form"]
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


def preview_smart_path(client, code: str):
    """Ask, as the form does while the clerk types, what smart batch would do with `code`."""
    return client.get(
        reverse("smart_batch_preview"), {"new_batch_code": code}, HTTP_HX_REQUEST="true"
    )
