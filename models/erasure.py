"""Statements of tenant erasure: the receipt, a region's erasure of its own copy, confirmations.

The receipt (``tenant_erasures``) and the confirmations (``erasure_confirmations``) are keyed by
the SHA-256 of the tenant id, never the id. A region finds the tenant's rows from the hash alone
(``_tenant_ids``: the distinct tenant ids of the tables that name tenants, hashed here), so a
region that was down erases on its return from the replicated receipt.

A region erases its own copy through the delete rule's two steps (models/deletes.py): one
transaction, holding the tenant's placement lock and its runs' lock exclusively (so no run is
created and no completion of its runs commits meanwhile; a completion that started before waits
to be over first, one that starts after finds its task tombstoned), tombstones every row of the
tenant it holds (replicated updates under
``(epoch, updated_at, origin)``), the next removes those tombstones (replicated deletes that
receivers apply only to tombstones) with the tenant's rows of the local tables (outbox, dead
letters, resolved conflicts) and writes this region's confirmation at the receipt's epoch.
It does not wait for the other regions to hold the tombstones, as prune does: every region
erases its own copy, so a newer version a peer still holds (which wins there over this
region's tombstone) is removed by that peer's own pass.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from regionmesh.models import deletes

HASH = "encode(sha256(convert_to({col}, 'UTF8')), 'hex')"
TENANT_TABLES = tuple(table for table, _ in deletes.TENANT_ROWS)
ATTEMPT_ROWS = tuple((table, column) for table, column in deletes.RUN_ROWS if table == "step_attempts")


def _tenant_ids(conn: Connection, tenant_hash: str) -> list[str]:
    """The tenant ids held here whose hash is ``tenant_hash`` (one, or none)."""
    sources = " UNION ".join([
        "SELECT DISTINCT tenant_id AS t FROM workflow_runs",
        "SELECT DISTINCT tenant_id FROM run_summaries",
        *(f"SELECT tenant_id FROM {t}" for t in TENANT_TABLES),
        "SELECT DISTINCT tenant_id FROM dead_letters WHERE tenant_id IS NOT NULL",
        "SELECT DISTINCT payload->>'tenant_id' FROM outbox WHERE payload->>'tenant_id' IS NOT NULL",
        # Conflicts resolved here on tenant-keyed rows name the tenant in their key, and may be all
        # that is left of it once the peers' replicated removals took its rows.
        "SELECT DISTINCT split_part(pk, ',', 1) FROM replication_conflicts WHERE table_name IN ("
        + ", ".join(f"'{t}'" for t in TENANT_TABLES) + ")",
    ])
    return list(conn.execute(text(f"SELECT t FROM ({sources}) s WHERE {HASH.format(col='t')} = :h"),
                             {"h": tenant_hash}).scalars())


def _run_ids(conn: Connection, tenants: list[str]) -> list[Any]:
    return list(conn.execute(text(
        "SELECT id FROM workflow_runs WHERE tenant_id = ANY(:t) UNION SELECT run_id FROM run_summaries WHERE tenant_id = ANY(:t)"
    ), {"t": tenants}).scalars())


def _tombstone_txn(conn: Connection, tenants: list[str], run_ids: list[Any]) -> int:
    n = sum(deletes.tombstone_txn(conn, (*deletes.RUN_ROWS, *deletes.SUMMARY_ROWS), run_ids).values())
    # Claims do not take the tenant's lock: a claim that held its task's row lock when the step_tasks
    # statement reached it committed its attempt after the step_attempts statement's snapshot (the
    # statement waited for it). It is visible now; a claim that came later found the tombstone.
    n += sum(deletes.tombstone_txn(conn, ATTEMPT_ROWS, run_ids).values())
    return n + sum(deletes.tombstone_txn(conn, deletes.TENANT_ROWS, tenants).values())


def _remove_txn(conn: Connection, tenants: list[str], run_ids: list[Any]) -> dict[str, int]:
    counts = deletes.remove_txn(conn, (*deletes.RUN_ROWS, *deletes.SUMMARY_ROWS), run_ids)
    counts |= deletes.remove_txn(conn, deletes.TENANT_ROWS, tenants)
    # Local tables: what this region kept of the tenant's messages and of conflicts on its rows.
    counts["outbox"] = conn.execute(text(
        "DELETE FROM outbox WHERE run_id = ANY(:r) OR payload->>'tenant_id' = ANY(:t)"),
        {"r": run_ids, "t": tenants}).rowcount
    counts["dead_letters"] = conn.execute(text("DELETE FROM dead_letters WHERE tenant_id = ANY(:t)"),
                                          {"t": tenants}).rowcount
    for table in ("fair_queue", "fair_tenants"):  # fair dispatch's local accounts (0027)
        counts[table] = conn.execute(text(f"DELETE FROM {table} WHERE tenant_id = ANY(:t)"), {"t": tenants}).rowcount
    counts["fair_run_bands"] = conn.execute(text("DELETE FROM fair_run_bands WHERE run_id = ANY(:r)"),
                                            {"r": run_ids}).rowcount
    counts["replication_conflicts"] = conn.execute(text(
        """DELETE FROM replication_conflicts
            WHERE (table_name = ANY(:tt) AND split_part(pk, ',', 1) = ANY(:t))
               OR (table_name IN ('workflow_runs', 'run_summaries') AND pk = ANY(:r))"""),
        {"tt": list(TENANT_TABLES), "t": tenants, "r": [str(r) for r in run_ids]}).rowcount
    return {k: v for k, v in counts.items() if v}


def erase_here(engine: Engine, tenant_hash: str, epoch: int, region: str, *, confirm: bool = True) -> dict[str, int]:
    """Erase every row of the tenant whose hash is ``tenant_hash`` this region holds (tombstones,
    then their removal with the local tables' rows) and, with ``confirm``, write ``region``'s
    confirmation at the receipt's ``epoch`` in the same transaction as the removal.
    Returns rows removed per table."""
    with engine.begin() as conn:
        tenants = _tenant_ids(conn, tenant_hash)
        for t in tenants:  # serialized with run creation here, as a placement change is,
            conn.execute(text("SELECT rm_lock_placement(:t, true)"), {"t": t})
            # and with completions of its runs, which release tasks (rm_lock_tenant_runs, 0022)
            conn.execute(text("SELECT rm_lock_tenant_runs(:t, true)"), {"t": t})
        run_ids = _run_ids(conn, tenants) if tenants else []
        if tenants:
            _tombstone_txn(conn, tenants, run_ids)
    with engine.begin() as conn:
        removed = _remove_txn(conn, tenants, run_ids) if tenants else {}
        if confirm:
            conn.execute(text(
                """INSERT INTO erasure_confirmations (tenant_hash, region, rows_removed, epoch)
                   VALUES (:h, :r, :n, :e)
                   ON CONFLICT (tenant_hash, region) DO UPDATE SET epoch = EXCLUDED.epoch,
                          rows_removed = EXCLUDED.rows_removed, confirmed_at = clock_timestamp()"""),
                {"h": tenant_hash, "r": region, "n": sum(removed.values()), "e": epoch})
        elif removed:  # a later pass found more (rows a peer sent before it confirmed): count them
            conn.execute(text("UPDATE erasure_confirmations SET rows_removed = rows_removed + :n "
                              "WHERE tenant_hash = :h AND region = :r"),
                         {"h": tenant_hash, "r": region, "n": sum(removed.values())})
    return removed


def write_receipt(engine: Engine, tenant_id: str, tenant_hash: str, *, state: str, epoch: int,
                  regions: list[str], requested_region: str, requested_at: datetime | None) -> datetime:
    """Write the tenant's receipt (``state`` 'erased' or 'enabled') at ``epoch``, serialized with
    run creation here (rm_placement_version covers the receipt's epoch, so a run placed from the
    version before it is refused). Returns the receipt's ``requested_at``."""
    with engine.begin() as conn:
        conn.execute(text("SELECT rm_lock_placement(:t, true)"), {"t": tenant_id})
        at: datetime = conn.execute(text(
            """INSERT INTO tenant_erasures (tenant_hash, state, requested_region, requested_at, regions, epoch)
               VALUES (:h, :s, :q, coalesce(CAST(:at AS timestamptz), clock_timestamp()), CAST(:regions AS jsonb), :e)
               ON CONFLICT (tenant_hash) DO UPDATE SET state = EXCLUDED.state, epoch = EXCLUDED.epoch,
                      requested_region = CASE WHEN EXCLUDED.state = 'erased' THEN EXCLUDED.requested_region
                                              ELSE tenant_erasures.requested_region END,
                      requested_at = CASE WHEN EXCLUDED.state = 'erased' THEN EXCLUDED.requested_at
                                          ELSE tenant_erasures.requested_at END,
                      regions = CASE WHEN EXCLUDED.state = 'erased' THEN EXCLUDED.regions
                                     ELSE tenant_erasures.regions END
               RETURNING requested_at"""),
            {"h": tenant_hash, "s": state, "q": requested_region, "at": requested_at,
             "regions": json.dumps(regions), "e": epoch}).scalar_one()
    return at


def receipt(engine: Engine, tenant_hash: str) -> dict[str, Any] | None:
    """The receipt as this region holds it, with its confirmations: ``confirmed`` maps region ->
    (epoch, confirmed_at, rows_removed); None without a receipt."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT tenant_hash, state, epoch, requested_region, requested_at, regions, origin_region, updated_at
                 FROM tenant_erasures WHERE tenant_hash = :h"""), {"h": tenant_hash}).mappings().first()
        if row is None:
            return None
        confirmed = {r["region"]: (int(r["epoch"]), r["confirmed_at"], int(r["rows_removed"])) for r in conn.execute(text(
            "SELECT region, epoch, confirmed_at, rows_removed FROM erasure_confirmations WHERE tenant_hash = :h"),
            {"h": tenant_hash}).mappings()}
    return dict(row) | {"confirmed": confirmed}


def erasures(engine: Engine) -> list[tuple[str, int, list[str], dict[str, int]]]:
    """Every receipt in state 'erased' here: (tenant hash, epoch, regions asked, region -> confirmed epoch)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT e.tenant_hash, e.epoch, e.regions,
                      coalesce(jsonb_object_agg(c.region, c.epoch) FILTER (WHERE c.region IS NOT NULL), '{}'::jsonb)
                 FROM tenant_erasures e LEFT JOIN erasure_confirmations c ON c.tenant_hash = e.tenant_hash
                WHERE e.state = 'erased' AND e.deleted_at IS NULL
                GROUP BY e.tenant_hash, e.epoch, e.regions""")).all()
    return [(str(h), int(e), list(regions), {k: int(v) for k, v in conf.items()}) for h, e, regions, conf in rows]
