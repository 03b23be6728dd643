"""``regionmesh submit-batch FILE.jsonl``: many submissions, resumable.

Each line is ``{"tenant_id", "workflow", "input", "idempotency_key"?}``. A line
without a key gets one derived from its number and text, so rerunning the
same file submits the same runs again and creates none twice.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionmesh.client import Receipt, submit
from regionmesh.config import MeshConfig
from regionmesh.errors import RejectedSubmission
from regionmesh.workers.submission import parse_submission, submission_id_for


@dataclass
class BatchResult:
    submitted: list[Receipt] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    seconds: float = 0.0

    @property
    def per_home(self) -> Counter[str]:
        return Counter(r.home_region or "?" for r in self.submitted)


def line_key(number: int, line: str) -> str:
    return "batch-" + hashlib.sha256(f"{number}\x1f{line.strip()}".encode()).hexdigest()[:32]


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                yield number, line


def submit_batch(
    config: MeshConfig,
    path: Path,
    *,
    region: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    priority: int | str | None = "low",
) -> BatchResult:
    """Validate and publish every line; bad lines are listed, never sent. A batch is low priority
    unless ``priority`` says otherwise (a line's own ``priority`` wins)."""
    result = BatchResult()
    started = time.perf_counter()
    for number, line in read_lines(path):
        try:
            doc: Any = json.loads(line)
            if not isinstance(doc, dict):
                raise RejectedSubmission("a line must be a JSON object")
            key = doc.get("idempotency_key") or line_key(number, line)
            # The same checks the worker makes, before anything is sent.
            sid = submission_id_for(key) if isinstance(key, str) else key
            sub = parse_submission(doc | {"idempotency_key": key, "submission_id": sid},
                                   max_input_bytes=config.max_input_bytes)
            receipt = submit(sub.tenant_id, sub.workflow, sub.input, key, region=region, config=config,
                             submission_id=sub.submission_id,
                             priority=sub.priority if sub.priority is not None else priority, bulk=True)
            result.submitted.append(receipt)
        except json.JSONDecodeError as exc:
            result.failures.append((number, f"not JSON: {exc.msg} at column {exc.colno}"))
        except RejectedSubmission as exc:
            result.failures.append((number, exc.reason))
        except Exception as exc:  # a publish failure is this line's failure; the rest go on
            result.failures.append((number, f"{type(exc).__name__}: {exc}"))
        if on_progress:
            on_progress(1)
    result.seconds = time.perf_counter() - started
    return result


def count_lines(path: Path) -> int:
    return sum(1 for _ in read_lines(path))


def run_ids(result: BatchResult) -> list[uuid.UUID]:
    return [r.run_id for r in result.submitted]
