"""The one secrets scrubber: text from outside, cleaned of our secrets and of NUL characters.

The EnergyCAP client runs every answer through it before anything else reads it
(`kickouts/energycap.py`), error reports go through it before they leave the process
(`dashboard/sentry.py`), and migration 0004 redacted the records stored before either did.
Standard library only, so settings.py and migrations may import it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
# PostgreSQL's text and jsonb cannot hold U+0000 (psycopg raises DataError), and no person
# types one: upstream text loses it before it can reach a page or a row.
NUL = "\x00"
_UNICODE_ESCAPE_RE = re.compile(r"\\u([0-9a-fA-F]{4})")


class Scrubber:
    """Replaces secrets (the API key, every request header's value) and removes NUL characters.

    Gateways, WAFs and some APIs echo the request headers into their error pages; a task
    message or note can quote them too; an exception's text can carry a URL with the key.
    """

    def __init__(self, secrets: Iterable[str], replacement: str = REDACTED):
        forms: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            # As written; as a JSON string carries it (escaped, \u-escaped, with "\/");
            # and as a URL or a form body carries it.
            escaped = json.dumps(secret, ensure_ascii=False)[1:-1]
            forms.update({secret, escaped, escaped.replace("/", "\\/")})
            forms.add(json.dumps(secret)[1:-1])
            forms.update({quote(secret, safe=""), quote_plus(secret)})
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted(forms, key=len, reverse=True)
        self.replacement = replacement

    def text(self, text: str) -> str:
        # NUL first: a secret split by one would otherwise appear whole after its removal.
        text = text.replace(NUL, "")
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, self.replacement)
        return text

    def bytes(self, value: bytes) -> bytes:
        value = value.replace(NUL.encode(), b"")
        for secret in self.secrets:
            value = value.replace(secret.encode(), self.replacement.encode())
        return value

    def needs_scrubbing(self, text: str) -> bool:
        r"""Whether JSON text carries a NUL or a secret, as written or spelled with \u escapes."""
        if NUL in text or "\\u0000" in text:
            return True
        if any(secret in text for secret in self.secrets):
            return True
        if "\\u" not in text:
            return False
        unescaped = _UNICODE_ESCAPE_RE.sub(lambda m: chr(int(m[1], 16)), text)
        return any(secret in unescaped for secret in self.secrets)

    def data(self, data: Any, *, keys: bool = False) -> Any:
        """Every string in parsed data (lists, tuples, sets, dicts), bytes too.

        Dict keys lose their NULs; their secrets only with `keys`: the client's parsers look
        EnergyCAP's keys up by name, and scrubbing a short secret out of them would turn
        `taskGUId` into nonsense, while an error report is only read.
        """
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, bytes):
            return self.bytes(data)
        if isinstance(data, dict):
            return {
                (self._key(key, keys)): self.data(value, keys=keys) for key, value in data.items()
            }
        if isinstance(data, list | tuple | set | frozenset):
            return type(data)(self.data(item, keys=keys) for item in data)
        return data

    def _key(self, key: Any, keys: bool) -> Any:
        if keys:
            return self.data(key, keys=True)
        return key.replace(NUL, "") if isinstance(key, str) else key
