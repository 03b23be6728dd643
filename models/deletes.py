"""The one path that deletes replicated rows: tombstone, then remove.

A delete is first an UPDATE that sets ``deleted_at`` (rm_stamp stamps it with this
region and a later ``updated_at``), so it competes with concurrent writes under the
conflict rule like any other version of the row; ``rm_keep_tombstone`` keeps local
writes from reviving it. The physical DELETE comes second and removes tombstones
only: ``rm_no_live_delete`` refuses a local delete of a live row and the receivers'
``rm_conflict_del`` applies a replicated delete to a tombstone only
(models/sql/deletes.sql). Retention (models/retention.py) and erasure
(models/erasure.py) choose which rows; these two functions are the only statements
that tombstone or remove them.

A table is named with the column that picks its rows: ``("workflow_runs", "id")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

Rows = Sequence[tuple[str, str]]
# A run's rows, children first (the order of removal); the summary every region holds of a zoned run.
RUN_ROWS: Rows = (("duplicate_submissions", "run_id"), ("step_attempts", "run_id"), ("step_tasks", "run_id"),
                  ("workflow_steps", "run_id"), ("workflow_runs", "id"))
SUMMARY_ROWS: Rows = (("run_summaries", "run_id"),)
# The replicated tables keyed by tenant.
TENANT_ROWS: Rows = (("tenant_registry", "tenant_id"), ("tenant_registry_history", "tenant_id"),
                     ("tenant_zones", "tenant_id"), ("console_actions", "tenant_id"),
                     # schedules, their tick state and buffered signals (0026): an erasure stops the ticks
                     ("schedules", "tenant_id"), ("schedule_ticks", "tenant_id"), ("run_signals", "tenant_id"),
                     # a tenant's weight and limits (0027)
                     ("tenant_shares", "tenant_id"))


def tombstone_txn(conn: Connection, rows: Rows, ids: Sequence[Any]) -> dict[str, int]:
    """Set ``deleted_at`` on the live rows of each (table, column) whose column is in ``ids``,
    in the caller's transaction. Returns rows tombstoned per table."""
    return {table: conn.execute(text(
        f"UPDATE {table} SET deleted_at = clock_timestamp() WHERE {column} = ANY(:ids) AND deleted_at IS NULL"
    ), {"ids": list(ids)}).rowcount for table, column in rows}


def remove_txn(conn: Connection, rows: Rows, ids: Sequence[Any], *, older_than_s: float | None = None) -> dict[str, int]:
    """Remove the tombstones of each (table, column) whose column is in ``ids`` and, with
    ``older_than_s``, any tombstone of that table older than that (one an earlier pass left),
    in the caller's transaction. A row revived by a newer version since it was tombstoned is
    live again and stays. Returns rows removed per table."""
    older = " OR deleted_at < clock_timestamp() - make_interval(secs => :g)" if older_than_s is not None else ""
    return {table: conn.execute(text(
        f"DELETE FROM {table} WHERE deleted_at IS NOT NULL AND ({column} = ANY(:ids){older})"
    ), {"ids": list(ids), "g": older_than_s}).rowcount for table, column in rows}
