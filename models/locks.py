"""Advisory locks: one holder per region for singleton jobs (the reconciler)."""

from __future__ import annotations

from sqlalchemy import Connection, text


def try_session_lock(conn: Connection, name: str) -> bool:
    """Take a session-level advisory lock keyed by ``name``; held until the connection closes."""
    return bool(conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:n))"), {"n": name}).scalar_one())


def still_connected(conn: Connection) -> bool:
    try:
        conn.execute(text("SELECT 1"))
        conn.commit()
        return True
    except Exception:  # any failure means the session (and its locks) is gone
        return False
