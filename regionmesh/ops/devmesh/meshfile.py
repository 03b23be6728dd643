"""The mesh files ``up`` writes: ``mesh.toml`` (workers, operators, every role without TLS but Flower),
``flower.toml`` (the same regions, no database or replication secret: Flower reads the broker only)
and, in a TLS mesh, ``producer.toml`` (the same regions, that role's Redis user; flower.toml too
names its own)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from regionmesh.errors import DevMeshError
from regionmesh.ops.devmesh.folder import APP_ROLE, DATABASE, HOST, REDIS_USER_PREFIX, REPLICATION_ROLE
from regionmesh.ops.devmesh.state import MeshState

ROLES = ("worker", "producer", "flower")
# Roles that never open a database: their mesh file names no database or replication secret.
BROKER_ONLY = ("flower",)


def broker_url(state: MeshState, region: str, role: str = "worker", *, port: int | None = None) -> str:
    """``region``'s broker URL as ``role``'s mesh file names it (no password: that is a file),
    on ``port`` instead of its Redis's own when given (a proxy in front of it)."""
    # A TLS mesh's Redis has one ACL user per role (see redis_server.acl); a plain one a password only.
    user = f"{REDIS_USER_PREFIX}{role}@" if state.tls else ""
    return f"{'rediss' if state.tls else 'redis'}://{user}{HOST}:{port or _port(state, region, 'redis')}/0"


def render(state: MeshState, role: str, *, broker_urls: Mapping[str, str] | None = None) -> str:
    """The mesh file for ``role``; ``broker_urls`` replaces the named regions' broker URLs. A
    broker-only role's file names no database or replication secret (the URLs stay: the config
    requires them, and without a password they open nothing)."""
    tls = state.tls
    secrets = role not in BROKER_ONLY
    broker_secret = f"redis-{role}" if tls else "redis"
    unknown = set(broker_urls or {}) - set(state.regions)
    if unknown:
        raise DevMeshError(f"broker URLs for regions the mesh does not have: {', '.join(sorted(unknown))}")
    lines = [
        "# Written by 'regionmesh dev up'. Secrets are files in secrets/ (mode 0600).",
        "[mesh]",
        'name = "dev"',
        f'replication_user = "{REPLICATION_ROLE}"',
        *([f'replication_password = {{ file = "secrets/{REPLICATION_ROLE}" }}',
           "# One role and secret per subscriber -> publisher link; only 'replication setup' reads them.",
           'replication_link_secrets = "secrets/links"'] if secrets else []),
        "# Commands run against this mesh act as this region unless --region or $REGIONMESH_REGION says otherwise.",
        f'default_region = "{next(iter(state.regions))}"',
        "",
    ]
    for region in state.regions:
        pg_port = _port(state, region, "pg")
        peer_tls = f" sslrootcert={state.pg_root / 'ca.crt'}" if tls and state.pg_root else ""
        lines += [
            f"[regions.{region}]",
            f'database_url = "postgresql://{APP_ROLE}@{HOST}:{pg_port}/{DATABASE}"',
            *([f'database_password = {{ file = "secrets/{APP_ROLE}" }}'] if secrets else []),
            f'broker_url = "{(broker_urls or {}).get(region) or broker_url(state, region, role)}"',
            f'broker_password = {{ file = "secrets/{broker_secret}" }}',
            f'peer_conninfo = "host={HOST} port={pg_port} dbname={DATABASE}{peer_tls}"',
            f'sslmode = "{"verify-full" if tls else "disable"}"',
            *(['ca_file = "ca.crt"'] if tls else []),
            "",
        ]
    if state.zones:  # data residency: kept across 'up' like the regions
        lines += ["[zones]", *(f"{z} = [{', '.join(repr(r) for r in members)}]"
                               for z, members in state.zones.items()), ""]
    return "\n".join(lines)


def edited_zones(path: Path, recorded: Mapping[str, list[str]] | None) -> dict[str, list[str]] | None:
    """The ``[zones]`` of the mesh file at ``path`` when an operator changed them there (they differ
    from the ``recorded`` ones ``up`` wrote), else None: ``up`` keeps such an edit instead of writing
    the file over it. A file that does not parse is left to the config loader to report."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8")).get("zones")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    found = {str(z): [str(r) for r in members] for z, members in raw.items() if isinstance(members, list)}
    return found if found != dict(recorded or {}) else None


def write(path: Path, text: str) -> Path:
    """Replace ``path`` whole (readers never see half a file). Returns ``path``."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _port(state: MeshState, region: str, server: str) -> int:
    entry = state.region(region)
    port = entry.pg.port if server == "pg" else entry.redis.port
    if port is None:
        raise DevMeshError(f"{region}'s {'PostgreSQL' if server == 'pg' else 'Redis'} has no port recorded; "
                           "'regionmesh dev up' first")
    return port
