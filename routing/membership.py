"""Zone membership as the mesh holds it: the replicated ``zones`` table, not a process's mesh file.

Placement reads the table itself (``Router``); what else needs the zones (refusals of operations
that would leave a zone, publications' payload filters, verify, retention) takes a config whose
``zones`` were read from a region's database here, so a zone defined on a running mesh
(``regionmesh zones set``) counts everywhere without editing and reloading mesh files.

The mesh file's ``[zones]`` seed the table: once, in one region, after the regions subscribe to
each other (``replication setup``, and ``migrate`` on a mesh that replicates already), so that
the row reaches every region by replication and every copy is the same row. Until a zone's row
is there, the file's entry stands in for it here (a row, a removed zone's too, wins over it), and
the file is all there is against a database without the table (before revision 0023).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from regionmesh.config import MeshConfig
from regionmesh.models import residency
from regionmesh.models.engine import engine_for

UNDEFINED_TABLE = "42P01"


def _sqlstate(exc: ProgrammingError) -> str | None:
    """The SQLSTATE of a driver error: psycopg2 names it ``pgcode``, psycopg 3 ``sqlstate``."""
    return getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)


def mesh_zones(config: MeshConfig, via: str | None = None) -> dict[str, tuple[str, ...]] | None:
    """Zone -> regions as the first region that answers holds them (``via`` first, then the local
    region, then the others in mesh-file order), the mesh file's zones it has no row of included;
    None when none answers or none has the table."""
    order = [r for r in (via, config.local_region, *config.regions) if r and r in config.regions]
    for region in dict.fromkeys(order):
        try:
            held = {**config.zones, **residency.zones(engine_for(config, region))}
            return {name: members for name, members in held.items() if members}
        except ProgrammingError as exc:
            if _sqlstate(exc) == UNDEFINED_TABLE:
                return None  # a schema before 0023: the mesh file's zones are the only ones
            raise
        except Exception:  # an unreachable region: ask the next
            continue
    return None


def seed_from_file(config: MeshConfig, engines: Mapping[str, Engine]) -> tuple[str, list[str]] | None:
    """Insert the mesh file's zones into the first region of ``engines`` that answers, where it has
    no row of them; call it once the regions replicate, so that row is every region's. Returns
    (region, zones inserted), or None when there is nothing to seed or no region answered."""
    if not config.zones:
        return None
    for region, engine in engines.items():
        try:
            return region, residency.seed_zones(engine, config.zones)
        except ProgrammingError as exc:
            if _sqlstate(exc) == UNDEFINED_TABLE:
                return None
            raise
        except OperationalError:  # unreachable: the next one
            continue
    return None


def wait_everywhere(engines: Mapping[str, Engine], zones: Iterable[str], timeout: float) -> list[str]:
    """Until every region of ``engines`` has a row of each of ``zones`` (a seed on its way), at most
    ``timeout`` seconds. Returns the regions still without one."""
    wanted = set(zones)
    deadline = time.monotonic() + timeout
    while True:
        missing = [r for r, engine in engines.items() if not wanted <= set(residency.zones(engine))]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.05)


def with_mesh_zones(config: MeshConfig, via: str | None = None) -> MeshConfig:
    """``config`` with the zones the mesh holds (the mesh file's when no region could say)."""
    found = mesh_zones(config, via)
    return config if found is None else dataclasses.replace(config, zones=found)
