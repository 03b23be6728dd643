"""Engines: one per region per process, built from the config, never at import time.

``engine_for(config, region)`` is the way services reach a region's database: the first call
builds the engine, later calls in the same process share it. A forked child (Celery's prefork
pool) starts with an empty cache, so no two processes share a connection.
"""

from __future__ import annotations

import os
import threading

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from regionmesh.config import MeshConfig

_engines: dict[tuple[str, str], Engine] = {}
_lock = threading.Lock()


def make_engine(
    url: str,
    *,
    region: str | None = None,
    pool_size: int = 5,
    connect_timeout: int = 5,
    application_name: str = "regionmesh",
) -> Engine:
    """A new Engine for a PostgreSQL URL (psycopg2), with bounded connect time.

    ``region`` sets ``regionmesh.region`` on every connection: the stamp
    trigger writes it into ``origin_region`` of every replicated row. Services use
    :func:`engine_for`; this is for admin URLs and tests.
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
        # Errors must not carry statement parameters: they hold tenants' input, and error text reaches logs.
        hide_parameters=True,
        connect_args=connect_args,
    )


def engine_for(config: MeshConfig, region: str) -> Engine:
    """This process's engine for ``region`` of ``config`` (built on first use, then shared)."""
    url = config.regions[region].database_url
    key = (url, region)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = make_engine(
                    url, region=region, pool_size=config.settings.db_pool_size, connect_timeout=3,
                    application_name=f"regionmesh-{region}",
                )
    return engine


def dispose(config: MeshConfig, region: str) -> None:
    """Close this process's pooled connections to ``region`` (its server was restarted: every
    pooled connection is dead, and a dead one fails the next statement)."""
    with _lock:
        engine = _engines.get((config.regions[region].database_url, region))
    if engine is not None:
        engine.dispose()


def dispose_all() -> None:
    """Close every cached engine's connections (end of a CLI command, a test)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _forget_after_fork() -> None:
    # The parent's sockets must not be used by the child: drop them without closing.
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
