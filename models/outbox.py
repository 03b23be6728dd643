"""The local, durable outbox of submissions whose home broker was unreachable."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, text


def put(engine: Engine, *, submission_id: str, target_region: str, task_name: str, payload: dict[str, Any],
        error: str) -> bool:
    """Store a submission for later; False if this submission id is already waiting."""
    with engine.begin() as conn:
        result = conn.execute(text(
            """INSERT INTO outbox (submission_id, target_region, task_name, payload, last_error)
               VALUES (:s, :r, :t, CAST(:p AS jsonb), :e) ON CONFLICT (submission_id) DO NOTHING"""
        ), {"s": submission_id, "r": target_region, "t": task_name, "p": json.dumps(payload), "e": error[:2000]})
    return bool(result.rowcount)


def due(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    """Entries whose next attempt is due, oldest first (locked while the caller decides)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT id, submission_id, target_region, task_name, payload, attempts FROM outbox
                WHERE next_attempt_at <= clock_timestamp() ORDER BY id LIMIT :l"""
        ), {"l": limit}).mappings().all()
    return [dict(r) for r in rows]


def delivered(engine: Engine, entry_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM outbox WHERE id = :i"), {"i": entry_id})


def failed(engine: Engine, entry_id: int, error: str, delay_s: float) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            """UPDATE outbox SET attempts = attempts + 1, last_error = :e,
                      next_attempt_at = clock_timestamp() + make_interval(secs => :d) WHERE id = :i"""
        ), {"i": entry_id, "e": error[:2000], "d": delay_s})


def depth(engine: Engine) -> tuple[int, float | None, dict[str, int]]:
    """(entries, age in seconds of the oldest, entries per target region)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT target_region, count(*), extract(epoch FROM clock_timestamp() - min(created_at))
                 FROM outbox GROUP BY target_region"""
        )).all()
    per = {r[0]: int(r[1]) for r in rows}
    oldest = max((float(r[2]) for r in rows), default=None)
    return sum(per.values()), oldest, per
