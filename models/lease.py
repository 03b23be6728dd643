"""Statements of the lease keeper: beats, grants, the local lease row, the manual fence."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text


def beat(engine: Engine, region: str) -> int:
    """Bump this region's heartbeat (its lease beat). Returns the new sequence number."""
    with engine.begin() as conn:
        return int(conn.execute(text(
            """INSERT INTO heartbeats (region, beat_at, seq) VALUES (:r, clock_timestamp(), 1)
               ON CONFLICT (region) DO UPDATE SET beat_at = clock_timestamp(), seq = heartbeats.seq + 1
               RETURNING seq"""
        ), {"r": region}).scalar_one())


def view(engine: Engine, region: str) -> dict[str, Any]:
    """What the keeper decides from, as this region's copy holds it: every region's beat sequence,
    status and epoch, the grants about this region, this region's own grant rows and the episode
    each answers (its ``epoch``), the fence."""
    with engine.connect() as conn:
        beats = {r[0]: int(r[1]) for r in conn.execute(text("SELECT region, seq FROM heartbeats"))}
        regions = conn.execute(text("SELECT name, status, epoch FROM regions")).all()
        grants = {r[0]: (int(r[1]), r[2]) for r in conn.execute(
            text("SELECT grantor, seq, state FROM lease_grants WHERE holder = :me AND grantor <> :me"), {"me": region})}
        own = conn.execute(text("SELECT holder, seq, state, epoch FROM lease_grants WHERE grantor = :me"),
                           {"me": region}).all()
        fence = conn.execute(text("SELECT fenced, manual, reason FROM local_fence WHERE id = 1")).first()
    return {"beats": beats, "statuses": {r[0]: r[1] for r in regions}, "epochs": {r[0]: int(r[2]) for r in regions},
            "grants": grants, "mine": {r[0]: (int(r[1]), r[2]) for r in own},
            "episodes": {r[0]: int(r[3]) for r in own},
            "fenced": bool(fence and fence[0]), "manual": bool(fence and fence[1]),
            "fence_reason": fence[2] if fence else None}


# Whether this session holds the session-level advisory lock pg_try_advisory_lock(hashtext(:lock))
# took: pg_locks shows a one-bigint key as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
_HOLDS_LOCK = """EXISTS (SELECT 1 FROM pg_locks
                          WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() AND objsubid = 1
                            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                            AND classid::bigint = ((hashtext(:lock)::bigint >> 32) & 4294967295)
                            AND objid::bigint = (hashtext(:lock)::bigint & 4294967295))"""


def write_grant(lock_conn: Connection, holder: str, grantor: str, seq: int, state: str, lock: str,
                episode: int = 0) -> bool:
    """This region's (the grantor's) row about ``holder``, written on ``lock_conn``, the session that
    holds the keeper's advisory lock ``lock``, and only while it holds it (checked in the same
    transaction). A session-level lock is released only when its session ends (or unlocks it), and
    a session that ends takes its open transaction with it; so a write that commits was made by the
    holder, never by a keeper that lost the lock before it committed. Checking the lock from any
    other session would prove nothing at commit time. Returns False when the session does not hold
    the lock (nothing written).

    ``episode``: the holder's region epoch (``regions.epoch``) as the grantor's copy held it, kept
    in the row's ``epoch``: an ``expired`` row answers the failover whose ``failing_over`` status
    carried that epoch, and no other (``failover`` counts only those). Region epochs only grow, and
    the row's epoch never goes down (``greatest``): the conflict rule drops a version with a lower
    epoch, so a lower one would never reach the peers."""
    result = lock_conn.execute(text(
        f"""INSERT INTO lease_grants (holder, grantor, seq, state, epoch)
            SELECT :h, :g, :s, :st, greatest(:e, 1) WHERE {_HOLDS_LOCK}
            ON CONFLICT (holder, grantor) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state,
                                                        epoch = greatest(lease_grants.epoch, EXCLUDED.epoch)"""
    ), {"h": holder, "g": grantor, "s": seq, "st": state, "lock": lock, "e": episode})
    lock_conn.commit()
    return bool(result.rowcount)


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT clock_timestamp()")).scalar_one()  # type: ignore[no-any-return]


def publish_lease(engine: Engine, held_until: datetime | None, granted_by: list[str], reason: str | None) -> None:
    """Set until when this region holds its lease (None: it holds none)."""
    with engine.begin() as conn:
        conn.execute(text(
            """UPDATE local_lease SET held_until = :u, granted_by = :g, reason = :r, updated_at = clock_timestamp()
                WHERE id = 1"""
        ), {"u": held_until, "g": granted_by, "r": reason})


def lease_row(engine: Engine) -> dict[str, Any]:
    """This region's lease: held_until, remaining_s (<= 0 when not held), granted_by, reason, may_work."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT held_until, extract(epoch FROM held_until - clock_timestamp()), granted_by, reason,
                      rm_may_work() FROM local_lease WHERE id = 1""")).one()
    return {"held_until": row[0], "remaining_s": float(row[1]) if row[1] is not None else None,
            "granted_by": list(row[2]), "reason": row[3], "may_work": bool(row[4])}


def grants_about(engine: Engine, holder: str) -> dict[str, tuple[int, str]]:
    """grantor -> (seq, state) of the rows about ``holder`` as this region's copy holds them."""
    with engine.connect() as conn:
        return {r[0]: (int(r[1]), r[2]) for r in conn.execute(
            text("SELECT grantor, seq, state FROM lease_grants WHERE holder = :h AND grantor <> :h"), {"h": holder})}


def grant_episodes(engine: Engine, holder: str) -> dict[str, tuple[str, int]]:
    """grantor -> (state, episode) of the rows about ``holder`` as this region's copy holds them;
    the episode is the holder's region epoch the grantor answered (see ``write_grant``)."""
    with engine.connect() as conn:
        return {r[0]: (r[1], int(r[2])) for r in conn.execute(
            text("SELECT grantor, state, epoch FROM lease_grants WHERE holder = :h AND grantor <> :h"), {"h": holder})}


def may_work(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT rm_may_work()")).scalar_one())


def lease_lapsed(engine: Engine, region: str) -> bool:
    """Whether this region may not work for want of its lease alone, which a keeper pass may bring
    back: no fence is up and the region is neither failed over nor being failed over (those end
    only by an operator)."""
    with engine.connect() as conn:
        return bool(conn.execute(text(
            """SELECT NOT rm_may_work() AND NOT EXISTS (SELECT 1 FROM local_fence WHERE fenced)
                  AND coalesce((SELECT status FROM regions WHERE name = :r), 'active') IN ('active', 'draining')"""
        ), {"r": region}).scalar_one())


def set_fence(engine: Engine, fenced: bool, reason: str | None, *, manual: bool) -> bool:
    """Raise or lower the fence. The keeper (manual=False) never lowers a manual fence.
    Returns True if it changed."""
    with engine.begin() as conn:
        result = conn.execute(text(
            """UPDATE local_fence SET fenced = :f, reason = :r, manual = :m AND :f, since = clock_timestamp()
                WHERE id = 1 AND (fenced IS DISTINCT FROM :f OR manual IS DISTINCT FROM (:m AND :f))
                  AND (:m OR NOT manual)"""
        ), {"f": fenced, "r": reason, "m": manual})
    return bool(result.rowcount)
