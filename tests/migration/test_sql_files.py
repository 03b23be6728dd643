"""A database migrated from zero to head has exactly the functions and triggers of the SQL files
(``regionmesh/models/sql``) and the tables of the models."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import Engine

import regionmesh.models.tables  # noqa: F401  - registers the tables on the metadata
from regionmesh.models import schema_sql
from regionmesh.models.base import Base, Replicated
from regionmesh.ops.migrate import alembic_config
from tests.migration.catalog import Catalog, read_catalog

# Generated per replicated table by rm_install_conflict_triggers (conflicts.sql, triggers.sql).
GENERATED = ("rm_conflict_ins_{}", "rm_conflict_upd_{}", "rm_conflict_del_{}")  # + deletes.sql


def replicated_tables() -> set[str]:
    return {m.class_.__tablename__ for m in Base.registry.mappers if issubclass(m.class_, Replicated)}


def functions_named_in_files() -> set[str]:
    # conflicts.sql also holds CREATE OR REPLACE FUNCTION %1$I() templates; \w+ does not match those.
    # watch.sql creates its function in the tables' schema: CREATE OR REPLACE FUNCTION %1$I.name(.
    text = "\n".join(schema_sql.load(name) for name in schema_sql.FILES)
    return set(re.findall(r"CREATE OR REPLACE FUNCTION (?:%1\$I\.)?(\w+)\(", text))


@pytest.fixture(scope="module")
def head(new_database: Callable[[str], Engine]) -> Engine:
    engine = new_database("rm_sql_head")
    command.upgrade(alembic_config(engine), "head")
    return engine


@pytest.fixture(scope="module")
def at_head(head: Engine) -> Catalog:
    with head.connect() as conn:
        return read_catalog(conn)


def test_head_has_the_functions_the_files_define_and_the_triggers_of_every_replicated_table(at_head: Catalog) -> None:
    tables = replicated_tables()
    assert tables, "no replicated models found"
    static = functions_named_in_files()
    assert {"rm_stamp", "rm_create_run", "rm_claim_task", "rm_install_conflict_triggers"} <= static
    generated = {pattern.format(t) for t in tables for pattern in GENERATED}
    assert {sig.split("(")[0] for sig in at_head.functions} == static | generated
    expected_triggers = {(t, name): enabled for t in tables
                         for name, enabled in (("rm_stamp", "O"), ("rm_conflict_ins", "R"), ("rm_conflict_upd", "R"),
                                               ("rm_conflict_del", "R"), ("rm_keep_tombstone", "O"),
                                               ("rm_no_live_delete", "O"),
                                               ("rm_no_truncate", "A"))}
    # payload.sql: zone stamps and the summaries of zoned runs, on the payload tables (local writes only).
    expected_triggers |= {(t, name): "O" for t in ("workflow_runs", "workflow_steps", "step_tasks")
                          for name in ("rm_zone_stamp", "rm_zone_summary") if (t, name) != ("step_tasks", "rm_zone_summary")}
    # time.sql: the zone stamps of the tenant-keyed payload tables (0026).
    expected_triggers |= {(t, "rm_zone_stamp"): "O" for t in ("schedules", "run_signals")}
    # watch.sql: heartbeat jumps a subscriber receives (the apply worker only).
    expected_triggers[("heartbeats", "rm_beat_watch")] = "R"
    # claims.sql: the lease check at the commit of a claim, completion, failure or run creation (0021).
    expected_triggers[("step_tasks", "rm_lease_at_commit")] = "O"
    # claims.sql: an attempt's end and outcome, from the write that ends its running task (0025).
    expected_triggers[("step_tasks", "rm_attempt_end")] = "O"
    # fairness.sql: the fair queue kept from a region's own writes of step_tasks (issue 22).
    expected_triggers[("step_tasks", "rm_fair_track")] = "O"
    assert {key: enabled for key, (_, enabled) in at_head.triggers.items()} == expected_triggers
    assert set(at_head.tables) == set(Base.metadata.tables)


def test_sql_files_rebuild_exactly_the_functions_and_triggers_of_head(head: Engine, at_head: Catalog) -> None:
    with head.connect() as conn:
        for sig in at_head.functions:
            conn.exec_driver_sql(f"DROP FUNCTION {sig} CASCADE")  # the triggers go with their functions
        emptied = read_catalog(conn)
        schema_sql.apply(conn, *schema_sql.FILES)
        from_files = read_catalog(conn)
        schema_sql.apply(conn, *schema_sql.FILES)
        applied_twice = read_catalog(conn)
        conn.rollback()
    assert (emptied.functions, emptied.triggers) == ({}, {})
    assert from_files.functions == at_head.functions
    assert from_files.triggers == at_head.triggers
    assert applied_twice == from_files, "applying the files again changed something: a statement is not idempotent"


def test_sql_files_on_tables_created_from_the_models_give_the_schema_of_head(
    new_database: Callable[[str], Engine], at_head: Catalog
) -> None:
    engine = new_database("rm_sql_models")
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        schema_sql.apply(conn, *schema_sql.FILES)
        from_models = read_catalog(conn)
    assert from_models.triggers == at_head.triggers
    assert from_models.functions.keys() == at_head.functions.keys()
    # The generated functions list a table's columns in physical order, which differs where a
    # migration appended a column (ADD COLUMN) that the model declares in the middle; the test
    # above compares them on the migrated tables themselves.
    generated = {sig for sig in at_head.functions
                 if sig.startswith(("rm_conflict_ins_", "rm_conflict_upd_", "rm_conflict_del_"))}
    assert generated
    assert ({s: d for s, d in from_models.functions.items() if s not in generated}
            == {s: d for s, d in at_head.functions.items() if s not in generated})
    assert {t: sorted(cols) for t, cols in from_models.tables.items()} == {t: sorted(cols) for t, cols in at_head.tables.items()}
    assert from_models.constraints == at_head.constraints
    assert from_models.indexes == at_head.indexes


def test_catalog_comparison_sees_a_changed_body_trigger_state_default_and_index(head: Engine, at_head: Catalog) -> None:
    with head.connect() as conn:
        body = at_head.functions["rm_cancel_run(uuid)"]
        conn.exec_driver_sql(body.replace("RETURN true;", "RETURN true;  -- planted"),
                             execution_options={"no_parameters": True})
        conn.exec_driver_sql("ALTER TABLE regions ENABLE ALWAYS TRIGGER rm_conflict_upd")
        conn.exec_driver_sql("ALTER TABLE outbox ALTER COLUMN attempts SET DEFAULT 1")
        conn.exec_driver_sql("CREATE INDEX planted ON outbox (target_region)")
        planted = read_catalog(conn)
        conn.rollback()
    assert planted.functions["rm_cancel_run(uuid)"] != at_head.functions["rm_cancel_run(uuid)"]
    assert planted.triggers[("regions", "rm_conflict_upd")] != at_head.triggers[("regions", "rm_conflict_upd")]
    assert planted.tables["outbox"] != at_head.tables["outbox"]
    assert "planted" in planted.indexes and "planted" not in at_head.indexes


def test_load_refuses_a_file_that_is_not_one_of_the_engines() -> None:
    with pytest.raises(ValueError, match="engine.sql"):
        schema_sql.load("../engine.sql")
