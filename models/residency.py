"""Statements about data residency: tenants' zone bindings and erasure receipts (all replicated)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, text


def tenant_hash(tenant_id: str) -> str:
    """The key of a tenant's erasure receipt: hex SHA-256 of its UTF-8 id (as lease.sql computes it)."""
    return hashlib.sha256(tenant_id.encode()).hexdigest()


def zone_binding(engine: Engine, tenant_id: str) -> tuple[str, int, tuple[str, ...] | None, int | None] | None:
    """(zone, binding epoch, the zone's regions, the zone row's epoch) of the tenant's live binding,
    or None; the last two are None while the zone's row has not reached this region (one read, so
    the binding and the membership placement uses are of one snapshot)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT t.zone, t.epoch, z.regions, z.epoch FROM tenant_zones t
                 LEFT JOIN zones z ON z.name = t.zone AND z.deleted_at IS NULL
                WHERE t.tenant_id = :t AND t.deleted_at IS NULL"""), {"t": tenant_id}).first()
    if row is None:
        return None
    return (str(row[0]), int(row[1]), None if row[2] is None else tuple(row[2]),
            None if row[3] is None else int(row[3]))


def zones(engine: Engine) -> dict[str, tuple[str, ...]]:
    """Zone -> its regions, as this region's copy of ``zones`` holds them (a removed zone: ())."""
    with engine.connect() as conn:
        return {r[0]: tuple(r[1]) for r in conn.execute(text(
            "SELECT name, regions FROM zones WHERE deleted_at IS NULL ORDER BY name"))}


def zone_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every zone row (removed ones with no regions), with its epoch and where it was last written."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT name, regions, epoch, origin_region, updated_at,
                      (SELECT count(*) FROM tenant_zones t WHERE t.zone = z.name AND t.deleted_at IS NULL) AS bound
                 FROM zones z WHERE deleted_at IS NULL ORDER BY name""")).mappings().all()
    return [dict(r) | {"regions": list(r["regions"])} for r in rows]


def set_zone_regions(engine: Engine, name: str, regions: list[str]) -> tuple[str, int]:
    """Define zone ``name`` as ``regions`` (an empty list removes it), serialized with every run
    creation here. A zone that tenants are bound to (in this region's copy) keeps its regions: a
    change would move its tenants between regions without the placer handing over. A new row starts
    at epoch 2, above a seed from a mesh file (epoch 1) that another region may write meanwhile.

    Returns ('set', epoch), ('unchanged', epoch), ('bound', number of bound tenants) or
    ('taken', 0) when one of ``regions`` is in another zone already (a region is in at most one).
    """
    with engine.begin() as conn:
        conn.execute(text("SELECT rm_lock_placement(NULL, true)"))
        row = conn.execute(text("SELECT regions, epoch FROM zones WHERE name = :n AND deleted_at IS NULL"),
                           {"n": name}).first()
        if row is not None and sorted(row[0]) == sorted(regions):
            return "unchanged", int(row[1])
        bound = int(conn.execute(text("SELECT count(*) FROM tenant_zones WHERE zone = :n AND deleted_at IS NULL"),
                                 {"n": name}).scalar_one())
        if bound:
            return "bound", bound
        taken = conn.execute(text(
            "SELECT 1 FROM zones WHERE name <> :n AND deleted_at IS NULL AND regions && CAST(:r AS text[])"),
            {"n": name, "r": regions}).first()
        if taken is not None:
            return "taken", 0
        epoch = conn.execute(text(
            """INSERT INTO zones (name, regions, epoch) VALUES (:n, CAST(:r AS text[]), 2)
               ON CONFLICT (name) DO UPDATE SET regions = EXCLUDED.regions, epoch = zones.epoch + 1
               RETURNING epoch"""), {"n": name, "r": regions}).scalar_one()
    return "set", int(epoch)


def seed_zones(engine: Engine, defined: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Insert the zones of a mesh file's ``[zones]`` this region has no row of, at epoch 1 (a zone
    changed or removed with ``regionmesh zones`` keeps what that wrote). Returns the zones inserted."""
    added: list[str] = []
    with engine.begin() as conn:
        for name, members in defined.items():
            if conn.execute(text("INSERT INTO zones (name, regions) VALUES (:n, CAST(:r AS text[])) "
                                 "ON CONFLICT (name) DO NOTHING"), {"n": name, "r": list(members)}).rowcount:
                added.append(name)
    return added


def erasure_fact(engine: Engine, tenant_id: str) -> tuple[int, bool]:
    """(epoch of the tenant's erasure receipt or 0, whether it is erased now)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT epoch, state FROM tenant_erasures WHERE tenant_hash = :h"),
                           {"h": tenant_hash(tenant_id)}).first()
    return (0, False) if row is None else (int(row[0]), row[1] == "erased")


def facts_version(engine: Engine) -> int:
    """Changes whenever a zone binding, a zone's membership or an erasure receipt changes (counts
    and newest stamps)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT (SELECT count(*) FROM tenant_zones), (SELECT max(updated_at) FROM tenant_zones)::text,
                      (SELECT count(*) FROM tenant_erasures), (SELECT max(updated_at) FROM tenant_erasures)::text,
                      (SELECT count(*) FROM zones), (SELECT max(updated_at) FROM zones)::text"""
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

    Returns ('bound', epoch), ('moved', 0) when the placement changed meanwhile, ('unknown_zone', 0)
    when this region has no row of the zone (``zones``) yet, or ('has_runs', count) when the tenant
    already has runs: they were replicated to every region before the binding, so binding now would
    promise a residency their copies do not have.
    """
    with engine.begin() as conn:
        conn.execute(text("SELECT rm_lock_placement(:t, true)"), {"t": tenant_id})
        now = conn.execute(text("SELECT rm_placement_version(:t)"), {"t": tenant_id}).scalar_one()
        if now != expect_version:
            return "moved", 0
        defined = conn.execute(text("SELECT 1 FROM zones WHERE name = :z AND deleted_at IS NULL "
                                    "AND cardinality(regions) > 0"), {"z": zone}).first()
        if defined is None:  # the zone's row has not reached the placer: its placement would be held
            return "unknown_zone", 0
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
