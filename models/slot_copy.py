"""Adding a region (Zodan): slots on its peers first, a copy of a seed as of a slot's exported
snapshot, then each slot advanced to where the seed had applied that peer. Over libpq as the
replication role (psycopg2: the replication protocol is not SQLAlchemy's)."""

from __future__ import annotations

import tempfile
import time

import psycopg2
import psycopg2.extras
from sqlalchemy.engine import make_url

from regionmesh.models.publishing import zone_filter
from regionmesh.models.tables import REPLICATED_TABLES, ZONED_TABLES


def create_slot(peer_conninfo: str, slot: str) -> str:
    """Create a pgoutput slot on a peer (as the replication role). Returns its consistent LSN."""
    with psycopg2.connect(peer_conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        row = cur.fetchone()
    conn.close()
    assert row is not None
    return str(row[0])


def advance_slot(peer_conninfo: str, slot: str, lsn: str) -> None:
    with psycopg2.connect(peer_conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn))
    conn.close()


def drop_slot_if_exists(peer_conninfo: str, slot: str, timeout: float = 30) -> bool:
    """Drop a slot on a peer once no walsender uses it (a subscriber just disabled lets go of it
    within a moment). Returns whether it existed. Raises TimeoutError if it stays in use."""
    deadline = time.monotonic() + timeout
    with psycopg2.connect(peer_conninfo) as conn, conn.cursor() as cur:
        while True:
            cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            conn.commit()
            if row is None:
                existed = False
                break
            if not row[0]:
                cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                existed = True
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot {slot} still in use after {timeout}s")
            time.sleep(0.1)
    conn.close()
    return existed


def copy_with_new_slot(seed_conninfo: str, seed_app_url: str, slot: str, target_admin_url: str,
                       zones: list[str] | None = None) -> int:
    """Create ``slot`` on the seed exporting its snapshot, copy every replicated table as of
    that snapshot into the target (in replica mode, so rows keep their stamps). ``zones``: the
    payload tables' rows are copied only where their zone is '' or one of these (what the
    target's publications would send it); None copies them all. Returns rows copied."""

    def dsn(url: str) -> str:
        u = make_url(url)
        return (f"host={u.host} port={u.port} dbname={u.database} user={u.username} "
                f"password='{(u.password or '').replace(chr(39), chr(92) + chr(39))}'")

    repl_conn = psycopg2.connect(seed_conninfo, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    copied = 0
    try:
        cur = repl_conn.cursor()
        cur.execute(f"CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export')")
        row = cur.fetchone()
        assert row is not None
        snapshot = row[2]
        src = psycopg2.connect(dsn(seed_app_url))
        dst = psycopg2.connect(dsn(target_admin_url))
        try:
            scur = src.cursor()
            scur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            scur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
            dcur = dst.cursor()
            dcur.execute("SET session_replication_role = replica")
            for table in REPLICATED_TABLES:
                where = f" WHERE {zone_filter(zones)}" if zones is not None and table in ZONED_TABLES else ""
                with tempfile.TemporaryFile() as buf:
                    scur.copy_expert(f"COPY (SELECT * FROM {table}{where}) TO STDOUT", buf)
                    buf.seek(0)
                    dcur.copy_expert(f"COPY {table} FROM STDIN", buf)
                scur.execute(f"SELECT count(*) FROM {table}{where}")
                counted = scur.fetchone()
                copied += int(counted[0]) if counted else 0
            dst.commit()
            src.rollback()
        finally:
            src.close()
            dst.close()
    finally:
        repl_conn.close()
    return copied
