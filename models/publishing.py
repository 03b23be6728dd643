"""Every statement about what a region publishes: the publication of the replicated tables, the
payload tables' per-destination publications and their zone row filters, and reading them back."""

from __future__ import annotations

from sqlalchemy import Engine, text

from regionmesh.models.quoting import literal
from regionmesh.models.replicated_tables import replicated_tables_in_catalog
from regionmesh.models.tables import REPLICATED_TABLES, ZONED_TABLES


def ensure_publication(engine: Engine, name: str, replication_role: str, *, with_payload: bool = False) -> list[str]:
    """One publication of the replicated tables only (never FOR ALL TABLES), no TRUNCATE;
    the replication role may read exactly those tables. The replicated tables are the ones
    with the replica conflict triggers (``REPLICATED_TABLES`` on a database that has none yet).
    The payload tables (``ZONED_TABLES``) go per destination (:func:`ensure_zoned_publication`)
    and are left out, unless ``with_payload``: a subscriber that does not subscribe to its
    per-destination publication yet still needs them here (the switch, replication/publications.py).
    Returns the tables added to an existing publication."""
    with engine.begin() as conn:
        wanted = [t for t in replicated_tables_in_catalog(conn) or list(REPLICATED_TABLES)
                  if with_payload or t not in ZONED_TABLES]
        tables = ", ".join(f'"{t}"' for t in wanted)
        exists = conn.execute(text("SELECT 1 FROM pg_publication WHERE pubname = :n"), {"n": name}).scalar()
        added: list[str] = []
        if exists:
            had = set(conn.execute(text("SELECT tablename FROM pg_publication_tables WHERE pubname = :n"),
                                   {"n": name}).scalars())
            added = [t for t in wanted if t not in had]
            conn.execute(text(f"ALTER PUBLICATION {name} SET TABLE {tables}"))
            conn.execute(text(f"ALTER PUBLICATION {name} SET (publish = 'insert, update, delete')"))
        else:
            conn.execute(text(f"CREATE PUBLICATION {name} FOR TABLE {tables} WITH (publish = 'insert, update, delete')"))
        role_exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": replication_role}).scalar()
        if role_exists:
            conn.execute(text(f'GRANT SELECT ON {tables} TO "{replication_role}"'))
    return added


def zone_filter(zones: list[str]) -> str:
    """The row filter of a destination's payload publication: unzoned rows, and rows of its zones."""
    return "(zone IN (" + ", ".join(literal(z) for z in ["", *sorted(zones)]) + "))"


def ensure_zoned_publication(engine: Engine, name: str, zones: list[str], replication_role: str) -> None:
    """The payload tables (``ZONED_TABLES``) for one destination, filtered on their ``zone`` (a
    replica-identity column, so updates and deletes are filtered too): PostgreSQL never sends a
    row of another zone to that destination. Recreated with the current filter every time."""
    with engine.begin() as conn:
        where = zone_filter(zones)
        tables = ", ".join(f'"{t}" WHERE {where}' for t in ZONED_TABLES)
        exists = conn.execute(text("SELECT 1 FROM pg_publication WHERE pubname = :n"), {"n": name}).scalar()
        if exists:
            conn.execute(text(f"ALTER PUBLICATION {name} SET TABLE {tables}"))
        else:
            conn.execute(text(f"CREATE PUBLICATION {name} FOR TABLE {tables} WITH (publish = 'insert, update, delete')"))
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": replication_role}).scalar():
            conn.execute(text(f'GRANT SELECT ON {", ".join(ZONED_TABLES)} TO "{replication_role}"'))


def publication_filters(engine: Engine, name: str) -> dict[str, str | None]:
    """table -> row filter of publication ``name`` (None: unfiltered)."""
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text(
            "SELECT tablename::text, rowfilter FROM pg_publication_tables WHERE pubname = :n"), {"n": name}).all()}


def publication_tables(engine: Engine, name: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(
            text("SELECT tablename FROM pg_publication_tables WHERE pubname = :n ORDER BY tablename"), {"n": name}
        ).scalars())


def publication_flags(engine: Engine, name: str) -> dict[str, bool]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = :n"),
            {"n": name},
        ).mappings().first()
    return dict(row) if row else {}
