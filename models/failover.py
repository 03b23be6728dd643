"""Statements for failover, moves, restore and the local fence."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text


def set_region_status(engine: Engine, region: str, status: str, successor: str | None,
                      *, expect_from: tuple[str, ...]) -> int | None:
    """Mark ``region`` (epoch + 1) if its status here is one of ``expect_from`` (a missing row is
    'active'), serialized with every run creation here. Returns the new epoch, or None."""
    with engine.begin() as conn:
        conn.execute(text("SELECT rm_lock_placement(NULL, true)"))
        current = conn.execute(text("SELECT status FROM regions WHERE name = :r"), {"r": region}).scalar()
        if (current or "active") not in expect_from:
            return None
        return int(conn.execute(text(
            """INSERT INTO regions (name, status, failed_over_to, epoch) VALUES (:r, :s, :t, 2)
               ON CONFLICT (name) DO UPDATE SET status = EXCLUDED.status, failed_over_to = EXCLUDED.failed_over_to,
                                                epoch = regions.epoch + 1
               RETURNING epoch"""
        ), {"r": region, "s": status, "t": successor}).scalar_one())




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


def victim_work(engine: Engine, victim: str, also: list[str], *, since: datetime | None = None,
                since_all: bool = False) -> dict[str, dict[str, Any]]:
    """``victim``'s running runs as this region's copy holds them, the runs ``also`` names whatever
    their owner and status, and with ``since`` (or ``since_all``) every run of the victim created at
    or after it (by the victim's clock, which stamped them): run id -> owner, status and its tasks
    (id -> step key, index, status, attempt). What the failover compares between heir and peers."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT r.id::text AS run, r.owner_region, r.status AS run_status, t.id::text AS task, t.step_key,
                      t.idx, t.status, t.attempt
                 FROM workflow_runs r LEFT JOIN step_tasks t ON t.run_id = r.id AND t.deleted_at IS NULL
                WHERE (r.owner_region = :v AND (r.status = 'running' OR :all
                                                OR r.created_at >= CAST(:since AS timestamptz)))
                   OR r.id = ANY(CAST(:also AS uuid[]))"""
        ), {"v": victim, "also": also, "since": since, "all": since_all}).mappings().all()
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        run = out.setdefault(r["run"], {"owner": r["owner_region"], "status": r["run_status"], "tasks": {}})
        if r["task"] is not None:
            run["tasks"][r["task"]] = (r["step_key"], r["idx"], r["status"], int(r["attempt"]))
    return out


def latest_created(engine: Engine, victim: str) -> datetime | None:
    """When the newest run this region's copy gives ``victim`` was created (the victim's clock)."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT max(created_at) FROM workflow_runs WHERE owner_region = :v"),
                            {"v": victim}).scalar()
