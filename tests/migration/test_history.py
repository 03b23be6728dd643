"""The migration history: every downgrade restores the schema of the revision below, down to
an empty database and back up to head, and 0008 (the SQL files) changes nothing at 0007."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from sqlalchemy import Engine

from regionmesh.ops.migrate import alembic_config, script
from tests.migration.catalog import Catalog, read_catalog


def catalog(engine: Engine) -> Catalog:
    with engine.connect() as conn:
        return read_catalog(conn)


def test_every_downgrade_restores_the_schema_of_the_revision_below(new_database: Callable[[str], Engine]) -> None:
    engine = new_database("rm_sql_history")
    cfg = alembic_config(engine)
    revisions = [r.revision for r in reversed(list(script().walk_revisions()))]  # base first
    assert len(revisions) >= 8
    empty = catalog(engine)
    assert empty == Catalog({}, {}, {}, {}, {})
    up: dict[str, Catalog] = {"base": empty}
    for rev in revisions:
        command.upgrade(cfg, rev)
        up[rev] = catalog(engine)
    for below, rev in reversed(list(zip(["base", *revisions], revisions, strict=False))):
        command.downgrade(cfg, below)
        after = catalog(engine)
        for part in ("functions", "triggers", "tables", "constraints", "indexes"):
            assert getattr(after, part) == getattr(up[below], part), f"downgrade {rev} -> {below}: {part} differ"
    command.upgrade(cfg, "head")
    assert catalog(engine) == up[revisions[-1]]


def test_0008_sql_files_change_nothing_on_a_database_at_0007(new_database: Callable[[str], Engine]) -> None:
    engine = new_database("rm_sql_0008")
    cfg = alembic_config(engine)
    command.upgrade(cfg, "0007")
    at_0007 = catalog(engine)
    command.upgrade(cfg, "0008")
    assert catalog(engine) == at_0007
    assert at_0007.functions and at_0007.triggers


def test_0018_changes_only_its_functions_and_goes_down_and_up_again(new_database: Callable[[str], Engine]) -> None:
    engine = new_database("rm_sql_0018")
    cfg = alembic_config(engine)
    command.upgrade(cfg, "0017")
    at_0017 = catalog(engine)
    command.upgrade(cfg, "0018")
    at_0018 = catalog(engine)
    changed = {sig for sig in at_0017.functions.keys() | at_0018.functions.keys()
               if at_0017.functions.get(sig) != at_0018.functions.get(sig)}
    # The generated rm_conflict_*_<table> functions come out the same: 0018 does not touch them.
    assert changed == {"rm_primary_key(regclass)", "rm_install_conflict_triggers(regclass)",
                       "rm_install_delete_rules(regclass)"}
    assert (at_0018.triggers, at_0018.tables) == (at_0017.triggers, at_0017.tables)
    command.downgrade(cfg, "0017")
    assert catalog(engine) == at_0017
    command.upgrade(cfg, "0018")
    assert catalog(engine) == at_0018
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT rm_primary_key('step_tasks'::regclass)").scalar() == ["id"]
        assert conn.exec_driver_sql("SELECT rm_primary_key('replication_watch'::regclass)").scalar() == ["subid", "publisher"]
        assert conn.exec_driver_sql("SELECT rm_primary_key('alembic_version'::regclass)").scalar() == ["version_num"]
