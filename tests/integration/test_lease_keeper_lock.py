"""The lease keeper's grant writes against a real PostgreSQL 16: a keeper process that loses the
region's advisory lock in the middle of a pass (its session ends: a blip, a terminated backend)
cannot write ``granting`` over the ``expired`` that the lock's new holder wrote meanwhile
(issue 21, item 1). Two keeper loops in this process stand for two worker processes of one region;
each takes the lock on a session of its own, as SingletonLoop does."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from regionmesh.config import Settings
from regionmesh.models import lease
from regionmesh.models.engine import make_engine
from regionmesh.ops.migrate import alembic_config
from regionmesh.workers.lease_keeper import LeaseLoop
from tests.conftest import Mesh

REGION = "us-east"
PEER = "eu-west"
DATABASE = "rm_keeper_lock"


@pytest.fixture(scope="module")
def db(mesh: Mesh) -> Iterator[Engine]:
    admin = make_engine(mesh.dev.admin_url(REGION), pool_size=1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    engine = make_engine(mesh.dev.admin_url(REGION, DATABASE), region=REGION, pool_size=3)
    try:
        command.upgrade(alembic_config(engine), "head")
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        admin.dispose()


def runtime(engine: Engine, worker: str) -> Any:
    """What the keeper and its loop read of a Runtime."""
    return SimpleNamespace(region=REGION, engine=engine, worker_id=worker,
                           config=SimpleNamespace(regions=dict.fromkeys([REGION, PEER, "ap-south"]),
                                                  settings=Settings()))


def grant_row(engine: Engine) -> tuple[int, str] | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT seq, state FROM lease_grants WHERE holder = :h AND grantor = :g"),
                           {"h": PEER, "g": REGION}).first()
    return None if row is None else (int(row[0]), row[1])


def take_lock(loop: LeaseLoop, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while not loop._hold_lock():
        assert time.monotonic() < end, "the lock did not free after its session ended"
        loop.stopping.wait(0.05)


def test_a_keeper_that_lost_its_lock_mid_pass_cannot_grant_over_the_new_holder_s_expiry(
        db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with db.begin() as conn:
        conn.execute(text("DELETE FROM lease_grants"))
        conn.execute(text("INSERT INTO regions (name, status) VALUES (:p, 'active') "
                          "ON CONFLICT (name) DO UPDATE SET status = 'active'"), {"p": PEER})
        conn.execute(text("INSERT INTO heartbeats (region, seq) VALUES (:p, 5) "
                          "ON CONFLICT (region) DO UPDATE SET seq = 5"), {"p": PEER})
    p1, p2 = LeaseLoop(runtime(db, "host:1"), 1.0), LeaseLoop(runtime(db, "host:2"), 1.0)
    take_lock(p1)
    real_view = lease.view
    calls = {"n": 0}

    def view_then_lose_the_lock(engine: Engine, region: str) -> dict[str, Any]:
        seen = real_view(engine, region)
        calls["n"] += 1
        if calls["n"] == 1:  # P1 has read its view: now its session ends, and P2 takes over
            with db.begin() as conn:
                conn.execute(text(
                    """SELECT pg_terminate_backend(pid) FROM pg_locks
                        WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
                          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""))
                conn.execute(text("UPDATE regions SET status = 'failed_over' WHERE name = :p"), {"p": PEER})
            take_lock(p2)
            p2.step()  # P2 never granted eu-west: it writes 'expired' at once
            assert grant_row(db) == (0, "expired")
        return seen

    monkeypatch.setattr(lease, "view", view_then_lose_the_lock)
    with contextlib.suppress(Exception):  # P1's pass may fail on its dead session: that is the point
        p1.step()  # ... and goes on from the view it read while it held the lock: eu-west active
    assert calls["n"] >= 2
    assert grant_row(db) == (0, "expired"), "a keeper without the lock overwrote the new holder's expiry"
    p1._drop_lock()
    p2._drop_lock()


def test_a_grant_write_on_a_session_without_the_lock_is_refused(db: Engine) -> None:
    """The write's proof is the lock held by the session that writes, checked in its transaction."""
    with db.connect() as conn:
        assert not lease.write_grant(conn, PEER, REGION, 7, "granting", f"regionmesh.lease:{REGION}")
    assert grant_row(db) != (7, "granting")
    loop = LeaseLoop(runtime(db, "host:3"), 1.0)
    take_lock(loop)
    try:
        assert loop._lock_conn is not None
        assert lease.write_grant(loop._lock_conn, PEER, REGION, 7, "granting", f"regionmesh.lease:{REGION}")
        assert grant_row(db) == (7, "granting")
    finally:
        loop._drop_lock()
