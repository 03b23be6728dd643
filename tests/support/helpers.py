"""Waiting with deadlines, and small readers of the test tables."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, text

T = TypeVar("T")


def wait_until(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll until ``fn()`` is truthy; fail the test naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def run_row(engine: Engine, run_id: uuid.UUID) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM workflow_runs WHERE id = :r"), {"r": run_id}).mappings().first()
    return dict(row) if row else None


def wait_finished(engine: Engine, run_id: uuid.UUID, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        row = run_row(engine, run_id)
        return row if row and row["status"] != "running" else None

    return wait_until(done, timeout, f"run {run_id} to finish")


def exec_log(engine: Engine, run_id: uuid.UUID) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM test_exec_log WHERE run_id = :r ORDER BY id"), {"r": run_id}
        ).mappings().all()
    return [dict(r) for r in rows]


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()
