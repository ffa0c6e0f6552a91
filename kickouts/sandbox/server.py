"""The sandbox's HTTP server: routing, the API key check, paging, faults and the request log.

A ``ThreadingHTTPServer`` on loopback speaking HTTP/1.1 with keep-alive (every answer carries
``Content-Length``), because the dashboard's client reuses connections through a
``requests.Session``. One lock guards the state, the faults and the log; it is never held while
a fault sleeps, so a hanging request does not stall the others.

API routes need the ``ECI-ApiKey`` header. Control routes under ``/_sandbox/`` do not, and are
never written to the request log, so a test's own set-up does not show up in what it asserts.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import json
import math
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import batch_modes, imports
from .filters import FieldKind, FilterError, FilterField, matches, parse_filter
from .state import (
    COMPLETED_WITH_KICKOUTS,
    OUTCOMES,
    ControlError,
    SandboxState,
    Task,
    encode_json,
    utc_now,
)

ENDPOINTS = (
    "task_list",
    "task_get",
    "kickout_summary",
    "kickout_detail",
    "kickout_post",
    "batch_list",
    "batch_get",
    "me",
    "import_profiles",
    "import_post",
)
_KICKOUT = r"^/api/v202401/import/bill/task/(?P<guid>[^/]+)/kickout"
ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (name, method, re.compile(pattern, re.IGNORECASE))
    for name, method, pattern in (
        ("task_list", "GET", r"^/api/v3/task/?$"),
        ("task_get", "GET", r"^/api/v3/task/(?P<guid>[^/]+)/?$"),
        ("kickout_summary", "GET", _KICKOUT + r"/summary/?$"),
        ("kickout_detail", "GET", _KICKOUT + r"/detail/?$"),
        ("kickout_post", "POST", _KICKOUT + r"/?$"),
        ("batch_list", "GET", r"^/api/v3/batch/?$"),
        ("batch_get", "GET", r"^/api/v3/batch/(?P<batch_id>[^/]+)/?$"),
        ("me", "GET", r"^/api/v3/me/?$"),
        ("import_profiles", "GET", r"^/api/v3/import/bill/profile/?$"),
        ("import_post", "POST", r"^/api/v3/import/bill/?$"),
    )
)
DEFAULT_PAGE_SIZE = 250
MAX_PAGE_SIZE = 1000
LOG_LIMIT = 10_000
FAULT_KEYS = frozenset(
    {"status", "retryAfter", "malformed", "html", "drop", "hang", "apply", "echo"}
)

TASK_FILTER_FIELDS = {
    f.name.lower(): f
    for f in (
        FilterField("beginDate", FieldKind.DATE, lambda row: row["task"].begin_date),
        FilterField("batchId", FieldKind.INTEGER, lambda row: row["task"].batch_id),
        FilterField("batchCode", FieldKind.TEXT, lambda row: row["batch_code"]),
        FilterField("fullName", FieldKind.TEXT, lambda row: row["full_name"]),
        FilterField("taskId", FieldKind.INTEGER, lambda row: row["task"].task_id),
        FilterField("taskGUID", FieldKind.GUID, lambda row: row["task"].task_guid),
    )
}
BATCH_FILTER_FIELDS = {
    f.name.lower(): f
    for f in (
        FilterField("batchStatus", FieldKind.TEXT, lambda row: row["batch"].status),
        FilterField("isOpen", FieldKind.BOOLEAN, lambda row: row["batch"].is_open),
        FilterField(
            "HasImportsWithKickout",
            FieldKind.BOOLEAN,
            lambda row: row["batch"].has_imports_with_kickout,
        ),
        FilterField("batchCode", FieldKind.TEXT, lambda row: row["batch"].batch_code),
        FilterField("fullName", FieldKind.TEXT, lambda row: row["full_name"]),
        FilterField("batchId", FieldKind.INTEGER, lambda row: row["batch"].batch_id),
    )
}

HTML_ERROR_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>{status} {phrase}</title></head>\n"
    "<body><center><h1>{status} {phrase}</h1></center><hr><center>nginx</center>"
    "<script>alert('upstream')</script></body></html>\n"
)
# Starts like a real answer and stops mid-way, as a response cut by a proxy would.
MALFORMED_BODY = b'[{"taskId": 48211, "taskGUId": "3f2a9c1e-77b4-4d'


class ApiError(Exception):
    """An error answer: ``{"message": ...}`` with the given status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, encode_json(payload).encode("utf-8"), headers=dict(headers or {}))

    @classmethod
    def error(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        return cls.json(status, {"message": message}, headers)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]  # as sent, first value of each name
    headers: Any  # http.client.HTTPMessage
    body: bytes

    def param(self, name: str) -> str | None:
        # ASP.NET binds query names case-insensitively.
        for key, value in self.query.items():
            if key.lower() == name.lower():
                return value
        return None

    def json_body(self) -> Any:
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "The request body is not valid JSON.") from None


@dataclass
class FaultPlan:
    """What the faults registry decided for one request."""

    latency: float = 0.0
    fault: dict[str, Any] | None = None


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        api_key: str,
        task_seconds: float,
        seed: int,
        latency: float = 0.0,
        verbose: bool = False,
    ) -> None:
        self.api_key = api_key
        self.default_seed = seed
        self.default_task_seconds = task_seconds
        # A fixed delay before every API answer, as if EnergyCAP were this far away: the
        # persistent "*" latency, restored by a reset and by clearing the faults.
        self.default_latency = latency
        self.verbose = verbose
        self.lock = threading.RLock()
        self.state = SandboxState(seed, task_seconds)
        self.faults: dict[str, deque[dict[str, Any]]] = {}
        self.latencies: dict[str, float] = self._start_up_latencies()
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        # Sequence numbers never restart, not even on reset, so a reader's "since" stays valid.
        self.log_seq = 0
        super().__init__(address, SandboxHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take
        # seconds on a machine without a resolver; the sandbox has no use for the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    # --- called with the lock held ------------------------------------------------------

    def reset(self, seed: int, task_seconds: float) -> None:
        self.state = SandboxState(seed, task_seconds)
        self.faults.clear()
        self.latencies = self._start_up_latencies()
        self.log.clear()

    def _start_up_latencies(self) -> dict[str, float]:
        return {"*": self.default_latency} if self.default_latency else {}

    def take_fault(self, endpoint: str) -> FaultPlan:
        # The endpoint's own latency wins over the wildcard's; its own queue is used first.
        latency = self.latencies.get(endpoint, self.latencies.get("*", 0.0))
        for key in (endpoint, "*"):
            queue = self.faults.get(key)
            if queue:
                return FaultPlan(latency, queue.popleft())
        return FaultPlan(latency, None)

    def record(self, request: Request, endpoint: str | None) -> dict[str, Any]:
        self.log_seq += 1
        body: Any = None
        if request.body.strip():
            try:
                body = json.loads(request.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                body = None
        entry = {
            "seq": self.log_seq,
            "time": datetime.now(UTC).isoformat(),
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "endpoint": endpoint,
            "status": None,
            # A file import's base64 is kept as its size: the log holds 10,000 entries.
            "body": imports.log_body(body) if endpoint == "import_post" else body,
            "bodyBytes": len(request.body),
            # Only whether a key came: the value itself is never stored.
            "hasKey": bool(request.headers.get("ECI-ApiKey")),
        }
        self.log.append(entry)
        return entry


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "EnergyCAP-Sandbox/1.0"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib answers protocol errors (a garbled request line, an unsupported method)
        # with an HTML page; EnergyCAP's errors are JSON, so the sandbox's are too.
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self._send(Reply.error(code, message or _phrase(code)))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"sandbox: {self.address_string()} {format % args}\n")

    # --- plumbing -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            request = self._read_request()
            if request is None:
                return
            if request.path.startswith("/_sandbox/") or request.path == "/_sandbox":
                self._send(self._control(request))
            else:
                self._api(request)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout during a hang)
        except Exception:  # noqa: BLE001 - a sandbox bug must answer 500, not kill the server
            # The traceback goes to stderr, where start_sandbox's caller can read it.
            traceback.print_exc(file=sys.stderr)
            try:
                self._send(Reply.error(500, "The sandbox failed on this request; see its stderr."))
            except OSError:
                self.close_connection = True

    def _read_request(self) -> Request | None:
        parts = urlsplit(self.path)
        query = {
            key: values[0] for key, values in parse_qs(parts.query, keep_blank_values=True).items()
        }
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            length_header = self.headers.get("Content-Length", "0") or "0"
            try:
                length = int(length_header)
            except ValueError:
                self.close_connection = True
                self._send(Reply.error(400, "Content-Length is not a number."))
                return None
            body = self.rfile.read(length) if length > 0 else b""
        return Request(self.command, parts.path, query, self.headers, body)

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size_line = self.rfile.readline(65537).split(b";", 1)[0].strip()
            size = int(size_line or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailer headers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("X-EnergyCAP-Sandbox", "1")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _finish_entry(self, entry: dict[str, Any], status: int | None) -> None:
        with self.server.lock:
            entry["status"] = status

    # --- the API ------------------------------------------------------------------------

    def _api(self, request: Request) -> None:
        endpoint, params, method_ok = _route(request.method, request.path)
        with self.server.lock:
            entry = self.server.record(request, endpoint)
            plan = self.server.take_fault(endpoint) if endpoint else FaultPlan()
        if plan.latency > 0:
            time.sleep(plan.latency)
        fault = plan.fault or {}
        # "apply": the server does the work first, then the fault spoils only its answer
        # (late, a gateway's error, or no answer at all): the client cannot tell whether
        # the re-import happened.
        acts_first = bool(fault.get("apply"))
        if fault.get("drop") and not acts_first:
            # Hang up before processing: the client sees a connection closed with no answer.
            self.close_connection = True
            self._hard_close()
            return
        hang = float(fault.get("hang", 0) or 0)
        if hang and not acts_first:
            time.sleep(hang)
        if _answers_with_fault(fault) and not acts_first:
            reply = _fault_reply(fault, request)
        else:
            reply = self._answer(request, endpoint, params, method_ok)
        if acts_first:
            if hang:
                time.sleep(hang)
            if fault.get("drop"):
                # The work is done; no answer is sent (the log's status stays empty).
                self.close_connection = True
                self._hard_close()
                return
            if _answers_with_fault(fault):
                reply = _fault_reply(fault, request)
        self._finish_entry(entry, reply.status)
        self._send(reply)

    def _hard_close(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _answer(
        self, request: Request, endpoint: str | None, params: dict[str, str], method_ok: bool
    ) -> Reply:
        if endpoint is None:
            return Reply.error(404, f"No API resource at {request.path}.")
        if not _key_matches(request.headers.get("ECI-ApiKey"), self.server.api_key):
            return Reply.error(401, "The ECI-ApiKey header is missing or the key is not valid.")
        if not method_ok:
            return Reply.error(405, f"{request.method} is not allowed on {request.path}.")
        try:
            with self.server.lock:
                now = utc_now()
                state = self.server.state
                state.settle(now)
                return API_HANDLERS[endpoint](state, request, params, now)
        except ApiError as error:
            return Reply.error(error.status, error.message, error.headers)
        except Exception:  # noqa: BLE001 - answered here so the request log shows the 500
            traceback.print_exc(file=sys.stderr)
            return Reply.error(500, "The sandbox failed on this request; see its stderr.")

    # --- control ------------------------------------------------------------------------

    def _control(self, request: Request) -> Reply:
        try:
            return self._control_unsafe(request)
        except ApiError as error:
            return Reply.error(error.status, error.message)
        except ControlError as error:
            return Reply.error(400, str(error))

    def _control_unsafe(self, request: Request) -> Reply:
        path = request.path.rstrip("/")
        method = request.method
        server = self.server
        if path == "/_sandbox/health" and method == "GET":
            return Reply.json(200, {"ok": True})
        body = request.json_body() if method in ("POST", "PUT", "PATCH") else None
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ApiError(400, "The control request body must be a JSON object.")
        with server.lock:
            now = utc_now()
            server.state.settle(now)
            if path == "/_sandbox/reset" and method == "POST":
                seed = _number(body, "seed", int, server.default_seed)
                seconds = _number(body, "taskSeconds", float, server.default_task_seconds)
                server.reset(seed, seconds)
                return Reply.json(200, {"ok": True, "seed": seed, "taskSeconds": seconds})
            if path == "/_sandbox/config" and method == "POST":
                return Reply.json(200, _configure(server.state, body))
            if path == "/_sandbox/log" and method == "GET":
                return Reply.json(200, _read_log(server, request))
            if path == "/_sandbox/faults" and method == "POST":
                return Reply.json(200, _add_faults(server, body))
            if path == "/_sandbox/faults" and method == "DELETE":
                server.faults.clear()
                server.latencies = server._start_up_latencies()
                return Reply.json(200, {"ok": True})
            if path == "/_sandbox/tasks" and method == "POST":
                task = server.state.add_task(body, now)
                return Reply.json(200, server.state.task_json(task, now))
            if path == "/_sandbox/batches" and method == "POST":
                batch = server.state.add_batch(body, now)
                return Reply.json(200, server.state.batch_json(batch))
            task_match = re.fullmatch(r"/_sandbox/tasks/([0-9a-fA-F-]{36})", path)
            if task_match and method == "POST":
                task = server.state.update_task(task_match.group(1), body, now)
                return Reply.json(200, server.state.task_json(task, now))
            batch_match = re.fullmatch(r"/_sandbox/batches/(\d+)", path)
            if batch_match and method == "POST":
                batch = server.state.update_batch(int(batch_match.group(1)), body, now)
                return Reply.json(200, server.state.batch_json(batch))
            if path == "/_sandbox/me" and method == "POST":
                server.state.update_me(body)
                return Reply.json(200, server.state.me_json())
            file_match = re.fullmatch(r"/_sandbox/tasks/([0-9a-fA-F-]{36})/kickout-file", path)
            if file_match and method == "GET":
                task = server.state.task(file_match.group(1))
                if task is None:
                    raise ApiError(404, f"No task with GUID {file_match.group(1)}.")
                csv_text = imports.kickout_file(task)
                return Reply(200, csv_text.encode("utf-8"), content_type="text/csv; charset=utf-8")
            if path == "/_sandbox/accounts" and method == "GET":
                master = imports.master_data(server.state)
                return Reply.json(200, list(imports.iter_accounts(master)))
            alias_match = re.fullmatch(r"/_sandbox/accounts/([^/]+)/aliases", path)
            if alias_match and method == "POST":
                master = imports.master_data(server.state)
                try:
                    account = master.add_alias(unquote(alias_match.group(1)), body.get("alias", ""))
                except (LookupError, ValueError, AttributeError) as error:
                    raise ApiError(400, str(error)) from None
                return Reply.json(200, account.json())
        raise ApiError(404, f"No sandbox control route {method} {request.path}.")


# --- API handlers (run with the lock held) ------------------------------------------------


def _task_list(state: SandboxState, request: Request, _: dict[str, str], now: datetime) -> Reply:
    page_number, page_size = _paging(request)
    conditions = _filter(request, TASK_FILTER_FIELDS)
    type_code = request.param("taskTypeCode")
    rows = []
    for task in state.tasks_newest_first(type_code or None):
        batch = state.batches.get(task.batch_id) if task.batch_id is not None else None
        row = {
            "task": task,
            "batch_code": batch.batch_code if batch else None,
            "full_name": state.users[task.user_id].full_name,
        }
        if matches(conditions, row, now):
            rows.append(task)
    page, headers = _page(rows, page_number, page_size)
    return Reply.json(200, [state.task_json(task, now) for task in page], headers)


def _task_get(state: SandboxState, _: Request, params: dict[str, str], now: datetime) -> Reply:
    return Reply.json(200, state.task_json(_find_task(state, params["guid"]), now))


def _kickout_summary(
    state: SandboxState, _: Request, params: dict[str, str], now: datetime
) -> Reply:
    task = _inspectable_task(state, params["guid"])
    return Reply.json(200, state.kickout_summary(task, now))


def _kickout_detail(
    state: SandboxState, request: Request, params: dict[str, str], now: datetime
) -> Reply:
    task = _inspectable_task(state, params["guid"])
    message = request.param("kickoutMessage")
    return Reply.json(200, state.kickout_detail(task, message, now))


def _kickout_post(
    state: SandboxState, request: Request, params: dict[str, str], now: datetime
) -> Reply:
    content_type = request.headers.get("Content-Type", "")
    if "application/json" not in content_type.lower():
        # ASP.NET refuses a body it has no formatter for; EnergyCAP asks for JSON.
        raise ApiError(415, "Content-Type must be application/json.")
    if not state.permissions.create:
        # EnergyCAP answers 401, not 403, when the key's user lacks the permission.
        raise ApiError(
            401,
            f"User {state.api_user.user_code} lacks the Bills and Batches Create permission.",
        )
    body = request.json_body()
    try:
        kickout_request = batch_modes.parse_kickout_request(body)
    except batch_modes.KickoutRequestError as error:
        raise ApiError(400, str(error)) from None
    source = _find_task(state, params["guid"])
    if not source.is_bill_import:
        raise ApiError(
            400,
            f"Task {source.task_guid} is a {source.task_type.info} task, not a Bill Import.",
        )
    status = source.status_at(now)
    if status != COMPLETED_WITH_KICKOUTS:
        raise ApiError(
            400,
            f"Task {source.task_guid} has status '{status}'; only a Bill Import whose status "
            f"is '{COMPLETED_WITH_KICKOUTS}' can have its kickouts re-imported.",
        )
    try:
        target, close_when_done = batch_modes.place_bills(
            state, kickout_request.batch_settings, now
        )
    except batch_modes.KickoutRequestError as error:
        raise ApiError(400, str(error)) from None
    task = state.start_reimport(
        source,
        batch=target,
        close_batch_when_done=close_when_done,
        import_note=kickout_request.import_note or "",
        settings=dict(body),
        now=now,
    )
    return Reply.json(200, {"taskGUId": task.task_guid})


def _import_profiles(state: SandboxState, _: Request, __: dict[str, str], now: datetime) -> Reply:
    if not state.permissions.view:
        raise ApiError(
            401,
            f"User {state.api_user.user_code} lacks the Bills and Batches View permission.",
        )
    return Reply.json(200, imports.profile_list())


def _import_post(state: SandboxState, request: Request, _: dict[str, str], now: datetime) -> Reply:
    """A file import: refused as the re-import is refused, then a new Bill Import task."""
    content_type = request.headers.get("Content-Type", "")
    if "application/json" not in content_type.lower():
        raise ApiError(415, "Content-Type must be application/json.")
    if not state.permissions.create:
        raise ApiError(
            401,
            f"User {state.api_user.user_code} lacks the Bills and Batches Create permission.",
        )
    try:
        import_request = imports.parse_import_request(request.json_body())
        target, close_when_done = batch_modes.place_bills(
            state, import_request.kickout_request.batch_settings, now
        )
    except (imports.ImportRequestError, batch_modes.KickoutRequestError) as error:
        raise ApiError(400, str(error)) from None
    task = imports.start_file_import(
        state, import_request, batch=target, close_batch_when_done=close_when_done, now=now
    )
    return Reply.json(200, {"taskGUId": task.task_guid})


def _batch_list(state: SandboxState, request: Request, _: dict[str, str], now: datetime) -> Reply:
    page_number, page_size = _paging(request)
    conditions = _filter(request, BATCH_FILTER_FIELDS)
    rows = [
        batch
        for batch in state.batches_newest_first()
        if matches(
            conditions,
            {"batch": batch, "full_name": state.users[batch.owner_id].full_name},
            now,
        )
    ]
    page, headers = _page(rows, page_number, page_size)
    return Reply.json(200, [state.batch_json(batch) for batch in page], headers)


def _batch_get(state: SandboxState, _: Request, params: dict[str, str], now: datetime) -> Reply:
    raw = params["batch_id"]
    batch = state.batches.get(int(raw)) if re.fullmatch(r"\d{1,10}", raw) else None
    if batch is None:
        raise ApiError(404, f"Batch {raw} was not found.")
    return Reply.json(200, state.batch_json(batch))


def _me(state: SandboxState, _: Request, __: dict[str, str], now: datetime) -> Reply:
    return Reply.json(200, state.me_json())


API_HANDLERS: dict[str, Callable[[SandboxState, Request, dict[str, str], datetime], Reply]] = {
    "task_list": _task_list,
    "task_get": _task_get,
    "kickout_summary": _kickout_summary,
    "kickout_detail": _kickout_detail,
    "kickout_post": _kickout_post,
    "batch_list": _batch_list,
    "batch_get": _batch_get,
    "me": _me,
    "import_profiles": _import_profiles,
    "import_post": _import_post,
}


# --- helpers ------------------------------------------------------------------------------


def _route(method: str, path: str) -> tuple[str | None, dict[str, str], bool]:
    """The endpoint a path belongs to, its parameters, and whether the method fits."""
    found: tuple[str, dict[str, str]] | None = None
    for name, route_method, pattern in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        if route_method == method or (method == "HEAD" and route_method == "GET"):
            return name, match.groupdict(), True
        found = found or (name, match.groupdict())
    if found:
        return found[0], found[1], False
    return None, {}, False


def _key_matches(sent: str | None, expected: str) -> bool:
    if not sent:
        return False
    return hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))


def _find_task(state: SandboxState, guid: str) -> Task:
    task = state.task(guid)
    if task is None:
        raise ApiError(404, f"Task {guid} was not found.")
    return task


def _inspectable_task(state: SandboxState, guid: str) -> Task:
    if not state.permissions.view:
        raise ApiError(
            401,
            f"User {state.api_user.user_code} lacks the Bills and Batches View permission.",
        )
    task = _find_task(state, guid)
    if not task.is_bill_import:
        raise ApiError(
            400, f"Task {task.task_guid} is a {task.task_type.info} task, not a Bill Import."
        )
    return task


def _paging(request: Request) -> tuple[int, int]:
    page_number = _positive_int(request.param("pageNumber"), "pageNumber", 1)
    page_size = _positive_int(request.param("pageSize"), "pageSize", DEFAULT_PAGE_SIZE)
    return page_number, min(page_size, MAX_PAGE_SIZE)


def _positive_int(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[+-]?\d{1,9}", raw.strip()):
        raise ApiError(400, f"{name} must be a whole number, not '{raw}'.")
    value = int(raw)
    if value < 1:
        raise ApiError(400, f"{name} must be at least 1, not {value}.")
    return value


def _page(rows: list[Any], page_number: int, page_size: int) -> tuple[list[Any], dict[str, str]]:
    total = len(rows)
    start = (page_number - 1) * page_size
    headers = {
        "PageNumber": str(page_number),
        "PageSize": str(page_size),
        "TotalNumberOfRecords": str(total),
        "TotalPages": str(math.ceil(total / page_size)),
    }
    return rows[start : start + page_size], headers


def _filter(request: Request, fields: dict[str, FilterField]) -> list[Any]:
    text = request.param("filter")
    if not text:
        return []
    try:
        return parse_filter(text, fields)
    except FilterError as error:
        raise ApiError(400, str(error)) from None


def _answers_with_fault(fault: dict[str, Any]) -> bool:
    """Whether the fault replaces the real answer (a bare ``hang`` only delays it)."""
    if fault.get("malformed") or fault.get("html"):
        return True
    return fault.get("status") is not None or fault.get("retryAfter") is not None


def _fault_reply(fault: dict[str, Any], request: Request) -> Reply:
    # ``echo``: the error repeats the request's headers, key included, as some gateways,
    # WAFs and APIs do; a client must never show what comes back.
    echoed = (
        ": request headers " + "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        if fault.get("echo")
        else ""
    )
    if fault.get("malformed"):
        return Reply(int(fault.get("status", 200)), MALFORMED_BODY)
    if fault.get("html"):
        status = int(fault.get("status", 502))
        phrase = _phrase(status)
        page = HTML_ERROR_PAGE.format(status=status, phrase=phrase + html.escape(echoed))
        return Reply(status, page.encode("utf-8"), content_type="text/html; charset=utf-8")
    retry_after = fault.get("retryAfter")
    status = int(fault.get("status", 429 if retry_after is not None else 503))
    headers = {"Retry-After": _retry_after(retry_after)} if retry_after is not None else {}
    return Reply.error(status, f"{_phrase(status)} (sandbox fault){echoed}", headers)


def _retry_after(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number == int(number) else str(number)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _number(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"{name} must be a number.")
    if kind is int and value != int(value):
        raise ApiError(400, f"{name} must be a whole number.")
    if value < 0:
        raise ApiError(400, f"{name} must not be negative.")
    return kind(value)


def _configure(state: SandboxState, body: dict[str, Any]) -> dict[str, Any]:
    if "taskSeconds" in body:
        state.task_seconds = _number(body, "taskSeconds", float, state.task_seconds)
    if "nextOutcomes" in body:
        outcomes = body["nextOutcomes"]
        if not isinstance(outcomes, list) or not all(
            isinstance(o, str) and o.strip() for o in outcomes
        ):
            raise ApiError(400, "nextOutcomes must be a list of status strings.")
        # Any string is accepted, so tests can make a task end in a status EnergyCAP might
        # add one day; the documented ones are OUTCOMES.
        state.next_outcomes.clear()
        state.next_outcomes.extend(outcomes)
    return {
        "taskSeconds": state.task_seconds,
        "nextOutcomes": list(state.next_outcomes),
        "knownOutcomes": list(OUTCOMES),
    }


def _read_log(server: SandboxHTTPServer, request: Request) -> dict[str, Any]:
    since_raw = request.param("since") or "0"
    if not re.fullmatch(r"\d+", since_raw):
        raise ApiError(400, "since must be a whole number.")
    since = int(since_raw)
    endpoint = request.param("endpoint") or None
    entries = [
        dict(entry)
        for entry in server.log
        if entry["seq"] > since and (endpoint is None or entry["endpoint"] == endpoint)
    ]
    return {"entries": entries, "next": server.log_seq}


def _add_faults(server: SandboxHTTPServer, body: dict[str, Any]) -> dict[str, Any]:
    endpoint = body.get("endpoint")
    if endpoint != "*" and endpoint not in ENDPOINTS:
        raise ApiError(400, f"endpoint must be '*' or one of {', '.join(ENDPOINTS)}.")
    responses = body.get("responses", [])
    if not isinstance(responses, list):
        raise ApiError(400, "responses must be a list.")
    for response in responses:
        _check_fault(response)
    if "latency" in body:
        latency = _number(body, "latency", float, 0.0)
        if latency:
            server.latencies[endpoint] = latency
        else:
            server.latencies.pop(endpoint, None)
    # Faults accumulate: a second call for the same endpoint queues behind the first.
    server.faults.setdefault(endpoint, deque()).extend(responses)
    return {
        "endpoint": endpoint,
        "queued": len(server.faults[endpoint]),
        "latency": server.latencies.get(endpoint, 0.0),
    }


def _check_fault(response: Any) -> None:
    if not isinstance(response, dict) or not response:
        raise ApiError(400, "Each fault must be a non-empty object.")
    unknown = set(response) - FAULT_KEYS
    if unknown:
        raise ApiError(400, f"Unknown fault keys: {', '.join(sorted(unknown))}.")
    status = response.get("status")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise ApiError(400, "A fault's status must be an HTTP status code.")
    hang = response.get("hang")
    if hang is not None and (
        isinstance(hang, bool) or not isinstance(hang, int | float) or hang < 0
    ):
        raise ApiError(400, "A fault's hang must be a number of seconds.")
    retry_after = response.get("retryAfter")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int | float)
    ):
        raise ApiError(400, "A fault's retryAfter must be a number of seconds.")
    kinds = [k for k in ("drop", "hang", "malformed", "html") if response.get(k)]
    if not kinds and status is None and retry_after is None:
        raise ApiError(400, "A fault needs status, retryAfter, malformed, html, drop or hang.")
    if response.get("echo") and (status is None and not response.get("html")):
        raise ApiError(400, "echo goes with a status or an html page.")
    if len(kinds) > 1:
        raise ApiError(400, f"A fault can be only one of: {', '.join(kinds)}.")
    if response.get("apply") and not (kinds or status is not None):
        raise ApiError(400, "apply goes with hang, drop, status or html: what spoils the answer.")


# --- entry points -------------------------------------------------------------------------


def make_server(
    host: str,
    port: int,
    api_key: str,
    task_seconds: float,
    seed: int,
    *,
    latency: float = 0.0,
    verbose: bool = False,
) -> SandboxHTTPServer:
    return SandboxHTTPServer(
        (host, port),
        api_key=api_key,
        task_seconds=task_seconds,
        seed=seed,
        latency=latency,
        verbose=verbose,
    )


def serve(
    host: str,
    port: int,
    api_key: str,
    task_seconds: float,
    seed: int,
    *,
    latency: float = 0.0,
    verbose: bool = False,
    parent_pid: int | None = None,
) -> None:
    """Run until SIGTERM or SIGINT (or until ``parent_pid`` is gone), then close the socket."""
    server = make_server(host, port, api_key, task_seconds, seed, latency=latency, verbose=verbose)
    if parent_pid is not None:
        threading.Thread(
            target=_stop_when_parent_exits, args=(server, parent_pid), daemon=True
        ).start()

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    print(f"EnergyCAP sandbox listening on http://{host}:{server.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


def _stop_when_parent_exits(server: SandboxHTTPServer, parent_pid: int) -> None:
    # A test run killed with SIGKILL cannot stop its sandbox; without this watch the orphan
    # would keep the port (and CI's process table) busy.
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            server.shutdown()
            return
        except PermissionError:
            continue  # it exists, owned by someone else
