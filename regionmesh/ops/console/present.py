"""What the console may show of a value: secrets redacted, payloads capped, zoned and erased
tenants' bodies withheld. Pure functions; the templates escape whatever they are given."""

from __future__ import annotations

import json
import re
from typing import Any

PAYLOAD_CAP = 4096  # characters of an input, output or dead letter body shown on a page

# A URL with a password in it (postgresql://user:secret@host/db, redis://:secret@host) and
# libpq's key=value form (password=secret): an error text may quote either.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@\s]*)@", re.I)
_KV_PASSWORD = re.compile(r"(?P<key>password|passwd|sslpassword)\s*=\s*(?P<secret>'[^']*'|\S+)", re.I)


def redact(text: str | None) -> str:
    """``text`` with every password-bearing URL or ``password=`` pair masked."""
    if not text:
        return ""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['key']}=***", text)


def capped(value: Any, cap: int = PAYLOAD_CAP) -> tuple[str, bool]:
    """A JSON (or text) rendering of ``value`` at most ``cap`` characters long, and whether it was cut."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str, ensure_ascii=False)
    return (text[:cap], True) if len(text) > cap else (text, False)


def body_visible(tenant_id: str | None, zoned: bool, erased: bool) -> bool:
    """A dead letter's body is shown only for a tenant known to be neither bound to a zone nor
    erased; a letter whose tenant could not be read might be anyone's, so its body is withheld too."""
    return tenant_id is not None and not zoned and not erased


def payload_visible(run_zone: str, local_zone: str | None) -> bool:
    """A run's input and outputs are shown where its zone allows (an unzoned run everywhere)."""
    return run_zone == "" or run_zone == local_zone


def short_error(text: str | None, limit: int = 300) -> str:
    """The first line of an error, redacted and cut, for tables (the full one is on its own page)."""
    first = redact(text).splitlines()[0] if text else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"
