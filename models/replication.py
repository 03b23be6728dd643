"""Every statement about publications, subscriptions, slots, lag and row hashes."""

from __future__ import annotations

import hashlib
import tempfile
import time
from typing import Any

import psycopg2
import psycopg2.extras
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from regionmesh.models.tables import REPLICATED_TABLES


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ensure_publication(engine: Engine, name: str, replication_role: str) -> None:
    """One publication of the replicated tables only (never FOR ALL TABLES), no TRUNCATE;
    the replication role may read exactly those tables."""
    tables = ", ".join(REPLICATED_TABLES)
    with engine.begin() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_publication WHERE pubname = :n"), {"n": name}).scalar()
        if exists:
            conn.execute(text(f"ALTER PUBLICATION {name} SET TABLE {tables}"))
            conn.execute(text(f"ALTER PUBLICATION {name} SET (publish = 'insert, update, delete')"))
        else:
            conn.execute(text(f"CREATE PUBLICATION {name} FOR TABLE {tables} WITH (publish = 'insert, update, delete')"))
        role_exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": replication_role}).scalar()
        if role_exists:
            conn.execute(text(f'GRANT SELECT ON {tables} TO "{replication_role}"'))


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


def _fingerprint(conninfo: str) -> str:

    return "regionmesh conninfo sha256:" + hashlib.sha256(conninfo.encode()).hexdigest()[:16]


def ensure_subscription(engine: Engine, name: str, conninfo: str, publication: str) -> str:
    """Create the subscription (origin = none, copy_data = false) or point it at ``conninfo``.

    Returns 'created', 'updated' or 'unchanged'. Runs outside a transaction
    (CREATE SUBSCRIPTION creates the slot on the publisher). Non-superusers
    cannot read ``subconninfo``; a fingerprint in the subscription's comment
    tells whether the connection changed.
    """
    fingerprint = _fingerprint(conninfo)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        row = conn.execute(
            text("SELECT subenabled, obj_description(oid, 'pg_subscription') FROM pg_subscription WHERE subname = :n"),
            {"n": name},
        ).first()
        if row is None:
            conn.execute(text(
                f"CREATE SUBSCRIPTION {name} CONNECTION {_literal(conninfo)} PUBLICATION {publication} "
                f"WITH (origin = none, copy_data = false, slot_name = '{name}', "
                "disable_on_error = false, streaming = on, binary = false)"
            ))
            conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {_literal(fingerprint)}"))
            return "created"
        changed = False
        if row[1] != fingerprint:
            conn.execute(text(f"ALTER SUBSCRIPTION {name} CONNECTION {_literal(conninfo)}"))
            conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {_literal(fingerprint)}"))
            changed = True
        if not row[0]:
            conn.execute(text(f"ALTER SUBSCRIPTION {name} ENABLE"))
            changed = True
        return "updated" if changed else "unchanged"


def set_subscription_connection(engine: Engine, name: str, conninfo: str) -> None:
    """Point one link elsewhere (a proxy, a new address); ``setup`` restores the mesh file's."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER SUBSCRIPTION {name} CONNECTION {_literal(conninfo)}"))
        conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {_literal(_fingerprint(conninfo))}"))


def subscriptions(engine: Engine) -> list[dict[str, Any]]:
    """This region's subscriptions: enabled, worker alive, last message times, apply errors."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT s.subname, s.subenabled, s.suborigin,
                      w.pid, w.received_lsn::text AS received_lsn, w.latest_end_lsn::text AS latest_end_lsn,
                      w.last_msg_receipt_time, w.latest_end_time,
                      coalesce(st.apply_error_count, 0) AS apply_error_count,
                      coalesce(st.sync_error_count, 0) AS sync_error_count
                 FROM pg_subscription s
                 LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
                 LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
                WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                ORDER BY s.subname"""
        )).mappings().all()
    return [dict(r) for r in rows]


def observe_link_errors(engine: Engine) -> dict[str, float | None]:
    """Record each subscription's apply error count; returns seconds since it last grew
    (None: not since tracking began). A first observation of a non-zero count counts as growth."""
    with engine.begin() as conn:
        rows = conn.execute(text(
            """WITH cur AS (
                 SELECT s.subname, coalesce(st.apply_error_count, 0) AS n
                   FROM pg_subscription s LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
                  WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))
               INSERT INTO replication_link_stats AS l (subscription, error_count, observed_at, increased_at)
               SELECT subname, n, clock_timestamp(), CASE WHEN n > 0 THEN clock_timestamp() END FROM cur
               ON CONFLICT (subscription) DO UPDATE
                  SET error_count = EXCLUDED.error_count, observed_at = EXCLUDED.observed_at,
                      increased_at = CASE WHEN EXCLUDED.error_count > l.error_count THEN EXCLUDED.observed_at
                                          ELSE l.increased_at END
               RETURNING subscription, extract(epoch FROM clock_timestamp() - increased_at)"""
        )).all()
    return {r[0]: None if r[1] is None else float(r[1]) for r in rows}


def slots(engine: Engine) -> list[dict[str, Any]]:
    """Slots on this publisher: bytes not yet confirmed by the subscriber, retained WAL, wal_status."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT slot_name, active, wal_status,
                      pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes,
                      pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes,
                      confirmed_flush_lsn::text AS confirmed_flush_lsn
                 FROM pg_replication_slots WHERE slot_type = 'logical' AND slot_name LIKE 'rm\\_%'
                ORDER BY slot_name"""
        )).mappings().all()
    return [dict(r) for r in rows]


def current_lsn(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one())


def slot_caught_up(engine: Engine, slot: str, lsn: str) -> bool:
    """Whether ``slot`` on this publisher has confirmed everything up to ``lsn``."""
    with engine.connect() as conn:
        return bool(conn.execute(
            text("SELECT confirmed_flush_lsn >= CAST(:l AS pg_lsn) FROM pg_replication_slots WHERE slot_name = :s"),
            {"l": lsn, "s": slot},
        ).scalar())


def heartbeat_ages(engine: Engine) -> dict[str, float]:
    """Seconds since each region's heartbeat, as this region's copy shows it."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT region, extract(epoch FROM clock_timestamp() - beat_at) FROM heartbeats")).all()
    return {r[0]: float(r[1]) for r in rows}


def conflict_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, count(*) FROM replication_conflicts GROUP BY kind")).all()
    return {r[0]: int(r[1]) for r in rows}


def primary_key(conn: Connection, table: str) -> list[str]:
    return list(conn.execute(text(
        """SELECT a.attname FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary
            ORDER BY array_position(i.indkey::int2[], a.attnum)"""
    ), {"t": table}).scalars())


def _key_expr(pk: list[str]) -> str:
    return " || ',' || ".join(f"{c}::text" for c in pk)


def bucket_hashes(engine: Engine, table: str, buckets: int) -> dict[int, tuple[int, int]]:
    """Per bucket of the key's hash: (row count, XOR of 64-bit row hashes). Order-independent."""
    with engine.connect() as conn:
        conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        key = _key_expr(primary_key(conn, table))
        rows = conn.execute(text(
            f"""SELECT (hashtextextended({key}, 0) & {buckets - 1})::int AS b, count(*),
                       bit_xor(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint)
                  FROM {table} t GROUP BY 1"""
        )).all()
    return {int(r[0]): (int(r[1]), int(r[2])) for r in rows}


def row_hashes(engine: Engine, table: str, buckets: int, wanted: list[int]) -> dict[str, str]:
    """Key -> row hash for the rows in the ``wanted`` buckets (the drill-down)."""
    with engine.connect() as conn:
        conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
        key = _key_expr(primary_key(conn, table))
        rows = conn.execute(text(
            f"""SELECT {key}, md5(t::text) FROM {table} t
                 WHERE (hashtextextended({key}, 0) & {buckets - 1})::int = ANY(:w)"""
        ), {"w": wanted}).all()
    return {str(r[0]): str(r[1]) for r in rows}


# -- adding a region (Zodan): slots first, copy from a seed, advance, subscribe -----------------
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


def drop_slot_if_exists(peer_conninfo: str, slot: str) -> None:

    with psycopg2.connect(peer_conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    conn.close()


def has_rows(engine: Engine) -> bool:
    with engine.connect() as conn:
        return any(conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {t})")).scalar() for t in REPLICATED_TABLES)


def origin_progress(engine: Engine, subscription: str) -> str | None:
    """The publisher LSN up to which this region applied ``subscription``'s changes."""
    with engine.connect() as conn:
        return conn.execute(text(
            """SELECT pg_replication_origin_progress('pg_' || s.oid, true)::text
                 FROM pg_subscription s WHERE s.subname = :n"""
        ), {"n": subscription}).scalar()


def lsn_at_least(engine: Engine, a: str | None, b: str) -> bool:
    if a is None:
        return False
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT CAST(:a AS pg_lsn) >= CAST(:b AS pg_lsn)"), {"a": a, "b": b}).scalar())


def set_subscription_enabled(engine: Engine, subscription: str, enabled: bool) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"ALTER SUBSCRIPTION {subscription} {'ENABLE' if enabled else 'DISABLE'}"))


def wait_worker_stopped(engine: Engine, subscription: str, timeout: float = 30) -> None:

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            pid = conn.execute(text(
                """SELECT w.pid FROM pg_stat_subscription w JOIN pg_subscription s ON s.oid = w.subid
                    WHERE s.subname = :n AND w.pid IS NOT NULL LIMIT 1"""
            ), {"n": subscription}).scalar()
        if pid is None:
            return
        time.sleep(0.05)
    raise TimeoutError(f"apply worker of {subscription} did not stop within {timeout}s")


def copy_with_new_slot(seed_conninfo: str, seed_app_url: str, slot: str, target_admin_url: str) -> int:
    """Create ``slot`` on the seed exporting its snapshot, copy every replicated table as of
    that snapshot into the target (in replica mode, so rows keep their stamps). Returns rows copied."""


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
                with tempfile.TemporaryFile() as buf:
                    scur.copy_expert(f"COPY {table} TO STDOUT", buf)
                    buf.seek(0)
                    dcur.copy_expert(f"COPY {table} FROM STDIN", buf)
                scur.execute(f"SELECT count(*) FROM {table}")
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


def create_subscription_on_slot(engine: Engine, name: str, conninfo: str, publication: str) -> None:
    """Subscribe with an existing slot (create_slot = false), origin = none, no copy."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(
            f"CREATE SUBSCRIPTION {name} CONNECTION {_literal(conninfo)} PUBLICATION {publication} "
            f"WITH (origin = none, copy_data = false, create_slot = false, slot_name = '{name}', "
            "streaming = on, binary = false)"
        ))
        conn.execute(text(f"COMMENT ON SUBSCRIPTION {name} IS {_literal(_fingerprint(conninfo))}"))
