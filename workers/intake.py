"""What a worker lets through to Celery, and what it keeps of what it refuses. Pure.

``classify`` looks at a message exactly as the broker delivered it (body bytes, content type,
content encoding, headers) and answers either a decoded task message or a rejection with the
reason. The consumer calls it before Celery's strategy sees the message: Celery's main process
decodes the body and reads headers itself, and a body that is not an ``[args, kwargs, embed]``
triple, an unexpected content type, invalid UTF-8 or a malformed header raises there and stops
the worker (the message is restored, so the restarted worker dies on it again).

``dead_letter_record`` is what a rejected message leaves behind: a bounded prefix of its
body, its total size and the SHA-256 of the whole body, its Celery task id and submission id.
Reasons name fields and limits, never values: they reach the logs.

``tenant_hint`` and ``residency_keep`` decide what of that record residency and erasure allow:
the body is kept only for a tenant the body names for certain, in its zone here and not erased;
otherwise only ids, size, digest and the reason (an erased tenant's id is dropped too). A refusal
names its tenant whenever the body does, whatever was wrong with the message, so ``tenants
erase`` and the zone scrub find it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from celery.utils.time import maybe_iso8601
from kombu.utils.json import loads as kombu_loads

from regionmesh.workers.submission import SUBMISSION_ID_RE, TENANT_RE, text_problem

PREFIX_MAX = 64 * 1024
TASK_ID_MAX = 255
ACCEPTED_CONTENT_TYPE = "application/json"
ACCEPTED_ENCODINGS = ("utf-8", "utf8")
CANVAS_KEYS = ("callbacks", "errbacks", "chain", "chord")
# Headers Celery's main process reads, with the shape it needs.
_OPTIONAL_STR_HEADERS = ("shadow", "root_id", "parent_id", "group", "argsrepr", "kwargsrepr", "origin", "lang")
_DATE_HEADERS = ("eta", "expires")


@dataclass(frozen=True)
class Decoded:
    """A well-formed protocol-2 task message for a task this worker has."""

    task: str
    task_id: str
    kwargs: dict[str, Any]
    submission_id: str | None


@dataclass(frozen=True)
class Rejection:
    """A message that must not reach Celery, with what is known about it."""

    reason: str
    task: str | None = None
    task_id: str | None = None
    submission_id: str | None = None
    tenant_id: str | None = None


def as_bytes(body: Any) -> bytes:
    """The body as bytes, whatever the transport handed over (bytes, str, or something decoded)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    return repr(body).encode("utf-8", "backslashreplace")


def _safe_id(value: Any) -> str | None:
    """An id worth keeping: a string PostgreSQL can store, bounded (else None)."""
    if not isinstance(value, str) or not value or text_problem(value):
        return None
    return value[:TASK_ID_MAX]



def _valid_timelimit(limit: object) -> bool:
    return isinstance(limit, list | tuple) and len(limit) == 2 and all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)
        for v in limit
    )

def _header_problem(headers: Mapping[str, Any]) -> str | None:
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id or len(task_id) > TASK_ID_MAX or text_problem(task_id) \
            or not task_id.isprintable():
        return f"header 'id' must be a printable string of 1-{TASK_ID_MAX} characters"
    for name in _OPTIONAL_STR_HEADERS:
        if headers.get(name) is not None and not isinstance(headers[name], str):
            return f"header {name!r} must be a string"
    for name in _DATE_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"header {name!r} must be an ISO 8601 string"
        try:
            maybe_iso8601(value)
        except (ValueError, TypeError, AttributeError, OverflowError):
            return f"header {name!r} is not an ISO 8601 date"
    limit = headers.get("timelimit")
    if limit is not None and not _valid_timelimit(limit):
        return "header 'timelimit' must be [soft, hard] seconds (numbers or null)"
    retries = headers.get("retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < 0):
        return "header 'retries' must be a non-negative integer"
    if headers.get("ignore_result") is not None and not isinstance(headers["ignore_result"], bool):
        return "header 'ignore_result' must be a boolean"
    return None


def classify(body: Any, content_type: Any, content_encoding: Any, headers: Any, *,
             known_tasks: Collection[str]) -> Decoded | Rejection:
    """Decide whether a delivered message may reach Celery.

    Accepts only protocol-2 JSON task messages (UTF-8) for ``known_tasks``, whose body is an
    ``[args, kwargs, embed]`` triple with no positional arguments and no canvas, and whose
    headers have the types Celery's main process relies on. Never raises.
    """
    if not isinstance(headers, Mapping):
        return Rejection("message headers are not a mapping: not a Celery task message")
    task_id = _safe_id(headers.get("id"))
    task = headers.get("task")
    if task is None:
        return Rejection("no 'task' header: not a Celery protocol-2 task message (protocol 1 is not accepted)",
                         task_id=task_id)
    if not isinstance(task, str) or task not in known_tasks:
        return Rejection("unknown task name", task=_safe_id(task), task_id=task_id)
    fail = _Rejecter(task, task_id)
    problem = _header_problem(headers)
    if problem:
        return fail(problem)
    ctype = content_type.lower() if isinstance(content_type, str) else content_type
    if ctype != ACCEPTED_CONTENT_TYPE:
        return fail("content type is not application/json (JSON only)")
    encoding = content_encoding.lower() if isinstance(content_encoding, str) else content_encoding
    if encoding not in ACCEPTED_ENCODINGS:
        return fail("content encoding is not utf-8")
    raw = as_bytes(body)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return fail(f"body is not valid UTF-8 (at byte {exc.start})")
    try:
        decoded = kombu_loads(text)  # type: ignore[no-untyped-call]
    except RecursionError:
        return fail("body is nested too deeply to decode")
    except Exception as exc:  # any decoder failure is this message's problem, never the worker's
        return fail(f"body is not JSON ({type(exc).__name__})")
    if not isinstance(decoded, list) or len(decoded) != 3:
        return fail(f"body is a JSON {type(decoded).__name__}, not an [args, kwargs, embed] triple")
    args, kwargs, embed = decoded
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not (embed is None or isinstance(embed, dict)):
        return fail("body must be [list, object, object]")
    sid = kwargs.get("submission_id")
    fail = _Rejecter(task, task_id, sid if isinstance(sid, str) and SUBMISSION_ID_RE.fullmatch(sid) else None,
                     _tenant(kwargs.get("tenant_id")))
    if args:
        return fail("positional arguments are not accepted; send keyword arguments")
    if "self" in kwargs:
        return fail("keyword argument 'self' is not accepted")
    if embed and any(embed.get(k) for k in CANVAS_KEYS):
        return fail("callbacks, errbacks, chains and chords are not accepted (regionmesh keeps DAGs in PostgreSQL)")
    return Decoded(task=task, task_id=headers["id"], kwargs=kwargs, submission_id=fail.submission_id)


def _tenant(value: Any) -> str | None:
    return value if isinstance(value, str) and TENANT_RE.fullmatch(value) else None


@dataclass(frozen=True)
class _Rejecter:
    task: str | None
    task_id: str | None
    submission_id: str | None = None
    tenant_id: str | None = None

    def __call__(self, reason: str) -> Rejection:
        return Rejection(reason, self.task, self.task_id, self.submission_id, self.tenant_id)


@dataclass(frozen=True)
class DeadLetterRecord:
    """What ``dead_letters`` keeps of a rejected message."""

    reason: str
    task_name: str | None
    task_id: str | None
    submission_id: str | None
    tenant_id: str | None
    content_type: str | None
    payload: str | None  # a prefix of the body; None for a zoned tenant outside its zone (residency)
    payload_size: int
    payload_sha256: str


def body_prefix(raw: bytes, limit: int = PREFIX_MAX) -> str:
    """At most ``limit`` bytes of ``raw`` as text PostgreSQL can store: UTF-8 text as is,
    anything else (binary, NUL) as ``base64:…`` of the prefix."""
    head = raw[:limit]
    try:
        raw.decode("utf-8")
        text = head.decode("utf-8", "ignore")  # a cut inside a character drops only that character
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        return "base64:" + base64.b64encode(head).decode("ascii")
    return text


def dead_letter_record(raw: bytes, *, reason: str, task_name: str | None = None, task_id: str | None = None,
                       submission_id: str | None = None, tenant_id: str | None = None,
                       content_type: Any = None, limit: int = PREFIX_MAX) -> DeadLetterRecord:
    """The dead letter of a message whose whole body is ``raw``."""
    ctype = content_type if isinstance(content_type, str) else None
    return DeadLetterRecord(
        reason=reason,
        task_name=_safe_id(task_name),
        task_id=_safe_id(task_id),
        submission_id=_safe_id(submission_id),
        tenant_id=_tenant(tenant_id),
        content_type=None if ctype is None else ctype.replace("\x00", "")[:200].encode("utf-8", "replace").decode(),
        payload=body_prefix(raw, limit),
        payload_size=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
    )


@dataclass(frozen=True)
class TenantHint:
    """Whom a message's body says it is for, read best-effort from the raw bytes."""

    tenant_id: str | None
    certain: bool  # named as keyword argument ``tenant_id``, the one place regionmesh reads it


def _body_args(decoded: Any) -> tuple[Any, Any]:
    """(args, kwargs) of a decoded body: a protocol-2 triple, a protocol-1 dict, or bare kwargs."""
    if isinstance(decoded, list) and len(decoded) >= 2:
        return decoded[0], decoded[1]
    if isinstance(decoded, dict):
        if isinstance(decoded.get("kwargs"), dict):
            return decoded.get("args"), decoded["kwargs"]
        return None, decoded
    return None, None


def tenant_hint(raw: bytes) -> TenantHint:
    """The tenant a refused message's body names, whatever made it refused (another content type,
    a bad header, invalid UTF-8, positional arguments). Never raises.

    Certain only when the keyword argument ``tenant_id`` names it and no positional first argument
    names another. A positional first argument alone (``submit(tenant, workflow, input)`` sent as
    args) is a guess: good enough to tag the record for erasure, not to keep its body."""
    try:
        decoded = json.loads(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return TenantHint(None, False)
    args, kwargs = _body_args(decoded)
    named = _tenant(kwargs.get("tenant_id")) if isinstance(kwargs, dict) else None
    first = _tenant(args[0]) if isinstance(args, list) and args else None
    if named is not None:
        return TenantHint(named, first is None or first == named)
    return TenantHint(first, False)


def residency_keep(record: DeadLetterRecord, *, certain: bool, outside_zone: bool, erased: bool) -> DeadLetterRecord:
    """What a dead letter may keep. Erased: neither id nor body. Outside the tenant's zone, or a
    tenant not known for certain (the body may be anyone's, a zoned tenant's included, and
    ``tenants erase`` could not find it by id): ids, size, digest and reason, no body."""
    if erased:
        return dataclasses.replace(record, payload=None, tenant_id=None)
    if outside_zone or not certain or record.tenant_id is None:
        return dataclasses.replace(record, payload=None)
    return record
