"""Statements about the tenant registry and region statuses (both replicated)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text


def region_rows(engine: Engine) -> dict[str, tuple[str, str | None, int]]:
    """name -> (status, successor, epoch) of every region row."""
    with engine.connect() as conn:
        return {r[0]: (r[1], r[2], int(r[3])) for r in conn.execute(
            text("SELECT name, status, failed_over_to, epoch FROM regions")).all()}


def region_statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text("SELECT name, status FROM regions")).all()}


def registry_version(engine: Engine) -> int:
    """Changes whenever any registry row changes (count and newest stamp)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT count(*), coalesce(extract(epoch FROM max(updated_at)) * 1000000, 0)::bigint FROM tenant_registry"
        )).one()
    return hash((int(row[0]), int(row[1])))


def registry_entry(engine: Engine, tenant_id: str) -> tuple[str, str, str, int] | None:
    """(tenant_id, home_region, reason, epoch) or None."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT tenant_id, home_region, reason, epoch FROM tenant_registry WHERE tenant_id = :t"),
            {"t": tenant_id},
        ).first()
    return None if row is None else (row[0], row[1], row[2], int(row[3]))


def set_home(engine: Engine, tenant_id: str, home_region: str, reason: str, note: str | None = None,
             *, expect_version: str | None = None) -> int | None:
    """Write a registry row with the next epoch (epochs only grow). Returns the new epoch.

    With ``expect_version`` the write happens only while the tenant's placement inputs here are
    still those (see ``rm_placement_version``), serialized with run creation: returns None when
    they changed.
    """
    with engine.begin() as conn:
        conn.execute(text("SELECT rm_lock_placement(:t, true)"), {"t": tenant_id})
        if expect_version is not None:
            now = conn.execute(text("SELECT rm_placement_version(:t)"), {"t": tenant_id}).scalar_one()
            if now != expect_version:
                return None
        epoch = int(conn.execute(text(
            """INSERT INTO tenant_registry (tenant_id, home_region, reason, note, epoch)
               VALUES (:t, :h, :r, :n, 1)
               ON CONFLICT (tenant_id) DO UPDATE
                  SET home_region = EXCLUDED.home_region, reason = EXCLUDED.reason, note = EXCLUDED.note,
                      epoch = tenant_registry.epoch + 1
               RETURNING epoch"""
        ), {"t": tenant_id, "h": home_region, "r": reason, "n": note}).scalar_one())
        conn.execute(text(
            """INSERT INTO tenant_registry_history (tenant_id, epoch, home_region, reason, note)
               VALUES (:t, :e, :h, :r, :n) ON CONFLICT DO NOTHING"""
        ), {"t": tenant_id, "e": epoch, "h": home_region, "r": reason, "n": note})
        return epoch


def list_entries(engine: Engine, limit: int = 1000) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT tenant_id, home_region, reason, epoch, note, origin_region, updated_at FROM tenant_registry "
            "ORDER BY tenant_id LIMIT :l"), {"l": limit}).mappings().all()
    return [dict(r) for r in rows]


def history(engine: Engine, tenant_id: str) -> list[dict[str, Any]]:
    """Every recorded change of the tenant's intent, oldest first, as this region's copy holds them."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT epoch, home_region, reason, note, origin_region AS written_in, updated_at AS at
                 FROM tenant_registry_history WHERE tenant_id = :t AND deleted_at IS NULL ORDER BY epoch"""
        ), {"t": tenant_id}).mappings().all()
    return [dict(r) for r in rows]
