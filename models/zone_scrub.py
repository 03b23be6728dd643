"""Dead-letter bodies a region outside a tenant's zone must not keep: which tenants to look at,
and dropping the bodies (ids, size, digest and the reason stay).

A refusal made before the tenant's zone binding reached this region kept the body like any
other; once the binding is here, the zone scrub (workers/zone_scrub.py) drops it.
"""

from __future__ import annotations

from sqlalchemy import Engine, text


def bound_tenants_with_bodies(engine: Engine) -> list[str]:
    """Tenants bound to a zone (as this region's registry holds it) whose dead letters here keep
    a body: the candidates of the zone scrub, usually none."""
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
