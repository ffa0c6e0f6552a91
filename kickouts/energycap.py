"""The EnergyCAP API client: the only module that knows URLs, headers, timeouts and the key.

Every outbound call goes through `EnergyCap._request`. Failures become a small
set of typed exceptions that views turn into messages. GETs are retried with
capped, jittered backoff; the kickout re-import POST never is, because a second
POST would re-import the same bills twice.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import orjson
import requests
from django.conf import settings

from .payloads import (
    BILL_IMPORT,
    Batch,
    CurrentUser,
    KickoutGrid,
    KickoutSummary,
    MalformedPayload,
    NewTask,
    Page,
    Task,
)

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
MAX_PAGE_SIZE = 1000
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


# --- Errors -----------------------------------------------------------------


class EnergyCapError(Exception):
    """Base of every failure talking to EnergyCAP; `message` is safe to show (escaped)."""

    # Whether trying again later cannot help (a bad key, a missing task).
    permanent = False

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class NotFound(EnergyCapError):
    permanent = True


class Unauthorized(EnergyCapError):
    """EnergyCAP answers 401 both for a bad key and for a key whose user lacks a permission."""

    permanent = True


class Rejected(EnergyCapError):
    """EnergyCAP refused the request (4xx other than 401/404, or 5xx on a POST)."""

    permanent = True


class Unavailable(EnergyCapError):
    """EnergyCAP could not be reached or answered with something unusable.

    `request_sent` tells whether the request may have reached EnergyCAP: False
    only when the connection failed before anything was sent.
    """

    def __init__(self, message: str, *, status_code: int | None = None, request_sent: bool = True):
        super().__init__(message, status_code=status_code)
        self.request_sent = request_sent


class TimedOut(Unavailable):
    """No answer within the read timeout; the request was sent."""


# --- Filters ----------------------------------------------------------------

FILTER_OPERATORS = frozenset(
    {
        "equals",
        "not equals",
        "one of",
        "like",
        "less than",
        "greater than",
        "less than equal",
        "greater than equal",
        "between",
    }
)
DATE_SHORTCUTS = frozenset(
    {
        "today",
        "yesterday",
        "last 7 days",
        "last 14 days",
        "last 30 days",
        "last 60 days",
        "last 90 days",
    }
)
_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def quote_filter_value(value: Any) -> str:
    """Quote one value; a quote inside it is doubled so it cannot end the value early."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return "'" + str(value).replace("'", "''") + "'"


def build_filter(*clauses: tuple[str, str, Any]) -> str:
    """Build `field operator 'value' and …` from (field, operator, value) clauses.

    Every value is quoted, numbers and booleans too, as EnergyCAP asks. `one of`
    and `between` take a sequence; date shortcuts take None.
    """
    parts = []
    for field_name, operator, value in clauses:
        if not _FIELD_RE.match(field_name):
            raise ValueError(f"not a filter field: {field_name!r}")
        if operator in DATE_SHORTCUTS:
            if value is not None:
                raise ValueError(f"{operator!r} takes no value")
            parts.append(f"{field_name} {operator}")
            continue
        if operator not in FILTER_OPERATORS:
            raise ValueError(f"not a filter operator: {operator!r}")
        if operator in {"one of", "between"}:
            values = list(value)
            if operator == "between" and len(values) != 2:
                raise ValueError("between takes two values")
            text = "|".join(quote_filter_value(v) for v in values)
        else:
            text = quote_filter_value(value)
        parts.append(f"{field_name} {operator} {text}")
    return " and ".join(parts)


# --- The client -------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    status_code: int
    headers: requests.structures.CaseInsensitiveDict
    data: Any


def _json(response: requests.Response) -> Any:
    """The answer's JSON: orjson reads UTF-8 (what EnergyCAP sends) in a third of the time of
    the standard library (250 tasks: 0.4 ms against 0.9 ms); anything else is left to requests,
    which honours a declared charset. Both raise ValueError on what is not JSON."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.json()


def _upstream_message(response: requests.Response) -> str:
    """The error body's `message` when there is one; never raw HTML."""
    try:
        body = _json(response)
    except ValueError:
        return ""
    if isinstance(body, dict):
        for key in ("message", "Message", "error", "title"):
            if isinstance(body.get(key), str) and body[key].strip():
                return body[key].strip()[:2000]
    return ""


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    if value:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return None


class EnergyCap:
    """A client for one EnergyCAP environment and key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 3.05,
        read_timeout: float = 20.0,
        get_attempts: int = 3,
        max_retry_after: float = 10.0,
        backoff_base: float = 0.25,
        backoff_cap: float = 4.0,
        assumed_zone: str = "UTC",
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = (connect_timeout, read_timeout)
        self.get_attempts = max(1, get_attempts)
        self.max_retry_after = max_retry_after
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.assumed_zone = assumed_zone
        self.session = requests.Session()
        self.session.headers.update(
            {
                "ECI-ApiKey": api_key,
                # EnergyCAP asks for this header on every request, GETs included.
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "kickouts-dashboard",
            }
        )
        # The environment's proxy and CA settings (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE,
        # CURL_CA_BUNDLE) are read once, here, for this base URL: with trust_env on, requests
        # reads them again on every call, which cost about 0.3 ms a request.
        environment = self.session.merge_environment_settings(self.base_url, {}, None, None, None)
        self.session.proxies.update(environment["proxies"])
        self.session.verify = environment["verify"]
        self.session.trust_env = False

    def __repr__(self) -> str:
        # Never show the key, not even in a traceback's local variables.
        return f"<EnergyCap {self.base_url}>"

    # -- transport --

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict | None = None,
    ) -> _Response:
        url = self.base_url + path
        attempts = self.get_attempts if method == "GET" else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            started = time.monotonic()
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    data=json.dumps(body) if body is not None else None,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.exceptions.ConnectTimeout:
                error = Unavailable(
                    "EnergyCAP could not be reached (the connection timed out).",
                    request_sent=False,
                )
            except requests.exceptions.ReadTimeout:
                logger.warning("EnergyCAP %s %s timed out", method, path)
                raise TimedOut(
                    f"EnergyCAP did not answer within {self.timeout[1]:g} seconds."
                ) from None
            except requests.exceptions.ConnectionError as exc:
                # A refused or unresolvable connection sends nothing; a connection
                # that breaks later may have delivered the request.
                sent = not _failed_before_sending(exc)
                error = Unavailable(
                    "EnergyCAP could not be reached (connection refused)."
                    if not sent
                    else "The connection to EnergyCAP broke before it answered.",
                    request_sent=sent,
                )
            except requests.exceptions.RequestException:
                raise Unavailable("The request to EnergyCAP failed.") from None
            else:
                elapsed = time.monotonic() - started
                logger.info(
                    "EnergyCAP %s %s -> %s in %.0f ms",
                    method,
                    path,
                    response.status_code,
                    elapsed * 1000,
                )
                if response.status_code in RETRYABLE_STATUSES and method == "GET" and not last:
                    wait = _retry_after_seconds(response)
                    if wait is not None and wait > self.max_retry_after:
                        raise Unavailable(
                            f"EnergyCAP is rate limiting requests and asked to wait "
                            f"{wait:.0f} seconds; try again later.",
                            status_code=response.status_code,
                        )
                    time.sleep(wait if wait is not None else self._backoff(attempt))
                    continue
                return self._handle(response, method)
            # Connection errors: only GETs, and only when attempts remain.
            if last or method != "GET":
                raise error
            time.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _handle(self, response: requests.Response, method: str) -> _Response:
        status = response.status_code
        # An error's own words; a success is read once, below (a 250-task list twice cost 1 ms).
        upstream = _upstream_message(response) if status >= 400 else ""
        if status == 401:
            raise Unauthorized(
                "EnergyCAP refused the API key: either the key is wrong, or its user lacks "
                "the permission this needs (Bills and Batches)."
                + (f" EnergyCAP said: {upstream}" if upstream else ""),
                status_code=status,
            )
        if status == 404:
            raise NotFound(upstream or "EnergyCAP found no such record.", status_code=status)
        if status == 429:
            wait = _retry_after_seconds(response)
            raise Unavailable(
                "EnergyCAP is rate limiting requests; try again"
                + (f" in {wait:.0f} seconds." if wait else " shortly."),
                status_code=status,
            )
        if 400 <= status < 500:
            raise Rejected(
                upstream or f"EnergyCAP refused the request (HTTP {status}).", status_code=status
            )
        if status >= 500:
            text = f"EnergyCAP reported an error (HTTP {status})."
            if upstream:
                text += f" It said: {upstream}"
            if method != "GET":
                raise Rejected(text, status_code=status)
            raise Unavailable(text, status_code=status)
        if status == 204 or not response.content:
            return _Response(status, response.headers, None)
        try:
            data = _json(response)
        except ValueError:
            kind = response.headers.get("Content-Type", "unknown content").split(";")[0]
            raise Unavailable(
                f"EnergyCAP's answer could not be read as JSON (it was labelled {kind}).",
                status_code=status,
            ) from None
        return _Response(status, response.headers, data)

    def _get(self, path: str, params: dict | None = None) -> _Response:
        return self._request("GET", path, params=params)

    def _parse(self, parser, data):
        try:
            return parser(data)
        except MalformedPayload as exc:
            raise Unavailable(f"EnergyCAP answered with unexpected data: {exc}.") from None

    def _page(self, response: _Response, parser, page_number: int, page_size: int) -> Page:
        if not isinstance(response.data, list):
            raise Unavailable("EnergyCAP answered with unexpected data: expected a list.")
        items = [self._parse(parser, item) for item in response.data]

        def header_int(name: str) -> int | None:
            value = response.headers.get(name, "").strip()
            return int(value) if value.isdigit() else None

        return Page(
            items=items,
            page_number=header_int("PageNumber") or page_number,
            page_size=header_int("PageSize") or page_size,
            total_records=header_int("TotalNumberOfRecords"),
            total_pages=header_int("TotalPages"),
        )

    # -- tasks --

    def list_bill_import_tasks(
        self,
        *,
        filter_clauses: Iterable[tuple[str, str, Any]] = (),
        page_number: int = 1,
        page_size: int = 50,
    ) -> Page[Task]:
        page_size = min(max(1, page_size), MAX_PAGE_SIZE)
        params: dict[str, Any] = {
            "taskTypeCode": BILL_IMPORT,
            "pageNumber": page_number,
            "pageSize": page_size,
        }
        clauses = list(filter_clauses)
        if clauses:
            params["filter"] = build_filter(*clauses)
        response = self._get("/api/v3/task", params)
        return self._page(response, self._task, page_number, page_size)

    def _task(self, data) -> Task:
        return Task.from_json(data, self.assumed_zone)

    def get_task(self, guid: str) -> Task:
        response = self._get(f"/api/v3/task/{_guid(guid)}")
        return self._parse(self._task, response.data)

    def kickout_summary(self, guid: str) -> KickoutSummary:
        response = self._get(f"/api/v202401/import/bill/task/{_guid(guid)}/kickout/summary")
        return KickoutSummary.from_json(response.data)

    def kickout_detail(self, guid: str, kickout_message: str | None = None) -> KickoutGrid:
        params = {"kickoutMessage": kickout_message} if kickout_message else None
        response = self._get(f"/api/v202401/import/bill/task/{_guid(guid)}/kickout/detail", params)
        return KickoutGrid.from_json(response.data)

    def reimport_kickouts(self, guid: str, body: dict) -> NewTask:
        """POST the kickout re-import, once. Never retried: a repeat would duplicate bills."""
        response = self._request(
            "POST", f"/api/v202401/import/bill/task/{_guid(guid)}/kickout", body=body
        )
        data = response.data if isinstance(response.data, dict) else {}
        new_guid = data.get("taskGUId") or data.get("taskGuid") or data.get("taskGUID")
        if not isinstance(new_guid, str) or not GUID_RE.match(new_guid.strip()):
            # The POST was received and answered, so this is not retryable either.
            raise Unavailable("EnergyCAP accepted the re-import but its answer had no task GUID.")
        return NewTask(guid=new_guid.strip().lower(), raw=data)

    # -- batches and the key's user --

    def list_batches(
        self,
        *,
        filter_clauses: Iterable[tuple[str, str, Any]] = (),
        page_number: int = 1,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Page[Batch]:
        page_size = min(max(1, page_size), MAX_PAGE_SIZE)
        params: dict[str, Any] = {"pageNumber": page_number, "pageSize": page_size}
        clauses = list(filter_clauses)
        if clauses:
            params["filter"] = build_filter(*clauses)
        response = self._get("/api/v3/batch", params)
        return self._page(
            response, lambda d: Batch.from_json(d, self.assumed_zone), page_number, page_size
        )

    def open_batches(self) -> list[Batch]:
        return self.list_batches(filter_clauses=[("isOpen", "equals", True)]).items

    def pending_batches(self) -> list[Batch]:
        return self.list_batches(filter_clauses=[("batchStatus", "equals", "Pending")]).items

    def batches_with_code(self, code: str) -> list[Batch]:
        return self.list_batches(filter_clauses=[("batchCode", "equals", code)]).items

    def get_batch(self, batch_id: int) -> Batch:
        response = self._get(f"/api/v3/batch/{int(batch_id)}")
        return self._parse(lambda d: Batch.from_json(d, self.assumed_zone), response.data)

    def current_user(self) -> CurrentUser:
        return CurrentUser.from_json(self._get("/api/v3/me").data)


def _guid(value: str) -> str:
    """Refuse anything but a GUID before it is put into a URL path."""
    value = str(value).strip()
    if not GUID_RE.match(value):
        raise NotFound("That is not a task GUID.")
    return quote(value.lower(), safe="-")


def _failed_before_sending(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection itself failed (refused, DNS), so nothing was sent."""
    text = repr(exc.args[0] if exc.args else exc)
    return any(
        marker in text
        for marker in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError")
    )


def is_guid(value: str) -> bool:
    return bool(GUID_RE.match(str(value).strip()))


@lru_cache(maxsize=4)
def _client_for(
    base_url: str,
    api_key: str,
    connect_timeout: float,
    read_timeout: float,
    get_attempts: int,
    max_retry_after: float,
    assumed_zone: str,
) -> EnergyCap:
    return EnergyCap(
        base_url,
        api_key,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        get_attempts=get_attempts,
        max_retry_after=max_retry_after,
        assumed_zone=assumed_zone,
    )


def client() -> EnergyCap:
    """The process's client for the configured environment (one Session, reused)."""
    return _client_for(
        settings.ENERGYCAP_BASE_URL,
        settings.ENERGYCAP_API_KEY,
        settings.ENERGYCAP_CONNECT_TIMEOUT,
        settings.ENERGYCAP_READ_TIMEOUT,
        settings.ENERGYCAP_GET_ATTEMPTS,
        settings.ENERGYCAP_MAX_RETRY_AFTER,
        settings.ENERGYCAP_TIME_ZONE,
    )
