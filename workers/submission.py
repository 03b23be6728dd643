"""Submissions: validation, the deterministic run id, and starting a run.

The run id is UUIDv5 in the namespace below of ``tenant_id + "\\x1f" +
idempotency_key``: any producer, in any language, can compute it.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regionmesh.errors import InvalidWorkflow, RejectedSubmission, UnknownWorkflow
from regionmesh.workers.definitions import Registry, Step
from regionmesh.workers.fairness import band_of

RUN_NAMESPACE = uuid.UUID("6f1c9a52-6a43-4c55-9d0e-3b1f0a6ce1a1")
# Identifiers are checked with fullmatch: ``$`` would also match before a trailing newline,
# making "t3\n" a second tenant with its own home.
TENANT_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
WORKFLOW_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}")
# The submission id is also the Celery task id: printable ASCII, no spaces.
SUBMISSION_ID_RE = re.compile(r"[!-~]{1,128}")
REGION_RE = re.compile(r"[a-z][a-z0-9-]{0,23}")
KEY_MAX = 256
MAX_INPUT_DEPTH = 64
PROTOCOL_VERSION = 1


def run_id_for(tenant_id: str, idempotency_key: str) -> uuid.UUID:
    return uuid.uuid5(RUN_NAMESPACE, f"{tenant_id}\x1f{idempotency_key}")


@dataclass(frozen=True)
class Submission:
    tenant_id: str
    workflow: str
    input: dict[str, Any]
    idempotency_key: str
    submission_id: str
    submitted_region: str | None
    priority: int | None = None  # the band asked for (workers/fairness.py); None: not given (normal)

    @property
    def run_id(self) -> uuid.UUID:
        return run_id_for(self.tenant_id, self.idempotency_key)

    def message(self) -> dict[str, Any]:
        """The ``regionmesh.submit`` kwargs that carry this submission on every hop."""
        return {
            "v": PROTOCOL_VERSION,
            "tenant_id": self.tenant_id,
            "workflow": self.workflow,
            "input": self.input,
            "idempotency_key": self.idempotency_key,
            "submission_id": self.submission_id,
            "submitted_region": self.submitted_region,
        } | ({} if self.priority is None else {"priority": self.priority})


def submission_id_for(key: str) -> str:
    """``key`` itself when it is a valid submission id, else a stable id derived from it."""
    return key if SUBMISSION_ID_RE.fullmatch(key) else str(uuid.uuid5(RUN_NAMESPACE, key))


def text_problem(value: str) -> str | None:
    """Why PostgreSQL (or a log line) cannot hold ``value`` as text, or None."""
    if "\x00" in value:
        return "contains NUL (\\u0000), which PostgreSQL text and jsonb cannot store"
    if any("\ud800" <= c <= "\udfff" for c in value):
        return "contains a lone UTF-16 surrogate, which is not valid Unicode text"
    return None


def _key_problem(key: str) -> str | None:
    if not key:
        return "is empty"
    if len(key) > KEY_MAX:
        return f"is longer than {KEY_MAX} characters"
    problem = text_problem(key)
    if problem:
        return problem
    if any(unicodedata.category(c) == "Cc" for c in key):
        return "contains a control character"
    return None


def input_problem(value: Any, depth: int = 0, path: str = "input") -> str | None:
    """Why ``value`` cannot be stored as a run's input (non-JSON types, NUL, surrogates, NaN, depth), or None.

    The reason names the place (``input.a[2]``), never the value.
    """
    if depth > MAX_INPUT_DEPTH:
        return f"{path} is nested deeper than {MAX_INPUT_DEPTH} levels"
    if isinstance(value, str):
        problem = text_problem(value)
        return f"{path} {problem}" if problem else None
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is not a finite number (NaN/Infinity are not JSON)"
    if isinstance(value, dict):
        for i, (k, v) in enumerate(value.items()):
            if not isinstance(k, str):
                return f"{path} has a key that is not a string"
            problem = text_problem(k)
            if problem:
                return f"a key in {path} {problem}"
            # Places are named by position: a key is input too, and reasons reach the logs.
            found = input_problem(v, depth + 1, f"{path}.#{i}")
            if found:
                return found
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = input_problem(v, depth + 1, f"{path}[{i}]")
            if found:
                return found
        return None
    return f"{path} holds a {type(value).__name__}, which is not a JSON value"


def parse_submission(payload: Mapping[str, Any], *, max_input_bytes: int) -> Submission:
    """Check a ``regionmesh.submit`` message. Raises RejectedSubmission with the reason.

    Reasons name fields and limits, never input values.
    """
    sid = payload.get("submission_id")
    tenant = payload.get("tenant_id")
    sid_s = sid if isinstance(sid, str) and SUBMISSION_ID_RE.fullmatch(sid) else None
    tenant_s = tenant if isinstance(tenant, str) and TENANT_RE.fullmatch(tenant) else None

    def reject(reason: str) -> RejectedSubmission:
        return RejectedSubmission(reason, submission_id=sid_s, tenant_id=tenant_s)

    version = payload.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise reject(f"unsupported message version {str(version)[:20]!r}; this region speaks v{PROTOCOL_VERSION}")
    missing = [k for k in ("tenant_id", "workflow", "input") if k not in payload]
    if missing:
        raise reject(f"message is missing field(s): {', '.join(missing)}")
    if sid is not None and (not isinstance(sid, str) or not SUBMISSION_ID_RE.fullmatch(sid)):
        raise reject("submission_id must be 1-128 printable ASCII characters without spaces")
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise reject("tenant_id must match [A-Za-z0-9._-]{1,128} in full (no spaces, no trailing newline)")
    workflow = payload["workflow"]
    if not isinstance(workflow, str) or not WORKFLOW_RE.fullmatch(workflow):
        raise reject("workflow must be a non-empty string matching [A-Za-z0-9_][A-Za-z0-9._:-]{0,127} in full")
    data = payload["input"]
    if not isinstance(data, dict):
        raise reject(f"input must be a JSON object, got {type(data).__name__}")
    try:
        size = len(json.dumps(data, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError):
        size = -1
    if size > max_input_bytes:
        raise reject(f"input is {size} bytes, over the limit of {max_input_bytes} bytes")
    problem = input_problem(data)
    if problem is None and size < 0:
        problem = "input cannot be written as JSON"
    if problem:
        raise reject(problem)
    key = payload.get("idempotency_key")
    if key is None:
        key = sid
    if not isinstance(key, str) or not key:
        raise reject("no idempotency_key and no submission_id: the producer must stamp a submission_id")
    key_problem = _key_problem(key)
    if key_problem:
        raise reject(f"idempotency_key {key_problem}")
    hops = payload.get("hops", 0)
    if not isinstance(hops, int) or isinstance(hops, bool) or hops < 0:
        raise reject("hops must be a non-negative integer")
    region = payload.get("submitted_region")
    if region is not None and (not isinstance(region, str) or not REGION_RE.fullmatch(region)):
        raise reject("submitted_region must be a region name")
    priority = payload.get("priority")
    if priority is not None:
        try:
            priority = band_of(priority)
        except RejectedSubmission as exc:
            raise reject(exc.reason) from exc
    return Submission(
        priority=priority,
        tenant_id=tenant,
        workflow=workflow,
        input=data,
        idempotency_key=key,
        submission_id=sid_s or key,
        submitted_region=region,
    )


def step_rows(steps: tuple[Step, ...]) -> list[dict[str, Any]]:
    return [
        {
            "key": s.key,
            "handler": s.handler,
            "depends_on": list(s.depends_on),
            "map_over": s.map_over,
            "max_attempts": s.retry.max_attempts,
            "backoff_base_s": s.retry.base_s,
            "backoff_max_s": s.retry.max_s,
            "timeout_s": s.timeout_s,
        }
        for s in steps
    ]


def plan_run(sub: Submission, registry: Registry, *, region: str, epoch: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run row and step rows for a submission.

    An unknown workflow raises (the message is rejected); an invalid DAG gives a
    run recorded as failed with the reason and no steps.
    """
    try:
        workflow = registry.get(sub.workflow)
    except UnknownWorkflow as exc:
        raise RejectedSubmission(str(exc), submission_id=sub.submission_id, tenant_id=sub.tenant_id) from exc
    run = {
        "id": str(sub.run_id),
        "tenant_id": sub.tenant_id,
        "idempotency_key": sub.idempotency_key,
        "workflow": sub.workflow,
        "input": sub.input,
        "status": "running",
        "owner_region": region,
        "submission_id": sub.submission_id,
        "submitted_region": sub.submitted_region,
        "epoch": epoch,
    }
    try:
        steps = workflow.decompose(sub.input, registry.handlers)
    except InvalidWorkflow as exc:
        return run | {"status": "failed", "error": str(exc)}, []
    return run, step_rows(steps)


def kwargs_summary(kwargs: Mapping[str, Any]) -> str:
    """What Flower and the logs show of a submission: who and what, never the input's content."""
    shown = {k: kwargs.get(k) for k in ("tenant_id", "workflow", "idempotency_key", "submission_id") if kwargs.get(k)}
    shown = {k: v[:KEY_MAX] if isinstance(v, str) else "<invalid>" for k, v in shown.items()}
    try:
        size = str(len(json.dumps(kwargs.get("input"), default=str)))
    except (TypeError, ValueError, RecursionError):
        size = "?"
    shown["input"] = f"<{size} bytes>"
    return repr(shown)
