"""Engines: one per region URL, built from the config, never at import time."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url


def make_engine(
    url: str,
    *,
    region: str | None = None,
    pool_size: int = 5,
    connect_timeout: int = 5,
    application_name: str = "regionmesh",
) -> Engine:
    """An Engine for a PostgreSQL URL (psycopg2), with bounded connect time.

    ``region`` sets ``regionmesh.region`` on every connection: the stamp
    trigger writes it into ``origin_region`` of every replicated row.
    """
    u = make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg2")
    connect_args: dict[str, object] = {"connect_timeout": connect_timeout, "application_name": application_name}
    if region is not None:
        connect_args["options"] = f"-c regionmesh.region={region}"
    return create_engine(
        u,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,  # a round trip per checkout; disconnects surface as errors and are retried
        pool_recycle=1800,
        connect_args=connect_args,
    )
