"""The one path that deletes replicated rows: tombstone, then remove once every region holds it.

A delete is first an UPDATE that sets ``deleted_at`` (rm_stamp stamps it with this
region and a later ``updated_at``), so it competes with concurrent writes under the
conflict rule like any other version of the row; ``rm_keep_tombstone`` keeps local
writes from reviving it. The physical DELETE comes after replication drained, and
the receivers' ``rm_conflict_del`` removes only a tombstone (models/sql/deletes.sql).
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, Engine, text

FINISHED = ("succeeded", "failed", "cancelled")
# A run's rows, children first (the order of removal).
RUN_CHILDREN = ("step_attempts", "step_tasks", "workflow_steps")


def _tombstone_txn(conn: Connection, run_ids: list[uuid.UUID]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in RUN_CHILDREN:
        counts[table] = conn.execute(text(
            f"UPDATE {table} SET deleted_at = clock_timestamp() WHERE run_id = ANY(:ids) AND deleted_at IS NULL"
        ), {"ids": run_ids}).rowcount
    counts["workflow_runs"] = conn.execute(text(
        "UPDATE workflow_runs SET deleted_at = clock_timestamp() WHERE id = ANY(:ids) AND deleted_at IS NULL"
    ), {"ids": run_ids}).rowcount
    return counts


def tombstone_finished_runs(engine: Engine, older_than_s: float, limit: int) -> tuple[list[uuid.UUID], dict[str, int]]:
    """Tombstone up to ``limit`` runs that finished more than ``older_than_s`` ago, with their
    steps, tasks and attempts, in one transaction. A run that is being retried (locked, or no
    longer finished) is left alone. Returns the run ids and rows tombstoned per table."""
    with engine.begin() as conn:
        ids = list(conn.execute(text(
            """SELECT id FROM workflow_runs
                WHERE status = ANY(:done) AND deleted_at IS NULL
                  AND finished_at < clock_timestamp() - make_interval(secs => :age)
                ORDER BY finished_at LIMIT :n FOR UPDATE SKIP LOCKED"""
        ), {"done": list(FINISHED), "age": older_than_s, "n": limit}).scalars())
        if not ids:
            return [], {}
        return ids, _tombstone_txn(conn, ids)


def purge_tombstones(engine: Engine, run_ids: list[uuid.UUID], grace_s: float) -> dict[str, int]:
    """Remove the tombstones of ``run_ids`` (which every region holds: the caller waited for
    replication to drain), and any tombstone older than ``grace_s`` a previous purge left.
    Replicates as DELETEs that receivers apply only to tombstones. Returns rows per table."""
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        for table, key in ((t, "run_id") for t in RUN_CHILDREN):
            counts[table] = conn.execute(text(
                f"""DELETE FROM {table} WHERE deleted_at IS NOT NULL
                      AND ({key} = ANY(:ids) OR deleted_at < clock_timestamp() - make_interval(secs => :g))"""
            ), {"ids": run_ids, "g": grace_s}).rowcount
        counts["workflow_runs"] = conn.execute(text(
            """DELETE FROM workflow_runs WHERE deleted_at IS NOT NULL
                 AND (id = ANY(:ids) OR deleted_at < clock_timestamp() - make_interval(secs => :g))"""
        ), {"ids": run_ids, "g": grace_s}).rowcount
        # A zoned run's summary (everywhere) was tombstoned with it by rm_zone_summary (payload.sql).
        counts["run_summaries"] = conn.execute(text(
            """DELETE FROM run_summaries WHERE deleted_at IS NOT NULL
                 AND (run_id = ANY(:ids) OR deleted_at < clock_timestamp() - make_interval(secs => :g))"""
        ), {"ids": run_ids, "g": grace_s}).rowcount
    return counts
