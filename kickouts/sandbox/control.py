"""``SandboxControl``: steer a running sandbox through its ``/_sandbox/`` control routes.

For tests and the dashboard's dev tooling. Control routes need no API key and are never written
to the sandbox's request log. Every call has a 5 second timeout.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

TIMEOUT = 5.0


class SandboxControlError(RuntimeError):
    """The sandbox refused a control request (its ``message`` is in the text)."""


class SandboxControl:
    def __init__(self, base_url: str, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/_sandbox/health")

    def reset(self, **config: Any) -> dict[str, Any]:
        """Reseed everything and clear the log, faults and outcome queue.

        ``seed`` and ``taskSeconds`` (or ``task_seconds``) default to the command line's.
        """
        return self._call("POST", "/_sandbox/reset", _camel(config))

    def configure(self, **config: Any) -> dict[str, Any]:
        """Set ``taskSeconds`` and/or ``nextOutcomes`` (statuses the next re-imports end in)."""
        return self._call("POST", "/_sandbox/config", _camel(config))

    def log(self, endpoint: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since}
        if endpoint:
            params["endpoint"] = endpoint
        return list(self._call("GET", "/_sandbox/log", params=params)["entries"])

    def log_page(self, endpoint: str | None = None, since: int = 0) -> dict[str, Any]:
        """The raw ``{"entries": [...], "next": N}``; pass ``next`` as ``since`` to follow."""
        params: dict[str, Any] = {"since": since}
        if endpoint:
            params["endpoint"] = endpoint
        return self._call("GET", "/_sandbox/log", params=params)

    def count(self, endpoint: str, method: str | None = None) -> int:
        return sum(
            1
            for entry in self.log(endpoint)
            if method is None or entry["method"].upper() == method.upper()
        )

    def fault(
        self, endpoint: str, *responses: dict[str, Any], latency: float | None = None
    ) -> dict[str, Any]:
        """Queue one-shot faults for ``endpoint`` (or ``"*"``); ``latency`` is persistent."""
        body: dict[str, Any] = {"endpoint": endpoint, "responses": list(responses)}
        if latency is not None:
            body["latency"] = latency
        return self._call("POST", "/_sandbox/faults", body)

    def clear_faults(self) -> dict[str, Any]:
        return self._call("DELETE", "/_sandbox/faults")

    def add_task(self, **props: Any) -> dict[str, Any]:
        return self._call("POST", "/_sandbox/tasks", _camel(props))

    def update_task(self, guid: str, **props: Any) -> dict[str, Any]:
        """Change a task's ``status`` (ending it now), ``taskNote`` or ``message``."""
        return self._call("POST", f"/_sandbox/tasks/{guid}", _camel(props))

    def add_batch(self, **props: Any) -> dict[str, Any]:
        return self._call("POST", "/_sandbox/batches", _camel(props))

    def update_batch(self, batch_id: int, **props: Any) -> dict[str, Any]:
        return self._call("POST", f"/_sandbox/batches/{batch_id}", _camel(props))

    def set_me(self, **props: Any) -> dict[str, Any]:
        return self._call("POST", "/_sandbox/me", _camel(props))

    def kickout_file(self, guid: str) -> str:
        """The task's kickout rows as a CSV in the Advanced format (the message first): the
        file a clerk downloads, corrects and imports again."""
        response = self.session.get(
            f"{self.base_url}/_sandbox/tasks/{guid}/kickout-file", timeout=TIMEOUT
        )
        if response.status_code != 200:
            raise SandboxControlError(f"kickout-file answered {response.status_code}")
        return response.content.decode("utf-8")

    def accounts(self) -> list[dict[str, Any]]:
        """The master data's accounts: code, vendor code, meters and aliases."""
        return list(self._call("GET", "/_sandbox/accounts"))

    def add_account_alias(self, account_code: str, alias: str) -> dict[str, Any]:
        """Add an alias to an account, as a clerk does in EnergyCAP to fix "not found"."""
        path = f"/_sandbox/accounts/{quote(account_code, safe='')}/aliases"
        return self._call("POST", path, {"alias": alias})

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        response = self.session.request(
            method, self.base_url + path, json=body, params=params, timeout=TIMEOUT
        )
        if response.status_code != 200:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise SandboxControlError(f"{method} {path} answered {response.status_code}: {message}")
        return response.json()


def _camel(props: dict[str, Any]) -> dict[str, Any]:
    """Accept Python spellings (``task_seconds``) as well as the wire's (``taskSeconds``)."""
    converted = {}
    for key, value in props.items():
        head, *rest = key.split("_")
        converted[head + "".join(part[:1].upper() + part[1:] for part in rest)] = value
    return converted
