"""Every statement about publications, subscriptions, slots, lag and row hashes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, text

from models.tables import REPLICATED_TABLES


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
    import hashlib

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
