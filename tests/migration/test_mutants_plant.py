"""The SQL mutants of the fault campaign (bench/mutants.py) install in a database at head and
change what they claim to: the rewritten function is what the database then runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, text

from bench import mutants
from regionmesh.models import publishing
from regionmesh.ops.migrate import alembic_config

SQL_MUTANTS = [m for m in mutants.MUTANTS.values() if m.sql]


@pytest.fixture(scope="module")
def head(new_database: Callable[[str], Engine]) -> Engine:
    engine = new_database("rm_mutants")
    command.upgrade(alembic_config(engine), "head")
    return engine


def definition(conn: Connection, function: str) -> str:
    return str(conn.execute(text("SELECT pg_get_functiondef(CAST(:f AS regprocedure))"), {"f": function}).scalar_one())


@pytest.mark.parametrize("mutant", SQL_MUTANTS, ids=[m.name for m in SQL_MUTANTS])
def test_mutant_replaces_the_function_the_database_runs(head: Engine, mutant: mutants.Mutant) -> None:
    with head.connect() as conn, conn.begin() as tx:
        before = {p.function: definition(conn, p.function) for p in mutant.sql}
        assert mutants.apply_sql(conn, mutant) == [p.function for p in mutant.sql]
        for patch in mutant.sql:
            after = definition(conn, patch.function)
            assert after == mutants.rewrite(before[patch.function], patch)
        tx.rollback()  # the database keeps the correct build


def test_no_lease_check_lets_a_region_without_a_lease_work(head: Engine) -> None:
    with head.connect() as conn, conn.begin() as tx:
        conn.execute(text("DELETE FROM local_lease"))
        assert conn.execute(text("SELECT rm_may_work()")).scalar_one() is False
        assert conn.execute(text("SELECT rm_guard_work()")).scalar_one() is False
        mutants.apply_sql(conn, mutants.MUTANTS["no_lease_check"])
        assert conn.execute(text("SELECT rm_may_work()")).scalar_one() is True
        # the guarded transactions' checks (0021: at the start and at the commit) are gone too
        assert conn.execute(text("SELECT rm_guard_work()")).scalar_one() is True
        tx.rollback()


def test_zone_filter_dropped_unfilters_one_publication_and_refuses_to_plant_nothing(head: Engine) -> None:
    publishing.ensure_zoned_publication(head, "rm_pub_to_mutant_probe", ["z1"], "rm_no_such_role")
    try:
        assert set(publishing.publication_filters(head, "rm_pub_to_mutant_probe").values()) != {None}
        with head.begin() as conn:
            gone = mutants.apply_unfilter(conn, "rm_pub_to_mutant_probe")
        filters = publishing.publication_filters(head, "rm_pub_to_mutant_probe")
        assert sorted(gone) == sorted(filters) and set(filters.values()) == {None}
        with head.begin() as conn, pytest.raises(ValueError, match="nothing to unfilter"):
            mutants.apply_unfilter(conn, "rm_pub_to_mutant_probe")
    finally:
        with head.begin() as conn:
            conn.execute(text("DROP PUBLICATION IF EXISTS rm_pub_to_mutant_probe"))


def test_lease_checked_at_start_only_no_longer_bounds_the_wait_nor_checks_at_the_commit(head: Engine) -> None:
    guarded = "SELECT rm_guard_work(), current_setting('regionmesh.guarded', true), current_setting('lock_timeout')"
    with head.connect() as conn, conn.begin() as tx:
        conn.execute(text("INSERT INTO local_lease (id, held_until) VALUES (1, clock_timestamp() + interval '1 hour') "
                          "ON CONFLICT (id) DO UPDATE SET held_until = EXCLUDED.held_until"))
        ok, mark, timeout = conn.execute(text(guarded)).one()
        assert ok is True and mark == "on" and timeout != "0"  # the correct build: bounded, checked at commit
        tx.rollback()
    with head.connect() as conn, conn.begin() as tx:
        conn.execute(text("INSERT INTO local_lease (id, held_until) VALUES (1, clock_timestamp() + interval '1 hour') "
                          "ON CONFLICT (id) DO UPDATE SET held_until = EXCLUDED.held_until"))
        mutants.apply_sql(conn, mutants.MUTANTS["lease_checked_at_start_only"])
        ok, mark, timeout = conn.execute(text(guarded)).one()
        assert ok is True and mark in (None, "") and timeout == "0"  # the start's check only
        conn.execute(text("DELETE FROM local_lease"))
        assert conn.execute(text("SELECT rm_guard_work()")).scalar_one() is False  # rm_may_work's rule intact
        tx.rollback()


def test_erasure_lock_dropped_takes_no_tenant_lock(head: Engine) -> None:
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    with head.connect() as conn, conn.begin() as tx:
        conn.execute(text("SELECT rm_lock_tenant_runs('t1', true)"))
        assert conn.execute(text(held)).scalar_one() == 1
        tx.rollback()
    with head.connect() as conn, conn.begin() as tx:
        mutants.apply_sql(conn, mutants.MUTANTS["erasure_lock_dropped"])
        conn.execute(text("SELECT rm_lock_tenant_runs('t1', true)"))
        assert conn.execute(text(held)).scalar_one() == 0
        tx.rollback()
