"""Statements of schedules and their ticks (0026): define, list, pause, delete a tenant's
schedules; what the firing region reads each pass and writes after a tick.

A schedule row is edited in any region (last writer wins under the conflict rule); its tick state
lives in ``schedule_ticks``, written only by the region that fires it, at the tenant's registry
epoch, so a tick never overwrites an operator's edit and a stale firer's write loses.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from regionmesh.models import deletes

COLUMNS = ("tenant_id", "name", "cron", "every_s", "tz", "workflow", "input", "overlap", "catch_up", "jitter_s",
           "paused", "note", "created_at", "zone", "origin_region", "updated_at")


@dataclass(frozen=True)
class Due:
    """A live, unpaused schedule with its tick state, as the ticker reads it."""

    tenant_id: str
    name: str
    cron: str | None
    every_s: float | None
    tz: str
    workflow: str
    input: Any
    overlap: str
    catch_up: str
    jitter_s: float
    created_at: datetime
    last_tick: datetime | None
    last_run_id: uuid.UUID | None
    buffered_tick: datetime | None
    last_run_running: bool


def upsert(engine: Engine, row: dict[str, Any]) -> None:
    """Create or replace a tenant's schedule (a deleted one of the same name comes back; its tick
    state starts again from now, not from before the delete)."""
    with engine.begin() as conn:
        # The tenant's schedules deleted here before go first (the delete path's second step, for
        # its tombstones; replicated in order, so every peer removes them before the new row comes).
        deletes.remove_txn(conn, (("schedule_ticks", "tenant_id"), ("schedules", "tenant_id")), [row["tenant_id"]])
        conn.execute(text(
            """INSERT INTO schedules (tenant_id, name, cron, every_s, tz, workflow, input, overlap, catch_up,
                                      jitter_s, paused, note)
               VALUES (:tenant_id, :name, :cron, :every_s, :tz, :workflow, CAST(:input AS jsonb), :overlap,
                       :catch_up, :jitter_s, :paused, :note)
               ON CONFLICT (tenant_id, name) DO UPDATE SET cron = EXCLUDED.cron, every_s = EXCLUDED.every_s,
                      tz = EXCLUDED.tz, workflow = EXCLUDED.workflow, input = EXCLUDED.input,
                      overlap = EXCLUDED.overlap, catch_up = EXCLUDED.catch_up, jitter_s = EXCLUDED.jitter_s,
                      paused = EXCLUDED.paused, note = EXCLUDED.note"""),
            row | {"input": json.dumps(row["input"])})


def get(engine: Engine, tenant_id: str, name: str) -> dict[str, Any] | None:
    """One live schedule with its tick state, as plain data; None if there is none here."""
    with engine.connect() as conn:
        row = conn.execute(text(
            f"""SELECT {', '.join('s.' + c for c in COLUMNS)}, k.last_tick, k.last_run_id, k.buffered_tick,
                       k.fired_region, k.fired_at
                  FROM schedules s LEFT JOIN schedule_ticks k
                    ON k.tenant_id = s.tenant_id AND k.name = s.name AND k.deleted_at IS NULL
                 WHERE s.tenant_id = :t AND s.name = :n AND s.deleted_at IS NULL"""),
            {"t": tenant_id, "n": name}).mappings().first()
    return None if row is None else dict(row)


def list_for(engine: Engine, tenant_id: str | None) -> list[dict[str, Any]]:
    """A tenant's live schedules (every tenant's with None), by tenant and name."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            f"""SELECT {', '.join('s.' + c for c in COLUMNS)}, k.last_tick, k.last_run_id, k.fired_region
                  FROM schedules s LEFT JOIN schedule_ticks k
                    ON k.tenant_id = s.tenant_id AND k.name = s.name AND k.deleted_at IS NULL
                 WHERE s.deleted_at IS NULL AND (CAST(:t AS text) IS NULL OR s.tenant_id = :t)
                 ORDER BY s.tenant_id, s.name"""), {"t": tenant_id}).mappings().all()
    return [dict(r) for r in rows]


def set_paused(engine: Engine, tenant_id: str, name: str, paused: bool, note: str | None) -> bool:
    """Pause or resume. Returns False when there is no such live schedule here."""
    with engine.begin() as conn:
        return bool(conn.execute(text(
            """UPDATE schedules SET paused = :p, note = coalesce(:note, note)
                WHERE tenant_id = :t AND name = :n AND deleted_at IS NULL"""),
            {"t": tenant_id, "n": name, "p": paused, "note": note}).rowcount)


def delete(engine: Engine, tenant_id: str, name: str) -> bool:
    """Tombstone a schedule and its tick state (the delete path's first step; the tombstones
    replicate and stop the ticks everywhere). Returns False when there was none here."""
    with engine.begin() as conn:
        n = conn.execute(text(
            """UPDATE schedules SET deleted_at = clock_timestamp()
                WHERE tenant_id = :t AND name = :n AND deleted_at IS NULL"""), {"t": tenant_id, "n": name}).rowcount
        conn.execute(text(
            """UPDATE schedule_ticks SET deleted_at = clock_timestamp()
                WHERE tenant_id = :t AND name = :n AND deleted_at IS NULL"""), {"t": tenant_id, "n": name})
    return bool(n)


def db_now(engine: Engine) -> datetime:
    """This region's database clock: what decides when a tick is due here."""
    with engine.connect() as conn:
        now: datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    return now


def due_candidates(engine: Engine) -> list[Due]:
    """Every live, unpaused schedule held here with its tick state and whether its last run is
    still running (for the overlap policy). The caller keeps those its region places."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT s.tenant_id, s.name, s.cron, s.every_s, s.tz, s.workflow, s.input, s.overlap, s.catch_up,
                      s.jitter_s, s.created_at, k.last_tick, k.last_run_id, k.buffered_tick,
                      coalesce(r.status = 'running', rs.status = 'running', false) AS last_run_running
                 FROM schedules s
                 LEFT JOIN schedule_ticks k ON k.tenant_id = s.tenant_id AND k.name = s.name AND k.deleted_at IS NULL
                 LEFT JOIN workflow_runs r ON r.id = k.last_run_id
                 LEFT JOIN run_summaries rs ON rs.run_id = k.last_run_id
                WHERE s.deleted_at IS NULL AND NOT s.paused""")).all()
    return [Due(*r) for r in rows]


def record_tick(engine: Engine, tenant_id: str, name: str, *, last_tick: datetime, run_id: uuid.UUID | None,
                buffered_tick: datetime | None, region: str, epoch: int) -> None:
    """The firing region's note of what it did: the newest tick handled, its run, the buffered
    tick (overlap buffer_one), at the tenant's registry ``epoch`` (a higher one wins under the
    conflict rule, so a region that fired from a stale placement loses to the heir). last_tick
    never goes back."""
    with engine.begin() as conn:
        conn.execute(text(
            """INSERT INTO schedule_ticks (tenant_id, name, last_tick, last_run_id, buffered_tick, fired_region,
                                           fired_at, epoch)
               VALUES (:t, :n, :tick, :run, :buf, :region, clock_timestamp(), :epoch)
               ON CONFLICT (tenant_id, name) DO UPDATE SET
                      last_tick = greatest(schedule_ticks.last_tick, EXCLUDED.last_tick),
                      last_run_id = coalesce(EXCLUDED.last_run_id, schedule_ticks.last_run_id),
                      buffered_tick = EXCLUDED.buffered_tick, fired_region = EXCLUDED.fired_region,
                      fired_at = EXCLUDED.fired_at, epoch = greatest(schedule_ticks.epoch, EXCLUDED.epoch)"""),
            {"t": tenant_id, "n": name, "tick": last_tick, "run": run_id, "buf": buffered_tick, "region": region,
             "epoch": epoch})
