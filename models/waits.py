"""Statements of waiting steps and signals (0026): a parked task's wake time, parking, the due
wake-ups of a region, and signals (accept, take, wake their waiters, dead-letter the undeliverable).

A waiting task is ``queued`` with ``wake_at`` set and ``not_before = wake_at``; no message exists
for it until the region's ticker publishes it when due (or the reconciler, 30 s after, if that
publish was lost). Every time here is the owner's database clock (``clock_timestamp()``).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from regionmesh.models.runs import LEASE_ENDED_AT_COMMIT, LOCK_WAIT_OUTLASTED_LEASE, _unless_lease_refused

# A signal for a run this region places but does not hold is kept this long before it is dead.
ORPHAN_SIGNAL_S = 3600.0


def task_wake(engine: Engine, idempotency_key: str) -> tuple[datetime | None, datetime]:
    """(wake_at of the task, the database's clock now)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT (SELECT wake_at FROM step_tasks WHERE idempotency_key = :k), clock_timestamp()"),
            {"k": idempotency_key}).one()
    return row[0], row[1]


def park(engine: Engine, task_id: uuid.UUID, attempt: int, *, wake_at: datetime | None,
         wait_s: float | None) -> datetime | None:
    """Put a running task back to 'queued' until its wake time (set now if it has none: ``wake_at``,
    else the database's clock + ``wait_s``). Returns the wake time; None: discarded (lost race,
    lease ended, moved)."""
    def work() -> datetime | None:
        with engine.begin() as conn:
            at: datetime | None = conn.execute(text("SELECT rm_park_task(:t, :a, :w, :s)"),
                                               {"t": task_id, "a": attempt, "w": wake_at, "s": wait_s}).scalar()
        return at

    return _unless_lease_refused(work, None, (LEASE_ENDED_AT_COMMIT, LOCK_WAIT_OUTLASTED_LEASE))


def due_wakeups(engine: Engine, region: str, limit: int = 1000) -> list[uuid.UUID]:
    """Parked tasks of this region's running runs whose wake time has come and that were not
    handed out since: marked handed out now (queued_at), returned for publishing."""
    with engine.begin() as conn:
        return list(conn.execute(text(
            """UPDATE step_tasks t SET queued_at = clock_timestamp()
                WHERE t.id IN (
                  SELECT t2.id FROM step_tasks t2 JOIN workflow_runs r ON r.id = t2.run_id
                   WHERE t2.wake_at IS NOT NULL AND t2.status = 'queued' AND t2.deleted_at IS NULL
                     AND t2.not_before <= clock_timestamp() AND t2.queued_at < t2.not_before
                     AND r.status = 'running' AND r.owner_region = :region AND t2.epoch = r.epoch
                   ORDER BY t2.not_before LIMIT :limit FOR UPDATE OF t2 SKIP LOCKED)
            RETURNING t.id"""), {"region": region, "limit": limit}).scalars())


def accept_signal(engine: Engine, *, tenant_id: str, run_id: uuid.UUID, name: str, key: str, payload: Any,
                  region: str) -> bool:
    """Keep a signal (idempotent by tenant, run, name and key). Returns False when it was here already.
    Its delivery and its death bump the row's epoch, so a copy of the same key accepted in another
    region before the delivery replicated there (epoch 1) loses to it under the conflict rule."""
    with engine.begin() as conn:
        return bool(conn.execute(text(
            """INSERT INTO run_signals (tenant_id, run_id, name, key, payload, received_region)
               VALUES (:t, :r, :n, :k, CAST(:p AS jsonb), :region) ON CONFLICT DO NOTHING"""),
            {"t": tenant_id, "r": run_id, "n": name, "k": key, "p": json.dumps(payload), "region": region}).rowcount)


def take_signal(engine: Engine, run_id: uuid.UUID, name: str, taker: str) -> dict[str, Any] | None:
    """The signal a waiting task takes: the one it took before (a re-run after a crash), else the
    oldest pending one of that name, marked delivered to ``taker`` (the task's idempotency key)."""
    with engine.begin() as conn:
        row = conn.execute(text(
            """SELECT tenant_id, key, payload, state FROM run_signals
                WHERE run_id = :r AND name = :n AND deleted_at IS NULL
                  AND (delivered_to = :taker OR state = 'pending')
                ORDER BY (delivered_to = :taker) DESC NULLS LAST, received_at, key LIMIT 1 FOR UPDATE"""),
            {"r": run_id, "n": name, "taker": taker}).mappings().first()
        if row is None:
            return None
        if row["state"] == "pending":
            conn.execute(text(
                """UPDATE run_signals SET state = 'delivered', delivered_to = :taker, delivered_at = clock_timestamp(),
                          epoch = epoch + 1
                    WHERE tenant_id = :t AND run_id = :r AND name = :n AND key = :k AND state = 'pending'"""),
                {"taker": taker, "t": row["tenant_id"], "r": run_id, "n": name, "k": row["key"]})
    return {"key": row["key"], "payload": row["payload"]}


def wake_signalled(engine: Engine, region: str) -> list[uuid.UUID]:
    """Parked WaitFor tasks of this region's runs with a pending signal of their name: due now
    (their timeout, wake_at, is kept). Returned for publishing."""
    with engine.begin() as conn:
        return list(conn.execute(text(
            """UPDATE step_tasks t SET not_before = clock_timestamp(), queued_at = clock_timestamp()
                 FROM workflow_steps s, workflow_runs r
                WHERE s.id = t.step_id AND r.id = t.run_id AND t.status = 'queued' AND t.wake_at IS NOT NULL
                  AND t.not_before > clock_timestamp() AND t.deleted_at IS NULL
                  AND r.status = 'running' AND r.owner_region = :region AND t.epoch = r.epoch
                  AND s.handler LIKE 'regionmesh.wait_for:%'
                  AND EXISTS (SELECT 1 FROM run_signals g
                               WHERE g.run_id = t.run_id AND g.state = 'pending' AND g.deleted_at IS NULL
                                 AND s.handler LIKE 'regionmesh.wait_for:' || g.name || ':%')
            RETURNING t.id"""), {"region": region}).scalars())


def dead_signals(engine: Engine, region: str, placed_here: list[str]) -> list[tuple[str, uuid.UUID, str, str]]:
    """Mark dead, with a reason, the pending signals this region answers for: those of its runs
    that finished, and those of tenants it places (``placed_here``) whose run it does not hold
    ``ORPHAN_SIGNAL_S`` after the signal came. Returns (tenant, run, name, reason) of each."""
    with engine.begin() as conn:
        rows = conn.execute(text(
            """UPDATE run_signals g SET state = 'dead', epoch = g.epoch + 1,
                      reason = CASE WHEN r.id IS NULL
                                    THEN format('no run %s of tenant %s appeared in %s s', g.run_id, g.tenant_id, :orphan)
                                    ELSE format('run %s %s before the signal was taken', r.id, r.status) END
                 FROM (SELECT g2.tenant_id, g2.run_id, g2.name, g2.key FROM run_signals g2
                        WHERE g2.state = 'pending' AND g2.deleted_at IS NULL FOR UPDATE SKIP LOCKED) p
                 LEFT JOIN workflow_runs r ON r.id = p.run_id
                WHERE g.tenant_id = p.tenant_id AND g.run_id = p.run_id AND g.name = p.name AND g.key = p.key
                  AND ((r.id IS NOT NULL AND r.status <> 'running' AND r.owner_region = :region)
                    OR (r.id IS NULL AND g.tenant_id = ANY(:placed)
                        AND g.received_at < clock_timestamp() - make_interval(secs => :orphan)))
            RETURNING g.tenant_id, g.run_id, g.name, g.reason"""),
            {"region": region, "placed": placed_here, "orphan": ORPHAN_SIGNAL_S}).all()
    return [(str(r[0]), r[1], str(r[2]), str(r[3])) for r in rows]


def signals_of(engine: Engine, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """A run's signals as this region holds them (no payloads)."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(
            """SELECT name, key, state, reason, delivered_to, received_region, received_at, delivered_at
                 FROM run_signals WHERE run_id = :r AND deleted_at IS NULL ORDER BY received_at, key"""),
            {"r": run_id}).mappings()]


def run_facts(engine: Engine, run_id: uuid.UUID) -> tuple[str, str] | None:
    """(status, owner region) of a run as this region holds it (its summary for a zoned run held
    elsewhere), or None."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT status, owner_region FROM workflow_runs WHERE id = :r
               UNION ALL SELECT status, owner_region FROM run_summaries WHERE run_id = :r LIMIT 1"""),
            {"r": run_id}).first()
    return None if row is None else (str(row[0]), str(row[1]))


def orphan_signal_tenants(engine: Engine) -> list[str]:
    """Tenants with pending signals for runs this region does not hold (usually none)."""
    with engine.connect() as conn:
        return [str(t) for t in conn.execute(text(
            """SELECT DISTINCT g.tenant_id FROM run_signals g
                WHERE g.state = 'pending' AND g.deleted_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM workflow_runs r WHERE r.id = g.run_id)""")).scalars()]
