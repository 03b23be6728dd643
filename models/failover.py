"""Statements for failover, moves, restore and the local fence."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, text


def set_region_status(engine: Engine, region: str, status: str, failed_over_to: str | None) -> int:
    """Mark ``region`` (epoch + 1). Returns the new epoch."""
    with engine.begin() as conn:
        return int(conn.execute(text(
            """INSERT INTO regions (name, status, failed_over_to, epoch) VALUES (:r, :s, :t, 2)
               ON CONFLICT (name) DO UPDATE SET status = EXCLUDED.status, failed_over_to = EXCLUDED.failed_over_to,
                                                epoch = regions.epoch + 1
               RETURNING epoch"""
        ), {"r": region, "s": status, "t": failed_over_to}).scalar_one())


def tenants_homed_in(engine: Engine, region: str) -> list[str]:
    """Tenants this region's copy knows to be homed in ``region``: registry rows, and owners of runs there."""
    with engine.connect() as conn:
        return list(conn.execute(text(
            """SELECT tenant_id FROM tenant_registry WHERE home_region = :r AND reason <> 'hash'
               UNION SELECT DISTINCT tenant_id FROM workflow_runs WHERE owner_region = :r"""
        ), {"r": region}).scalars())


def move_tenants(engine: Engine, tenants: list[str], to: str, reason: str) -> int:
    """Registry rows for ``tenants`` -> ``to`` at the next epoch each. Returns rows written."""
    if not tenants:
        return 0
    with engine.begin() as conn:
        result = conn.execute(text(
            """INSERT INTO tenant_registry (tenant_id, home_region, reason, epoch)
               SELECT t, :to, :reason, 2 FROM unnest(CAST(:ts AS text[])) AS t
               ON CONFLICT (tenant_id) DO UPDATE SET home_region = EXCLUDED.home_region, reason = EXCLUDED.reason,
                                                     epoch = tenant_registry.epoch + 1"""
        ), {"ts": tenants, "to": to, "reason": reason})
    return int(result.rowcount)


def adopt_runs(engine: Engine, from_region: str, to_region: str) -> tuple[int, list[uuid.UUID]]:
    """Take over ``from_region``'s unfinished runs as this region's copy holds them.

    Each run and all its rows move to the next epoch (so this region's writes
    beat any stale ones from the old owner); tasks that were running there go
    back to the queue. Returns (runs adopted, queued tasks to publish).
    """
    with engine.begin() as conn:
        runs = conn.execute(text(
            """UPDATE workflow_runs SET owner_region = :to, epoch = epoch + 1
                WHERE owner_region = :from AND status = 'running' RETURNING id, epoch"""
        ), {"from": from_region, "to": to_region}).all()
        if not runs:
            return 0, []
        ids = [r[0] for r in runs]
        conn.execute(text(
            """UPDATE workflow_steps s SET epoch = r.epoch FROM workflow_runs r
                WHERE r.id = s.run_id AND r.id = ANY(:ids)"""
        ), {"ids": ids})
        tasks = conn.execute(text(
            """UPDATE step_tasks t SET epoch = r.epoch,
                      -- The attempt lost with the region is not the step's failure: it does not count.
                      attempt = CASE WHEN t.status = 'running' THEN greatest(t.attempt - 1, 0) ELSE t.attempt END,
                      status = CASE WHEN t.status = 'running' THEN 'queued' ELSE t.status END,
                      error = CASE WHEN t.status = 'running' THEN 'adopted from ' || :from ELSE t.error END,
                      queued_at = clock_timestamp(), deadline_at = NULL, worker = NULL
                 FROM workflow_runs r
                WHERE r.id = t.run_id AND r.id = ANY(:ids)
               RETURNING t.id, t.status"""
        ), {"ids": ids, "from": from_region}).all()
    return len(ids), [t[0] for t in tasks if t[1] == "queued"]


def set_fence(engine: Engine, fenced: bool, reason: str | None) -> bool:
    """Raise or lower this region's local fence. Returns True if it changed."""
    with engine.begin() as conn:
        result = conn.execute(text(
            """UPDATE local_fence SET fenced = :f, reason = :r, since = clock_timestamp()
                WHERE id = 1 AND fenced IS DISTINCT FROM :f"""
        ), {"f": fenced, "r": reason})
    return bool(result.rowcount)


def fence(engine: Engine) -> tuple[bool, str | None]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT fenced, reason FROM local_fence WHERE id = 1")).first()
    return (bool(row[0]), row[1]) if row else (False, None)


def own_heartbeat_age(engine: Engine, region: str) -> float | None:
    with engine.connect() as conn:
        age = conn.execute(text("SELECT extract(epoch FROM clock_timestamp() - beat_at) FROM heartbeats WHERE region = :r"),
                           {"r": region}).scalar()
    return None if age is None else float(age)


def tenants_homed_in_registry(engine: Engine, *, reasons: tuple[str, ...]) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT tenant_id FROM tenant_registry WHERE reason = ANY(:r)"),
                                 {"r": list(reasons)}).scalars())
