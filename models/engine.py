"""Engines: one per region URL, built from the config, never at import time."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url


def make_engine(url: str, *, pool_size: int = 5, connect_timeout: int = 5, application_name: str = "regionmesh") -> Engine:
    """An Engine for a PostgreSQL URL (psycopg2), with bounded connect time."""
    u = make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg2")
    return create_engine(
        u,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": connect_timeout, "application_name": application_name},
    )
