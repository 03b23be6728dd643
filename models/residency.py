"""Statements about data residency: tenants' zone bindings and erasure receipts (all replicated)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Connection, Engine, text


def tenant_hash(tenant_id: str) -> str:
    """The key of a tenant's erasure receipt: hex SHA-256 of its UTF-8 id (as lease.sql computes it)."""
    return hashlib.sha256(tenant_id.encode()).hexdigest()


def zone_binding(engine: Engine, tenant_id: str) -> tuple[str, int] | None:
    """(zone, epoch) of the tenant's live binding, or None."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT zone, epoch FROM tenant_zones WHERE tenant_id = :t AND deleted_at IS NULL"),
                           {"t": tenant_id}).first()
    return None if row is None else (str(row[0]), int(row[1]))


def erasure_fact(engine: Engine, tenant_id: str) -> tuple[int, bool]:
    """(epoch of the tenant's erasure receipt or 0, whether it is erased now)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT epoch, state FROM tenant_erasures WHERE tenant_hash = :h"),
                           {"h": tenant_hash(tenant_id)}).first()
    return (0, False) if row is None else (int(row[0]), row[1] == "erased")


def facts_version(engine: Engine) -> int:
    """Changes whenever a zone binding or an erasure receipt changes (counts and newest stamps)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT (SELECT count(*) FROM tenant_zones), (SELECT max(updated_at) FROM tenant_zones)::text,
                      (SELECT count(*) FROM tenant_erasures), (SELECT max(updated_at) FROM tenant_erasures)::text"""
        )).one()
    return hash(tuple(row))


def bound_counts(engine: Engine) -> dict[str, int]:
    """zone -> number of tenants bound to it (live bindings)."""
    with engine.connect() as conn:
        return {r[0]: int(r[1]) for r in conn.execute(text(
            "SELECT zone, count(*) FROM tenant_zones WHERE deleted_at IS NULL GROUP BY zone")).all()}


def _runs_of(conn: Connection, tenant_id: str) -> int:
    return int(conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id = :t"),
                            {"t": tenant_id}).scalar_one())


def set_zone(engine: Engine, tenant_id: str, zone: str, *, expect_version: str) -> tuple[str, int]:
    """Bind ``tenant_id`` to ``zone`` (epoch + 1), serialized with run creation here and only while
    the tenant's placement inputs are still ``expect_version``.

    Returns ('bound', epoch), ('moved', 0) when the placement changed meanwhile, or
    ('has_runs', count) when the tenant already has runs: they were replicated to every region
    before the binding, so binding now would promise a residency their copies do not have.
    """
    with engine.begin() as conn:
        conn.execute(text("SELECT rm_lock_placement(:t, true)"), {"t": tenant_id})
        now = conn.execute(text("SELECT rm_placement_version(:t)"), {"t": tenant_id}).scalar_one()
        if now != expect_version:
            return "moved", 0
        current = conn.execute(text("SELECT zone FROM tenant_zones WHERE tenant_id = :t AND deleted_at IS NULL"),
                               {"t": tenant_id}).scalar()
        if current != zone:
            runs = _runs_of(conn, tenant_id)
            if runs:
                return "has_runs", runs
        epoch = conn.execute(text(
            """INSERT INTO tenant_zones (tenant_id, zone, epoch) VALUES (:t, :z, 1)
               ON CONFLICT (tenant_id) DO UPDATE SET zone = EXCLUDED.zone, epoch = tenant_zones.epoch + 1
               RETURNING epoch"""), {"t": tenant_id, "z": zone}).scalar()
        if epoch is None:  # a tombstoned binding (the tenant was erased): never revived
            return "moved", 0
        return "bound", int(epoch)


def list_bindings(engine: Engine, limit: int = 1000) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT tenant_id, zone, epoch, origin_region, updated_at FROM tenant_zones WHERE deleted_at IS NULL "
            "ORDER BY tenant_id LIMIT :l"), {"l": limit}).mappings().all()
    return [dict(r) for r in rows]


def run_summary(engine: Engine, run_id: Any) -> dict[str, Any] | None:
    """The metadata of a zoned run as every region holds it (``run_summaries``), or None."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT run_id, tenant_id, workflow, zone, status, owner_region, steps, created_at, finished_at, epoch
                 FROM run_summaries WHERE run_id = :r AND deleted_at IS NULL"""), {"r": run_id}).mappings().first()
    return None if row is None else dict(row)


def summarized(engine: Engine, run_ids: list[Any]) -> set[Any]:
    """The runs among ``run_ids`` this region knows only by their summary: a zoned tenant's runs
    outside its zone, whose payload rows never come here but whose metadata does."""
    if not run_ids:
        return set()
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT run_id FROM run_summaries WHERE run_id = ANY(:ids)"),
                                {"ids": list(run_ids)}).scalars())
