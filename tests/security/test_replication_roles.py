"""Replication credentials: one role and secret per link, allowed only to the replicated
database over TLS, unable to create, drop, copy, advance or consume a slot through SQL; the
subscriptions' catalog rows hold no password."""

from __future__ import annotations

import os
import stat
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
import pytest
from sqlalchemy import text

from regionmesh.models.admin import LINK_CONNECTION_LIMIT, link_role
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name
from regionmesh.replication.status import acknowledge, mesh_status
from regionmesh.safefs import uid_of
from tests.conftest import Mesh
from tests.support.helpers import wait_until

HOST = "127.0.0.1"
HBA_REFUSED = "pg_hba.conf rejects connection|no pg_hba.conf entry"


def _connect(mesh: Mesh, publisher: str, user: str, password: str, dbname: str = "regionmesh", **kw: Any) -> Any:
    port = int(mesh.dev.region(publisher).pg.port or 0)
    return psycopg2.connect(host=HOST, port=port, user=user, password=password, dbname=dbname,
                            sslmode="verify-full", sslrootcert=str(mesh.dev.ca_file()), connect_timeout=5, **kw)


def _link_secret(mesh: Mesh, sub: str, pub: str) -> str:
    return str((mesh.dev.root / "secrets" / "links" / link_role(sub, pub)).read_text().strip())


def _links(mesh: Mesh) -> list[tuple[str, str]]:
    regions = list(mesh.config.regions)
    return [(s, p) for s in regions for p in regions if s != p]


def _slot_positions(mesh: Mesh, publisher: str) -> dict[str, str]:
    engine = make_engine(mesh.dev.admin_url(publisher, "regionmesh"), pool_size=1)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots")).all()
    engine.dispose()
    return {str(name): str(lsn) for name, lsn in rows}


def test_every_link_has_its_own_role_and_secret(tls_mesh: Mesh) -> None:
    secrets = {link: _link_secret(tls_mesh, *link) for link in _links(tls_mesh)}
    assert len(set(secrets.values())) == len(secrets) == 6
    for (sub, pub), secret in secrets.items():
        # Each works for its own role on its own publisher ...
        conn = _connect(tls_mesh, pub, link_role(sub, pub), secret)
        conn.close()
        # ... and for no other link's role.
        for (other_sub, other_pub) in secrets:
            if (other_sub, other_pub) != (sub, pub) and other_pub == pub:
                with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
                    _connect(tls_mesh, pub, link_role(other_sub, pub), secret)


def test_link_roles_reach_only_the_replicated_database_of_their_publisher(tls_mesh: Mesh) -> None:
    for sub, pub in _links(tls_mesh):
        role, secret = link_role(sub, pub), _link_secret(tls_mesh, sub, pub)
        with pytest.raises(psycopg2.OperationalError, match=HBA_REFUSED):
            _connect(tls_mesh, pub, role, secret, dbname="postgres")
        # Physical replication (a base backup: every table and secret) is not allowed either.
        with pytest.raises(psycopg2.OperationalError, match=HBA_REFUSED):
            _connect(tls_mesh, pub, role, secret, dbname="replication", replication="true")
        for elsewhere in tls_mesh.config.regions:
            if elsewhere != pub:
                with pytest.raises(psycopg2.OperationalError, match=HBA_REFUSED):
                    _connect(tls_mesh, elsewhere, role, secret)


SLOT_CALLS = [
    ("pg_create_logical_replication_slot", "SELECT pg_create_logical_replication_slot('rm_evil', 'pgoutput')"),
    ("pg_create_physical_replication_slot", "SELECT pg_create_physical_replication_slot('rm_evil')"),
    ("pg_drop_replication_slot", "SELECT pg_drop_replication_slot(%(slot)s)"),
    ("pg_replication_slot_advance", "SELECT pg_replication_slot_advance(%(slot)s, pg_current_wal_lsn())"),
    ("pg_copy_logical_replication_slot", "SELECT pg_copy_logical_replication_slot(%(slot)s, 'rm_evil')"),
    ("pg_logical_slot_get_changes", "SELECT * FROM pg_logical_slot_get_changes(%(slot)s, NULL, NULL)"),
    ("pg_logical_slot_peek_changes", "SELECT * FROM pg_logical_slot_peek_changes(%(slot)s, NULL, NULL)"),
    ("pg_logical_slot_get_binary_changes",
     "SELECT * FROM pg_logical_slot_get_binary_changes(%(slot)s, NULL, NULL, 'proto_version', '1', 'publication_names', 'rm_pub')"),
]


def test_no_replication_role_can_touch_a_slot_through_sql(tls_mesh: Mesh) -> None:
    tried = 0
    for pub in tls_mesh.config.regions:
        before = _slot_positions(tls_mesh, pub)
        roles = [(link_role(sub, pub), _link_secret(tls_mesh, sub, pub)) for sub in tls_mesh.config.regions if sub != pub]
        roles.append(("regionmesh", (tls_mesh.dev.root / "secrets" / "regionmesh").read_text().strip()))
        for role, secret in roles:
            conn = _connect(tls_mesh, pub, role, secret)
            conn.autocommit = True
            try:
                for sub in tls_mesh.config.regions:
                    if sub == pub:
                        continue
                    for function, sql in SLOT_CALLS:
                        with conn.cursor() as cur, pytest.raises(psycopg2.errors.InsufficientPrivilege,
                                                                 match=f"permission denied for function {function}"):
                            cur.execute(sql, {"slot": subscription_name(sub, pub)})
                        tried += 1
            finally:
                conn.close()
        after = _slot_positions(tls_mesh, pub)
        assert set(after) == set(before) and "rm_evil" not in after
        assert all(after[s] >= before[s] for s in before)  # moved only by their subscribers, forward
    assert tried == 3 * 3 * 2 * len(SLOT_CALLS)


def test_what_the_replication_attribute_still_allows(tls_mesh: Mesh) -> None:
    """The truth docs/explanation/security.md states: REPLICATION lets a link role open a walsender connection,
    where CREATE_REPLICATION_SLOT / DROP_REPLICATION_SLOT are protocol commands no GRANT controls.
    The connection limit bounds how many it can hold open at once."""
    sub, pub = _links(tls_mesh)[0]
    role, secret = link_role(sub, pub), _link_secret(tls_mesh, sub, pub)
    conn = _connect(tls_mesh, pub, role, secret, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    try:
        cur = conn.cursor()
        cur.execute("CREATE_REPLICATION_SLOT rm_walsender_probe LOGICAL pgoutput")
        assert "rm_walsender_probe" in _slot_positions(tls_mesh, pub)
        cur.execute("DROP_REPLICATION_SLOT rm_walsender_probe")
    finally:
        conn.close()
    assert "rm_walsender_probe" not in _slot_positions(tls_mesh, pub)
    engine = make_engine(tls_mesh.dev.admin_url(pub, "regionmesh"), pool_size=1)
    with engine.connect() as conn2:
        assert conn2.execute(text("SELECT rolconnlimit FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar() \
            == LINK_CONNECTION_LIMIT
    engine.dispose()


def test_the_catalog_holds_no_replication_password(tls_mesh: Mesh) -> None:
    pg_root = tls_mesh.dev.pg_root
    for region in tls_mesh.config.regions:
        engine = make_engine(tls_mesh.dev.admin_url(region, "regionmesh"), pool_size=1)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT subname, subconninfo FROM pg_subscription")).all()
        engine.dispose()
        assert len(rows) == 2
        for name, info in rows:
            assert "password" not in info.replace("passfile", ""), (name, info)
            pub = next(p for p in tls_mesh.config.regions if subscription_name(region, p) == name)
            assert f"user={link_role(region, pub)}" in info and "passfile=" in info
        passfile = pg_root / f"{region}.pgpass"
        st = os.lstat(passfile)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == uid_of(tls_mesh.dev.region(region).pg.run_as)


def _admin_scalar(mesh: Mesh, region: str, sql: str, **params: Any) -> Any:
    engine = make_engine(mesh.dev.admin_url(region, "regionmesh"), pool_size=1)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            result = conn.execute(text(sql), params)
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def _skipped_flags(mesh: Mesh) -> dict[tuple[str, str], str]:
    links, _ = mesh_status(mesh.config)
    return {(link.publisher, link.subscriber): link.problem for link in links
            if link.problem and link.problem.startswith("changes skipped")}


def test_a_slot_moved_by_a_link_role_is_flagged_by_replication_status(tls_mesh: Mesh) -> None:
    """What REPLICATION still allows, done as an attacker holding one link's secret would: stream
    from the link's slot while its subscription is away and confirm everything, so the slot moves
    past changes the subscriber never gets. 'replication status' flags that link (and no other)."""
    sub, pub = "eu-west", "us-east"
    slot = subscription_name(sub, pub)
    assert _skipped_flags(tls_mesh) == {}
    _admin_scalar(tls_mesh, sub, f"ALTER SUBSCRIPTION {slot} DISABLE")
    try:
        wait_until(lambda: _admin_scalar(tls_mesh, pub, "SELECT NOT active FROM pg_replication_slots "
                                         "WHERE slot_name = :s", s=slot), 30, "the slot to be released")
        # The publisher keeps beating meanwhile: changes the subscriber has not received.
        seq = _admin_scalar(tls_mesh, pub, "SELECT seq FROM heartbeats WHERE region = :r", r=pub)
        wait_until(lambda: _admin_scalar(tls_mesh, pub, "SELECT seq FROM heartbeats WHERE region = :r", r=pub)
                   >= seq + 2, 30, f"{pub} to beat twice")
        target = _admin_scalar(tls_mesh, pub, "SELECT pg_current_wal_lsn()::text")
        conn = _connect(tls_mesh, pub, link_role(sub, pub), _link_secret(tls_mesh, sub, pub),
                        connection_factory=psycopg2.extras.LogicalReplicationConnection)
        try:
            cur = conn.cursor()
            cur.start_replication(slot_name=slot, decode=False,
                                  options={"proto_version": "1", "publication_names": "rm_pub"})

            def confirm_all(msg: Any) -> None:
                msg.cursor.send_feedback(flush_lsn=msg.data_start, force=True)
                if msg.data_start >= _lsn(target):
                    raise psycopg2.extras.StopReplication()

            try:
                cur.consume_stream(confirm_all)
            except psycopg2.extras.StopReplication:
                pass
            wait_until(lambda: _admin_scalar(tls_mesh, pub, "SELECT confirmed_flush_lsn >= CAST(:t AS pg_lsn) "
                                             "FROM pg_replication_slots WHERE slot_name = :s", t=target, s=slot),
                       30, "the slot to be moved")
        finally:
            conn.close()
    finally:
        _admin_scalar(tls_mesh, sub, f"ALTER SUBSCRIPTION {slot} ENABLE")
    flags = wait_until(lambda: _skipped_flags(tls_mesh) or None, 60, "replication status to flag the link")
    assert list(flags) == [(pub, sub)], flags
    assert f"'regionmesh replication acknowledge {sub} --from {pub}'" in flags[(pub, sub)]
    # Once checked, the operator clears it; the link streams on, unflagged.
    assert acknowledge(tls_mesh.config, sub, pub) == 1
    assert _skipped_flags(tls_mesh) == {}


def _lsn(text_lsn: str) -> int:
    high, low = text_lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)
