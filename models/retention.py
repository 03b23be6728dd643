"""Retention: which finished runs are old enough to delete, through the one delete path.

The rows go through models/deletes.py: tombstones first (replicated updates under the
conflict rule), removed only after every region holds them (the caller waits for
replication to drain between the two, replication/retention.py).
"""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, text

from regionmesh.models import deletes

FINISHED = ("succeeded", "failed", "cancelled")


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
        return ids, deletes.tombstone_txn(conn, deletes.RUN_ROWS, ids)


def purge_tombstones(engine: Engine, run_ids: list[uuid.UUID], grace_s: float) -> dict[str, int]:
    """Remove the tombstones of ``run_ids`` (which every region holds: the caller waited for
    replication to drain), and any tombstone older than ``grace_s`` a previous purge left.
    Replicates as DELETEs that receivers apply only to tombstones. Returns rows per table."""
    with engine.begin() as conn:
        # A zoned run's summary (everywhere) was tombstoned with it by rm_zone_summary (payload.sql).
        return deletes.remove_txn(conn, (*deletes.RUN_ROWS, *deletes.SUMMARY_ROWS), run_ids, older_than_s=grace_s)
