"""Dead-letter bodies a region outside a tenant's zone must not keep: which tenants to look at,
and dropping the bodies (ids, size, digest and the reason stay).

A refusal made before the tenant's zone binding reached this region kept the body like any
other; once the binding is here, the zone scrub (workers/zone_scrub.py) drops it.
"""

from __future__ import annotations

from sqlalchemy import Engine, text


def bindings_version(engine: Engine) -> tuple[int, str | None]:
    """Changes whenever a zone binding arrives, changes or is removed here: (count, newest stamp)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT count(*), max(updated_at)::text FROM tenant_zones")).one()
    return int(row[0]), None if row[1] is None else str(row[1])


def bound_tenants_with_bodies(engine: Engine) -> list[str]:
    """Tenants bound to a zone (as this region's registry holds it) whose dead letters here keep
    a body: the candidates of the zone scrub, usually none. A scan of ``dead_letters``, which may
    be large: the scrub runs it only while bindings have changed recently."""
    with engine.connect() as conn:
        return [str(t) for t in conn.execute(text(
            """SELECT DISTINCT d.tenant_id FROM dead_letters d
                WHERE d.payload IS NOT NULL AND d.tenant_id IS NOT NULL
                  AND EXISTS (SELECT 1 FROM tenant_zones z WHERE z.tenant_id = d.tenant_id AND z.deleted_at IS NULL)"""
        )).scalars()]


def drop_bodies(engine: Engine, tenants: list[str]) -> int:
    """Drop the body prefix of every dead letter of ``tenants``. Returns how many lost theirs."""
    if not tenants:
        return 0
    with engine.begin() as conn:
        return int(conn.execute(text(
            "UPDATE dead_letters SET payload = NULL WHERE tenant_id = ANY(:t) AND payload IS NOT NULL"),
            {"t": tenants}).rowcount)
