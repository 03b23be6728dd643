"""The replicated tables as a set: which they are (the catalog's replica conflict triggers),
their triggers regenerated after a migration, whether the payload tables are zoned, whether a
region holds any of their rows, and emptying them to rebuild a region."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from regionmesh.models.tables import REPLICATED_TABLES, ZONED_TABLES


def replicated_tables_in_catalog(conn: Connection) -> list[str]:
    """The tables carrying the replica conflict triggers (what marks a table replicated), by name."""
    return list(conn.execute(text(
        """SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE t.tgname = 'rm_conflict_ins' AND NOT t.tgisinternal ORDER BY c.relname"""
    )).scalars())


def regenerate_replica_triggers(conn: Connection) -> list[str]:
    """Regenerate every replicated table's replica triggers from its current columns, in the
    caller's transaction: a migration that changes a replicated table calls this after its DDL,
    so the apply worker never runs a function with a stale column list. Returns the tables."""
    tables = replicated_tables_in_catalog(conn)
    has_delete_rules = conn.execute(text("SELECT to_regprocedure('rm_install_delete_rules(regclass)') IS NOT NULL")).scalar()
    for table in tables:
        conn.execute(text("SELECT rm_install_conflict_triggers(CAST(:t AS regclass))"), {"t": table})
        if has_delete_rules:
            conn.execute(text("SELECT rm_install_delete_rules(CAST(:t AS regclass))"), {"t": table})
    return tables


def payload_zoned(engine: Engine) -> bool:
    """Whether this database's payload tables carry ``zone`` (0013): only then are they published
    per destination; before it, ``rm_pub`` carries them like any other table."""
    with engine.connect() as conn:
        # Counted over the payload tables this schema has: those of 0026 (schedules, run_signals)
        # were created with zone, and a database before 0026 has none of them.
        return bool(conn.execute(text(
            """SELECT count(c.column_name) = count(*) AND count(*) > 0
                 FROM information_schema.tables t LEFT JOIN information_schema.columns c
                   ON c.table_schema = t.table_schema AND c.table_name = t.table_name AND c.column_name = 'zone'
                WHERE t.table_schema = current_schema() AND t.table_name = ANY(:t)"""
        ), {"t": list(ZONED_TABLES)}).scalar())


def has_rows(engine: Engine) -> bool:
    with engine.connect() as conn:
        return any(conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {t})")).scalar() for t in REPLICATED_TABLES)


def wipe_replicated_tables(engine: Engine) -> list[str]:
    """Empty this region's copy of every replicated table, locally: TRUNCATE does not replicate,
    and its refusal is lifted inside this one transaction only (the ALTERs lock each table, so no
    other session sees it lifted). Only for rebuilding a region (``region resync``). Returns the tables."""
    with engine.begin() as conn:
        tables = replicated_tables_in_catalog(conn)
        if not tables:  # a database not yet migrated holds none
            return []
        for t in tables:
            conn.execute(text(f'ALTER TABLE "{t}" DISABLE TRIGGER rm_no_truncate'))
        conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)))
        for t in tables:
            conn.execute(text(f'ALTER TABLE "{t}" ENABLE ALWAYS TRIGGER rm_no_truncate'))
    return tables
