"""Submissions: validation, the deterministic run id, and starting a run.

The run id is UUIDv5 in the namespace below of ``tenant_id + "\\x1f" +
idempotency_key``: any producer, in any language, can compute it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regionmesh.errors import InvalidWorkflow, RejectedSubmission, UnknownWorkflow
from regionmesh.workers.definitions import Registry, Step

RUN_NAMESPACE = uuid.UUID("6f1c9a52-6a43-4c55-9d0e-3b1f0a6ce1a1")
TENANT_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
KEY_MAX = 256
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
        }


def parse_submission(payload: Mapping[str, Any], *, max_input_bytes: int) -> Submission:
    """Check a ``regionmesh.submit`` message. Raises RejectedSubmission with the reason."""
    sid = payload.get("submission_id")
    tenant = payload.get("tenant_id")
    sid_s = sid if isinstance(sid, str) else None
    tenant_s = tenant if isinstance(tenant, str) else None

    def reject(reason: str) -> RejectedSubmission:
        return RejectedSubmission(reason, submission_id=sid_s, tenant_id=tenant_s)

    version = payload.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise reject(f"unsupported message version {version!r}; this region speaks v{PROTOCOL_VERSION}")
    missing = [k for k in ("tenant_id", "workflow", "input") if k not in payload]
    if missing:
        raise reject(f"message is missing field(s): {', '.join(missing)}")
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise reject(f"tenant_id {str(tenant)[:140]!r} must match [A-Za-z0-9._-]{{1,128}}")
    workflow = payload["workflow"]
    if not isinstance(workflow, str) or not workflow:
        raise reject("workflow must be a non-empty string")
    data = payload["input"]
    if not isinstance(data, dict):
        raise reject(f"input must be a JSON object, got {type(data).__name__}")
    size = len(json.dumps(data, separators=(",", ":")).encode())
    if size > max_input_bytes:
        raise reject(f"input is {size} bytes, over the limit of {max_input_bytes} bytes")
    key = payload.get("idempotency_key")
    if key is None:
        key = sid
    if not isinstance(key, str) or not key:
        raise reject("no idempotency_key and no submission_id: the producer must stamp a submission_id")
    if len(key) > KEY_MAX:
        raise reject(f"idempotency_key is longer than {KEY_MAX} characters")
    if sid is not None and not isinstance(sid, str):
        raise reject("submission_id must be a string")
    hops = payload.get("hops", 0)
    if not isinstance(hops, int) or isinstance(hops, bool) or hops < 0:
        raise reject("hops must be a non-negative integer")
    region = payload.get("submitted_region")
    return Submission(
        tenant_id=tenant,
        workflow=workflow,
        input=data,
        idempotency_key=key,
        submission_id=sid_s or key,
        submitted_region=region if isinstance(region, str) else None,
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
    shown["input"] = f"<{len(json.dumps(kwargs.get('input'), default=str))} bytes>"
    return repr(shown)
