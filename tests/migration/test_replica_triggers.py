"""At every revision, each replicated table's conflict functions list exactly its columns.

The generated insert function copies ``(NEW).*`` into a column list fixed when it was
generated; a migration that changes a replicated table's columns without regenerating
it (``replicated_tables.regenerate_replica_triggers``) leaves a function that fails every
replicated insert ("INSERT has more expressions than target columns") and stalls the
link. This test walks the history one revision at a time and fails at such a revision.

It also holds every revision to expand-only on replicated tables: ``regionmesh migrate``
upgrades a live mesh region by region, and a region that already dropped a column fails on
every row a peer still sends with it ("missing replicated column"). A removal needs a
procedure of its own (docs/howto/upgrade.md); a revision that drops a replicated column or
table fails here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from alembic import command
from sqlalchemy import Connection, Engine, text

from regionmesh.models import replicated_tables
from regionmesh.ops.migrate import alembic_config, script


def stale_conflict_functions(conn: Connection) -> dict[str, tuple[list[str], list[str]]]:
    """Tables whose generated insert function lists other columns than the table has:
    table -> (columns of the function, columns of the table)."""
    out = {}
    for table in replicated_tables.replicated_tables_in_catalog(conn):
        body = conn.execute(text("SELECT pg_get_functiondef(to_regproc(:f))"), {"f": f"rm_conflict_ins_{table}"}).scalar()
        match = re.search(rf"INSERT INTO {table} \(([^)]*)\)", body or "")
        listed = [c.strip().strip('"') for c in match.group(1).split(",")] if match else []
        columns = list(conn.execute(text(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum"), {"t": table}).scalars())
        if listed != columns:
            out[table] = (listed, columns)
    return out


def replicated_columns(conn: Connection) -> dict[str, set[str]]:
    return {table: set(conn.execute(text(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 "
        "AND NOT attisdropped"), {"t": table}).scalars()) for table in replicated_tables.replicated_tables_in_catalog(conn)}


def removed(before: dict[str, set[str]], after: dict[str, set[str]]) -> list[str]:
    """Replicated tables, and columns of replicated tables, in ``before`` and not in ``after``."""
    return [t if t not in after else f"{t}.{c}" for t in before for c in ([""] if t not in after else before[t] - after[t])]


def test_every_revision_leaves_the_conflict_functions_matching_the_columns(new_database: Callable[[str], Engine]) -> None:
    engine = new_database("rm_replica_triggers")
    cfg = alembic_config(engine)
    revisions = [r.revision for r in reversed(list(script().walk_revisions()))]
    checked = 0
    before: dict[str, set[str]] = {}
    for rev in revisions:
        command.upgrade(cfg, rev)
        with engine.connect() as conn:
            assert stale_conflict_functions(conn) == {}, f"revision {rev} changed a replicated table without regenerating"
            checked += bool(replicated_tables.replicated_tables_in_catalog(conn))
            after = replicated_columns(conn)
        assert removed(before, after) == [], f"revision {rev} removes from replicated tables: not on a live mesh"
        before = after
    assert checked >= 2  # from 0004 (the first conflict triggers) on


def test_the_check_sees_a_replicated_column_or_table_removed() -> None:
    before = {"tenant_registry": {"tenant_id", "note"}, "regions": {"name"}}
    assert removed(before, {"tenant_registry": {"tenant_id", "note", "new"}, "regions": {"name"}}) == []
    assert removed(before, {"tenant_registry": {"tenant_id"}, "regions": {"name"}}) == ["tenant_registry.note"]
    assert removed(before, {"tenant_registry": {"tenant_id", "note"}}) == ["regions"]


def test_the_check_sees_a_column_added_without_regenerating(new_database: Callable[[str], Engine]) -> None:
    engine = new_database("rm_replica_triggers_stale")
    command.upgrade(alembic_config(engine), "head")
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE tenant_registry ADD COLUMN planted text"))
        assert set(stale_conflict_functions(conn)) == {"tenant_registry"}
        replicated_tables.regenerate_replica_triggers(conn)
        assert stale_conflict_functions(conn) == {}


def test_truncate_is_refused_and_tombstones_are_kept(new_database: Callable[[str], Engine]) -> None:
    engine = new_database("rm_replica_rules")
    command.upgrade(alembic_config(engine), "head")
    with engine.connect() as conn:
        conn.execute(text("SET regionmesh.region = 'us-east'"))
        for table in replicated_tables.replicated_tables_in_catalog(conn):
            try:
                with conn.begin_nested():
                    conn.execute(text(f"TRUNCATE {table}"))
            except Exception as exc:
                assert "TRUNCATE of replicated table" in str(exc) and "does not replicate" in str(exc)
            else:
                raise AssertionError(f"TRUNCATE {table} was not refused")
        conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason) VALUES ('t', 'us-east', 'pin')"))
        conn.execute(text("UPDATE tenant_registry SET deleted_at = clock_timestamp() WHERE tenant_id = 't'"))
        # A local write never revives a tombstone: skipped, like a lost race.
        assert conn.execute(text("UPDATE tenant_registry SET note = 'x' WHERE tenant_id = 't'")).rowcount == 0
        conn.rollback()
