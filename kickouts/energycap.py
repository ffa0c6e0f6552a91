"""The EnergyCAP API client: the only module that knows URLs, headers, timeouts and the key.

Every outbound call goes through `EnergyCap._request`. Failures become a small
set of typed exceptions that views turn into messages. GETs are retried with
capped, jittered backoff; the kickout re-import POST never is, because a second
POST would re-import the same bills twice. What each answer to that POST proves
is one table, `REIMPORT_ANSWERS`.

Every text that comes back (bodies, error messages, task messages, notes) is
scrubbed of the key, of every request header's value and of NUL characters here
(`kickouts.scrubbing`), before it is parsed, so nothing downstream can show, log
or store them.

Independent calls run concurrently with `EnergyCap.at_once`, on a small thread pool of
the client's own: a page that needs five answers waits about one round trip, not five.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from .payloads import (
    BILL_IMPORT,
    Batch,
    CurrentUser,
    ImportProfile,
    KickoutGrid,
    KickoutSummary,
    MalformedPayload,
    Page,
    Task,
)
from .scrubbing import Scrubber

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
MAX_PAGE_SIZE = 1000
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
# Threads per process for `at_once`: a page needs at most five answers at once, and the
# pool is shared by the server's request threads (calls beyond it wait their turn).
CONCURRENT_CALLS = 8
# Kept-alive connections to EnergyCAP: the pool's threads plus the server's request threads,
# which make one call of each `at_once` and single calls themselves (gunicorn's --threads 8).
# A connection beyond it still opens, but is closed after its call.
KEPT_CONNECTIONS = 2 * CONCURRENT_CALLS
T = TypeVar("T")


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
    """EnergyCAP refused the request (a 4xx other than 401, 404 and 429)."""

    permanent = True


class Unavailable(EnergyCapError):
    """EnergyCAP could not be reached or answered with something unusable.

    `request_sent` tells whether the request may have reached EnergyCAP: False
    only when the connection failed before anything was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_sent: bool = True,
        answer: str = "",
    ):
        super().__init__(message, status_code=status_code)
        self.request_sent = request_sent
        # For a failure without an HTTP status: its row in REIMPORT_ANSWERS.
        self.answer = answer


class TimedOut(Unavailable):
    """No answer within the read timeout; the request was sent."""


# --- What an answer to the re-import POST proves ----------------------------


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # EnergyCAP started a new import and named its task
    NOT_SENT = "not sent"  # nothing reached EnergyCAP
    REFUSED = "refused"  # EnergyCAP said no before doing anything: nothing was imported
    UNKNOWN = "outcome unknown"  # EnergyCAP may have started the import: never re-send


# Every class of answer to `POST …/kickout`, what it proves and why. Only answers that
# prove EnergyCAP did not act are refusals: a 4xx, and a 429 or 503 (the server says it
# did not take the request). Anything else that breaks once the request may have been
# written may hide a started import, so it is "outcome unknown".
REIMPORT_ANSWERS: dict[str, tuple[Verdict, str]] = {
    "2xx with a task GUID": (Verdict.ACCEPTED, "EnergyCAP started the re-import."),
    "2xx without a task GUID": (
        Verdict.UNKNOWN,
        "EnergyCAP took the request but did not name the task it started.",
    ),
    "2xx not JSON": (
        Verdict.UNKNOWN,
        "EnergyCAP took the request but its answer could not be read.",
    ),
    "400": (Verdict.REFUSED, "EnergyCAP found the request invalid and did nothing."),
    "401": (Verdict.REFUSED, "EnergyCAP refused the key before doing anything."),
    "403": (Verdict.REFUSED, "EnergyCAP forbade the request before doing anything."),
    "404": (Verdict.REFUSED, "EnergyCAP did not find the task, so it imported nothing."),
    "409": (Verdict.REFUSED, "EnergyCAP refused the request as conflicting with the task."),
    "422": (Verdict.REFUSED, "EnergyCAP refused the batch settings before importing."),
    "429": (Verdict.REFUSED, "EnergyCAP turned the request away (rate limit) unprocessed."),
    "other 4xx": (Verdict.REFUSED, "A 4xx answer is a refusal of the request as sent."),
    "500": (
        Verdict.UNKNOWN,
        "EnergyCAP failed while handling the request, possibly after starting the import.",
    ),
    "502": (
        Verdict.UNKNOWN,
        "A gateway lost EnergyCAP's answer; EnergyCAP may have started the import.",
    ),
    "503": (Verdict.REFUSED, "EnergyCAP said it was unavailable and did not take the request."),
    "504": (
        Verdict.UNKNOWN,
        "A gateway gave up waiting; EnergyCAP may still have started the import.",
    ),
    "other 5xx": (
        Verdict.UNKNOWN,
        "A server error does not prove that nothing was imported.",
    ),
    "other status": (
        Verdict.UNKNOWN,
        "An answer the API does not document (1xx or 3xx) proves nothing either way.",
    ),
    "connection refused": (
        Verdict.NOT_SENT,
        "No connection could be opened (refused or unknown host), so nothing was sent.",
    ),
    "timeout before sending": (
        Verdict.NOT_SENT,
        "The connection could not be opened in time, so nothing was sent.",
    ),
    "dropped before sending": (
        Verdict.NOT_SENT,
        "The connection failed while being opened, before the request was written.",
    ),
    "timeout after sending": (
        Verdict.UNKNOWN,
        "The request was written but no answer came in time; EnergyCAP may be importing.",
    ),
    "dropped after sending": (
        Verdict.UNKNOWN,
        "The request may have reached EnergyCAP before the connection broke.",
    ),
}
CONNECTION_FAILURES = {
    "connection refused": "EnergyCAP could not be reached (connection refused).",
    "dropped before sending": "The connection to EnergyCAP failed while it was being opened.",
    "dropped after sending": "The connection to EnergyCAP broke before it answered.",
}
_EXPLICIT_STATUSES = frozenset(k for k in REIMPORT_ANSWERS if k.isdigit())


def answer_class(status_code: int) -> str:
    """The `REIMPORT_ANSWERS` row of an HTTP status that is not a success."""
    if str(status_code) in _EXPLICIT_STATUSES:
        return str(status_code)
    if 400 <= status_code < 500:
        return "other 4xx"
    if 500 <= status_code < 600:
        return "other 5xx"
    return "other status"


@dataclass(frozen=True)
class ReimportAnswer:
    """What came of one re-import POST: its table row, verdict and the words to record."""

    answer: str  # a key of REIMPORT_ANSWERS
    message: str  # what happened, safe to show (scrubbed, escaped by templates)
    status_code: int | None = None
    new_task_guid: str = ""

    @property
    def verdict(self) -> Verdict:
        return REIMPORT_ANSWERS[self.answer][0]

    @property
    def reason(self) -> str:
        return REIMPORT_ANSWERS[self.answer][1]


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


# --- Concurrent calls -------------------------------------------------------


@dataclass(frozen=True)
class Answer(Generic[T]):
    """One call's result from `EnergyCap.at_once`: its value, or the typed error it raised."""

    value: T | None = None
    error: EnergyCapError | None = None

    def get(self) -> T:
        """The value; the call's own typed error is raised here, where its caller reads it."""
        if self.error is not None:
            raise self.error
        return self.value


def _answer(call: Callable[[], T]) -> Answer[T]:
    try:
        return Answer(value=call())
    except EnergyCapError as exc:
        return Answer(error=exc)


_pool_thread = threading.local()


def _mark_pool_thread() -> None:
    _pool_thread.active = True


# --- The client -------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    status_code: int
    headers: requests.structures.CaseInsensitiveDict
    data: Any


def _upstream_message(response: requests.Response, scrubber: Scrubber) -> str:
    """The error body's `message` when there is one; never raw HTML."""
    try:
        body = _json(response, scrubber)
    except ValueError:
        return ""
    if isinstance(body, dict):
        for key in ("message", "Message", "error", "title"):
            if isinstance(body.get(key), str) and body[key].strip():
                return body[key].strip()[:2000]
    return ""


_CHARSET_RE = re.compile(r"charset=[\"']?([\w.:-]+)", re.IGNORECASE)


def _text(response: requests.Response) -> str:
    """The body as text: in the charset its Content-Type names, else UTF-8 (JSON's own)."""
    declared = _CHARSET_RE.search(response.headers.get("Content-Type", ""))
    try:
        return response.content.decode(declared[1] if declared else "utf-8-sig", errors="replace")
    except LookupError:  # a charset Python does not know
        return response.content.decode("utf-8", errors="replace")


def _json(response: requests.Response, scrubber: Scrubber) -> Any:
    """The answer's JSON with every secret and NUL character scrubbed from its strings (and
    NULs from its keys); ValueError when it is not JSON. This is where upstream text enters:
    everything stored or shown is made from it. Parsed first, then scrubbed, so a secret can
    never break the JSON's structure; the walk over the parsed data happens only when the
    text carries a secret or a NUL at all."""
    text = _text(response)
    data = json.loads(text)
    return scrubber.data(data) if scrubber.needs_scrubbing(text) else data


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    if value:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return None


class RetryAfterTooLong(Exception):
    """EnergyCAP asked to wait longer than the client waits (`GetRetry`)."""

    def __init__(self, seconds: float, status_code: int):
        super().__init__(f"Retry-After {seconds:.0f} s")
        self.seconds = seconds
        self.status_code = status_code


class GetRetry(Retry):
    """urllib3's retries for the GETs: a connection that failed, one that broke, and answers
    429/502/503/504 are tried again (honouring a short Retry-After, with capped backoff); no
    answer within the read timeout is not (each costs the whole timeout), and a Retry-After
    longer than `max_retry_after` gives up at once."""

    def __init__(self, *, attempts: int = 3, max_retry_after: float = 10.0, **kwargs):
        again = max(0, attempts - 1)
        kwargs.setdefault("total", again)
        kwargs.setdefault("connect", again)
        kwargs.setdefault("read", again)
        kwargs.setdefault("status", again)
        kwargs.setdefault("other", 0)
        kwargs.setdefault("redirect", False)
        kwargs.setdefault("allowed_methods", frozenset({"GET"}))
        kwargs.setdefault("status_forcelist", RETRYABLE_STATUSES)
        kwargs.setdefault("raise_on_status", False)
        kwargs.setdefault("respect_retry_after_header", True)
        super().__init__(**kwargs)
        self.attempts = attempts
        self.max_retry_after = max_retry_after

    def new(self, **kwargs) -> GetRetry:
        kwargs.setdefault("attempts", self.attempts)
        kwargs.setdefault("max_retry_after", self.max_retry_after)
        return super().new(**kwargs)

    def increment(self, method=None, url=None, response=None, error=None, *args, **kwargs):
        if isinstance(error, ReadTimeoutError):
            raise error
        if response is not None:
            wait = self.get_retry_after(response)
            if wait is not None and wait > self.max_retry_after:
                raise RetryAfterTooLong(wait, response.status)
        return super().increment(method, url, response, error, *args, **kwargs)


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
        self.assumed_zone = assumed_zone
        # requests reads the environment's proxy and CA settings (HTTPS_PROXY, NO_PROXY,
        # REQUESTS_CA_BUNDLE) itself, on every call. Two sessions with the same headers: GETs
        # are retried by urllib3 (`GetRetry`), the POSTs never are, not even a connection
        # that failed to open.
        self.session = self._session(
            GetRetry(
                attempts=self.get_attempts,
                max_retry_after=max_retry_after,
                backoff_factor=backoff_base,
                backoff_max=backoff_cap,
            )
        )
        self.post_session = self._session(Retry(0, read=False, redirect=False))
        self.scrubber = Scrubber([api_key, *self.session.headers.values()])
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def _session(self, retries: Retry) -> requests.Session:
        session = requests.Session()
        session.headers.update(
            {
                "ECI-ApiKey": self._api_key,
                # EnergyCAP asks for this header on every request, GETs included.
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "kickouts-dashboard",
            }
        )
        # Enough kept-alive connections for every call that may run at once (requests keeps 10).
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=KEPT_CONNECTIONS, max_retries=retries
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def __repr__(self) -> str:
        # Never show the key, not even in a traceback's local variables.
        return f"<EnergyCap {self.base_url}>"

    # -- concurrency --

    def at_once(self, *calls: Callable[[], Any]) -> list[Answer]:
        """Run independent calls of this client concurrently and wait for all of them: their
        `Answer`s, in the order of `calls`.

        Each call keeps its own timeouts, retries and scrubbing, and a typed error is that
        call's answer alone (raised by `Answer.get`). Anything else is a bug and is raised.
        The calls run on the client's threads (at most `CONCURRENT_CALLS` at once, however
        many are given), so they may only talk to EnergyCAP: no database or cache. The
        calling thread makes the first call itself.
        """
        if not calls:
            return []
        if len(calls) == 1 or getattr(_pool_thread, "active", False):
            # On a pool thread, waiting for the pool could wait forever: one after another.
            return [_answer(call) for call in calls]
        pool = self._executor()
        futures = [pool.submit(_answer, call) for call in calls[1:]]
        first = _answer(calls[0])
        return [first, *(future.result() for future in futures)]

    def _executor(self) -> ThreadPoolExecutor:
        # Made on first use in each process: a forked server worker has none of its
        # parent's threads.
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(
                    max_workers=CONCURRENT_CALLS,
                    thread_name_prefix="energycap",
                    initializer=_mark_pool_thread,
                )
                self._pool_pid = os.getpid()
            return self._pool

    # -- transport --

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict | None = None,
    ) -> _Response:
        session = self.session if method == "GET" else self.post_session
        started = time.monotonic()
        try:
            response = session.request(
                method,
                self.base_url + path,
                params=params,
                data=json.dumps(body) if body is not None else None,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except RetryAfterTooLong as exc:
            raise Unavailable(
                f"EnergyCAP is rate limiting requests and asked to wait {exc.seconds:.0f} "
                "seconds; try again later.",
                status_code=exc.status_code,
            ) from None
        except requests.exceptions.ConnectTimeout:
            raise Unavailable(
                "EnergyCAP could not be reached (the connection timed out).",
                request_sent=False,
                answer="timeout before sending",
            ) from None
        except requests.exceptions.ReadTimeout:
            logger.warning("EnergyCAP %s %s timed out", method, path)
            raise TimedOut(
                f"EnergyCAP did not answer within {self.timeout[1]:g} "
                f"second{'' if self.timeout[1] == 1 else 's'}.",
                answer="timeout after sending",
            ) from None
        except requests.exceptions.ConnectionError as exc:
            # A connection that could not be opened sent nothing; one that breaks
            # later may have delivered the request (urllib3 hides whether it did).
            answer = _connection_failure(exc)
            raise Unavailable(
                CONNECTION_FAILURES[answer],
                request_sent=answer == "dropped after sending",
                answer=answer,
            ) from None
        except requests.exceptions.RequestException:
            raise Unavailable(
                "The request to EnergyCAP failed.", answer="dropped after sending"
            ) from None
        logger.info(
            "EnergyCAP %s %s -> %s in %.0f ms",
            method,
            path,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return self._handle(response)

    def _handle(self, response: requests.Response) -> _Response:
        status = response.status_code
        # An error's own words; a success is read once, below.
        upstream = _upstream_message(response, self.scrubber) if status >= 400 else ""
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
            raise Unavailable(text, status_code=status)
        if status == 204 or not response.content:
            return _Response(status, response.headers, None)
        try:
            data = _json(response, self.scrubber)
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

    def reimport_kickouts(self, guid: str, body: dict) -> ReimportAnswer:
        """POST the kickout re-import, once, and say what the answer proves.

        Never retried: a repeat would duplicate bills. Never raises for EnergyCAP's
        answer: every answer is a row of `REIMPORT_ANSWERS`.
        """
        path = f"/api/v202401/import/bill/task/{_guid(guid)}/kickout"
        return self._post_import(path, body, "the re-import")

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

    # -- importing a file (the corrected-file path) --

    def import_bill(self, body: dict) -> ReimportAnswer:
        """POST a bill file import (`POST /api/v3/import/bill`), once, and say what the
        answer proves.

        The caller builds the body (fileName, data as base64, profileCode, batchSettings,
        importNote, saveAsResolved, comment). Never retried, for the re-import's reason: a
        repeat would import the same bills twice. Classified by the re-import's own table,
        `REIMPORT_ANSWERS`, as EnergyCAP's documentation does not set the two apart.
        """
        return self._post_import("/api/v3/import/bill", body, "the file import")

    def import_profiles(self) -> list[ImportProfile]:
        """The bill import profiles (`GET /api/v3/import/bill/profile`), in EnergyCAP's order.

        Which properties a profile carries is a guess (an id, a code, a name): each entry is
        read tolerantly, and one without a usable code is left out, since only its code can
        be sent as `profileCode`. An answer that is not a list is `Unavailable`, so the form
        can fall back on the Advanced format and say why.
        """
        response = self._get("/api/v3/import/bill/profile")
        if not isinstance(response.data, list):
            raise Unavailable("EnergyCAP answered with unexpected data: expected a list.")
        profiles: list[ImportProfile] = []
        seen: set[str] = set()
        for item in response.data:
            profile = ImportProfile.from_json(item)
            if profile is not None and profile.code.lower() not in seen:
                seen.add(profile.code.lower())
                profiles.append(profile)
        return profiles

    def _post_import(self, path: str, body: dict, what: str) -> ReimportAnswer:
        """POST an import once and classify the answer by `REIMPORT_ANSWERS`.

        The one place that reads what an answer to an import POST proves, for the kickout
        re-import and the file import alike; `what` names the request in the messages.
        """
        try:
            response = self._request("POST", path, body=body)
        except EnergyCapError as exc:
            status = exc.status_code
            if status is not None and 200 <= status < 300:
                answer = "2xx not JSON"
            elif status is not None:
                answer = answer_class(status)
            else:
                answer = getattr(exc, "answer", "") or "dropped after sending"
            return ReimportAnswer(answer, exc.message, status_code=status)
        if not 200 <= response.status_code < 300:
            return ReimportAnswer(
                answer_class(response.status_code),
                f"EnergyCAP answered HTTP {response.status_code}.",
                status_code=response.status_code,
            )
        data = response.data if isinstance(response.data, dict) else {}
        new_guid = data.get("taskGUId") or data.get("taskGuid") or data.get("taskGUID")
        if not isinstance(new_guid, str) or not GUID_RE.match(new_guid.strip()):
            return ReimportAnswer(
                "2xx without a task GUID",
                f"EnergyCAP accepted {what} but its answer had no task GUID.",
                status_code=response.status_code,
            )
        return ReimportAnswer(
            "2xx with a task GUID",
            "",
            status_code=response.status_code,
            new_task_guid=new_guid.strip().lower(),
        )


def _guid(value: str) -> str:
    """Refuse anything but a GUID before it is put into a URL path."""
    value = str(value).strip()
    if not GUID_RE.match(value):
        raise NotFound("That is not a task GUID.")
    return quote(value.lower(), safe="-")


def _connection_failure(exc: requests.exceptions.ConnectionError) -> str:
    """The `REIMPORT_ANSWERS` row of a connection that failed with no answer.

    urllib3 raises NewConnectionError only while opening the connection, so nothing was
    written; once it is open, a reset or close does not say whether the request was
    written before it, so it counts as after (the safe side).
    """
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, NameResolutionError):
        return "connection refused"
    # urllib3's NewConnectionError is a kind of ConnectTimeoutError: ask for it first.
    if isinstance(reason, NewConnectionError):
        refused = isinstance(reason.__cause__, ConnectionRefusedError)
        return "connection refused" if refused else "dropped before sending"
    if isinstance(reason, ConnectTimeoutError):
        return "timeout before sending"
    return "dropped after sending"


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
