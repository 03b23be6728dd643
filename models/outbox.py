"""The local, durable outbox of submissions whose home broker was unreachable."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import Engine, text


def put(engine: Engine, *, submission_id: str, run_id: uuid.UUID, target_region: str, task_name: str,
        payload: dict[str, Any], error: str | None, sent: bool, confirm_within_s: float = 60.0) -> bool:
    """Keep a submission: unsent (its home broker was unreachable) or sent and awaiting its run.

    False if this submission id is already kept.
    """
    with engine.begin() as conn:
        result = conn.execute(text(
            """INSERT INTO outbox (submission_id, run_id, target_region, task_name, payload, last_error, sent_at,
                                   next_attempt_at)
               VALUES (:s, :run, :r, :t, CAST(:p AS jsonb), :e,
                       CASE WHEN :sent THEN clock_timestamp() END,
                       clock_timestamp() + CASE WHEN :sent THEN make_interval(secs => :c) ELSE interval '0' END)
               ON CONFLICT (submission_id) DO NOTHING"""
        ), {"s": submission_id, "run": run_id, "r": target_region, "t": task_name, "p": json.dumps(payload),
            "e": None if error is None else error[:2000], "sent": sent, "c": confirm_within_s})
    return bool(result.rowcount)


def confirm_arrived(engine: Engine) -> int:
    """Forget sent entries whose run is here now (replicated from its home). Returns how many."""
    with engine.begin() as conn:
        result = conn.execute(text(
            """DELETE FROM outbox o USING workflow_runs r
                WHERE o.sent_at IS NOT NULL AND r.id = o.run_id"""
        ))
    return int(result.rowcount)


def due(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    """Entries to (re)send now, oldest first: unsent and due, or sent long ago and still unconfirmed."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT id, submission_id, run_id, target_region, task_name, payload, attempts, sent_at IS NOT NULL AS sent
                 FROM outbox WHERE next_attempt_at <= clock_timestamp() ORDER BY id LIMIT :l"""
        ), {"l": limit}).mappings().all()
    return [dict(r) for r in rows]


def sent_to(engine: Engine, region: str) -> list[dict[str, Any]]:
    """Sent, unconfirmed entries for ``region`` (to re-send if its tenants moved)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT id, submission_id, run_id, target_region, task_name, payload, attempts, true AS sent
                 FROM outbox WHERE sent_at IS NOT NULL AND target_region = :r ORDER BY id"""
        ), {"r": region}).mappings().all()
    return [dict(r) for r in rows]


def mark_sent(engine: Engine, entry_id: int, target: str, confirm_within_s: float = 60.0) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            """UPDATE outbox SET sent_at = clock_timestamp(), target_region = :t, last_error = NULL,
                      next_attempt_at = clock_timestamp() + make_interval(secs => :c) WHERE id = :i"""
        ), {"i": entry_id, "t": target, "c": confirm_within_s})


def awaiting(engine: Engine) -> int:
    """Sent entries whose run has not arrived here yet."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")).scalar_one())


def failed(engine: Engine, entry_id: int, error: str, delay_s: float) -> None:
    """A (re)send failed: back to unsent, next try after ``delay_s``."""
    with engine.begin() as conn:
        conn.execute(text(
            """UPDATE outbox SET attempts = attempts + 1, last_error = :e, sent_at = NULL,
                      next_attempt_at = clock_timestamp() + make_interval(secs => :d) WHERE id = :i"""
        ), {"i": entry_id, "e": error[:2000], "d": delay_s})


def depth(engine: Engine) -> tuple[int, float | None, dict[str, int]]:
    """Unsent entries: (how many, age in seconds of the oldest, how many per target region)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT target_region, count(*), extract(epoch FROM clock_timestamp() - min(created_at))
                 FROM outbox WHERE sent_at IS NULL GROUP BY target_region"""
        )).all()
    per = {r[0]: int(r[1]) for r in rows}
    oldest = max((float(r[2]) for r in rows), default=None)
    return sum(per.values()), oldest, per
