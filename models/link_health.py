"""Where each replication link stands: subscriptions and their apply errors, slots and their lag,
WAL positions (has a subscriber confirmed up to here?), heartbeat ages, skipped changes and
conflict counts. What ``replication status``, the metrics and the failover wait read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text


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


def heartbeat_ages(engine: Engine) -> dict[str, float]:
    """Seconds since each region's heartbeat, as this region's copy shows it."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT region, extract(epoch FROM clock_timestamp() - beat_at) FROM heartbeats")).all()
    return {r[0]: float(r[1]) for r in rows}


def skipped_changes(engine: Engine) -> dict[str, dict[str, Any]]:
    """subscription name -> the heartbeat jumps its current subscription received (watch.sql):
    ``gaps``, beats ``skipped``, the last jump (``last_gap_from`` -> ``last_gap_to`` at
    ``last_gap_at``). Only subscriptions with a jump; rows of dropped subscriptions are ignored."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT s.subname, w.publisher, w.gaps, w.skipped, w.last_gap_from, w.last_gap_to, w.last_gap_at
                 FROM replication_watch w JOIN pg_subscription s ON s.oid::bigint = w.subid
                WHERE w.gaps > 0""")).mappings().all()
    return {r["subname"]: dict(r) for r in rows}


def acknowledge_skipped(engine: Engine, subscription: str) -> int:
    """Clear the recorded jumps of ``subscription`` (an operator checked and repaired the link).
    Returns how many were cleared."""
    with engine.begin() as conn:
        return int(conn.execute(text(
            """UPDATE replication_watch w SET gaps = 0, skipped = 0 FROM pg_subscription s
                WHERE s.oid::bigint = w.subid AND s.subname = :n AND w.gaps > 0
            RETURNING w.gaps"""), {"n": subscription}).rowcount)


def conflict_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, count(*) FROM replication_conflicts GROUP BY kind")).all()
    return {r[0]: int(r[1]) for r in rows}
