"""The local multi-region mesh: one PostgreSQL cluster and one Redis per region.

Layout of the mesh folder (default ``.regionmesh``)::

    mesh.toml            the mesh file, written by ``up``
    state.json           what ``up`` started (written before each start; see state.py)
    secrets/             generated passwords, mode 0600, read via {file = ...}
    pg/<region>/         data folders (or under /var/tmp when the folder is
                         not reachable by the unprivileged server user)
    redis/<region>/      redis.conf, AOF, pid file
    logs/                one log per server

Modules: ``mesh`` (``DevMesh``: up, add a region, down, status), ``state`` (the typed records over
``state.json``), ``folder`` (secrets, the CA, the mesh's role names), ``pg`` (PostgreSQL),
``redis_server`` (Redis), ``processes`` (workers, Flower, metrics), ``meshfile`` (the mesh files).
Outside code asks ``DevMesh`` (``dev.region("us-east").pg.datadir``), never ``state.json``.
"""

from regionmesh.ops.devmesh.folder import APP_ROLE, DATABASE, DEFAULT_REGIONS, HOST, REPLICATION_ROLE
from regionmesh.ops.devmesh.mesh import DevMesh, RegionHealth
from regionmesh.ops.devmesh.pg import pg_settings
from regionmesh.ops.devmesh.processes import DEV_WORKER_TIMERS
from regionmesh.ops.devmesh.state import MeshState, PgState, ProcessState, RedisState, RegionState

__all__ = [
    "APP_ROLE", "DATABASE", "DEFAULT_REGIONS", "DEV_WORKER_TIMERS", "HOST", "REPLICATION_ROLE",
    "DevMesh", "MeshState", "PgState", "ProcessState", "RedisState", "RegionHealth", "RegionState", "pg_settings",
]
