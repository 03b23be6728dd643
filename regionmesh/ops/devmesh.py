"""The local multi-region mesh: one PostgreSQL cluster and one Redis per region.

Layout of the mesh folder (default ``.regionmesh``)::

    mesh.toml            the mesh file, written by ``up``
    state.json           what ``up`` started (written before each start)
    secrets/             generated passwords, mode 0600, read via {file = ...}
    pg/<region>/         data folders (or under /var/tmp when the folder is
                         not reachable by the unprivileged server user)
    redis/<region>/      redis.conf, AOF, pid file
    logs/                one log per server
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import redis

from regionmesh.config import REGION_NAME_RE, MeshConfig, load_config
from regionmesh.errors import DevMeshError
from regionmesh.host import pid_alive
from regionmesh.models.admin import bootstrap_cluster, grant_in_database, server_facts
from regionmesh.models.engine import engine_for, make_engine
from regionmesh.names import steps_queue, submit_queue
from regionmesh.ops.migrate import current_revision, upgrade_all
from regionmesh.pgbin import PgBin, find_pg_bin, reachable_by
from regionmesh.replication.join import add_region
from regionmesh.replication.setup import setup
from regionmesh.supervisor import (
    StateFile,
    free_port,
    port_is_free,
    read_pidfile,
    spawn,
    terminate,
    wait_for,
)

DEFAULT_REGIONS = ("us-east", "eu-west", "ap-south")
DATABASE = "regionmesh"
APP_ROLE = "regionmesh"
REPLICATION_ROLE = "rm_replicator"
SECRET_NAMES = ("postgres", APP_ROLE, REPLICATION_ROLE, "redis", "flower")
HOST = "127.0.0.1"
DEV_WORKER_TIMERS = {
    "REGIONMESH_RECONCILE_INTERVAL_S": "0.5",
    "REGIONMESH_REQUEUE_AFTER_S": "5",
    "REGIONMESH_FORWARD_CONFIRM_S": "10",
}


def pg_settings(n_regions: int) -> dict[str, str]:
    """Server settings for a mesh of ``n_regions`` (a slot and a sender per peer, with headroom)."""
    slots = max(10, 2 * n_regions + 8)
    return {
        "listen_addresses": f"'{HOST}'",
        "unix_socket_directories": "''",
        "wal_level": "logical",
        "track_commit_timestamp": "on",
        "max_replication_slots": str(slots),
        "max_wal_senders": str(slots),
        "max_logical_replication_workers": str(slots),
        "max_worker_processes": str(slots + 8),
        "max_slot_wal_keep_size": "'4GB'",
        "max_connections": "200",
        "shared_buffers": "'128MB'",
        "wal_receiver_status_interval": "'1s'",
        "wal_retrieve_retry_interval": "'1s'",
    }


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

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.state = StateFile(self.root / "state.json")

    @property
    def mesh_file(self) -> Path:
        return self.root / "mesh.toml"

    # -- secrets ---------------------------------------------------------
    def _secret(self, name: str) -> str:
        path = self.root / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_urlsafe(24))
        return path.read_text(encoding="ascii").strip()

    # -- PostgreSQL ------------------------------------------------------
    def _pg_root(self, pg: PgBin, state: dict[str, Any]) -> Path:
        if "pg_root" in state:
            return Path(state["pg_root"])
        root = self.root / "pg"
        root.mkdir(parents=True, exist_ok=True)
        if pg.run_as is not None:
            shutil.chown(root, user=pg.run_as, group=None)
            if not reachable_by(pg.run_as, root, write=True):
                # The mesh folder sits under a folder the server user cannot
                # traverse (a root-only home): keep the clusters elsewhere.
                digest = sha256(str(self.root).encode()).hexdigest()[:12]
                root = Path("/var/tmp/regionmesh-data") / digest / "pg"
                root.mkdir(parents=True, exist_ok=True)
                for part in (root.parent.parent, root.parent):
                    os.chmod(part, 0o755)
                shutil.chown(root, user=pg.run_as, group=None)
        return root

    def _run_pg(self, pg: PgBin, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(pg.command(*args), capture_output=True, text=True, timeout=timeout, check=False)

    def _pg_running(self, pg: PgBin, datadir: Path) -> bool:
        if not (datadir / "PG_VERSION").exists():
            return False
        return self._run_pg(pg, pg.exe("pg_ctl"), "status", "-D", str(datadir)).returncode == 0

    def _ensure_pg(self, pg: PgBin, region: str, n_regions: int, data: dict[str, Any], used: set[int]) -> None:
        entry = data["regions"].setdefault(region, {}).setdefault("pg", {})
        datadir = Path(entry.get("datadir") or Path(data["pg_root"]) / region)
        entry.update(datadir=str(datadir), bindir=str(pg.bindir), run_as=pg.run_as, log=str(self.root / "logs" / f"pg-{region}.log"))
        if not (datadir / "PG_VERSION").exists():
            shutil.rmtree(datadir, ignore_errors=True)
            pwfile = self.root / "secrets" / "postgres"
            self._secret("postgres")
            # initdb runs as the server user, who cannot read root's secrets folder.
            tmp_pw = Path(data["pg_root"]) / f".pw-{region}"
            tmp_pw.write_text(pwfile.read_text(encoding="ascii"), encoding="ascii")
            os.chmod(tmp_pw, 0o600)
            if pg.run_as is not None:
                shutil.chown(tmp_pw, user=pg.run_as, group=None)
            try:
                res = self._run_pg(
                    pg, pg.exe("initdb"), "-D", str(datadir), "-U", "postgres", f"--pwfile={tmp_pw}",
                    "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions", "-c", "timezone=UTC",
                )
            finally:
                tmp_pw.unlink(missing_ok=True)
            if res.returncode != 0:
                raise DevMeshError(f"initdb for {region} failed:\n{res.stdout}{res.stderr}")
            conf = "".join(f"{k} = {v}\n" for k, v in pg_settings(n_regions).items())
            with open(datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
                fh.write("\n# regionmesh dev mesh\n" + conf)
            entry["bootstrapped"] = False
        if self._pg_running(pg, datadir):
            used.add(int(entry["port"]))
            return
        port = entry.get("port")
        if not port or port in used or not port_is_free(port):
            port = free_port(avoid=used)
        used.add(port)
        entry["port"] = port
        self.state.save(data)
        Path(entry["log"]).parent.mkdir(parents=True, exist_ok=True)
        log = Path(entry["log"])
        log.touch()
        if pg.run_as is not None:
            shutil.chown(log, user=pg.run_as, group=None)
        res = self._run_pg(
            pg, pg.exe("pg_ctl"), "start", "-w", "-t", "90", "-D", str(datadir), "-l", str(log), "-o", f"-p {port}"
        )
        if res.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise DevMeshError(f"PostgreSQL for {region} did not start on port {port}:\n{res.stderr}\n{tail}")

    def _bootstrap(self, region: str, data: dict[str, Any]) -> None:
        entry = data["regions"][region]["pg"]
        if entry.get("bootstrapped"):
            return
        admin = make_engine(self._url("postgres", "postgres", entry["port"], "postgres"), pool_size=1)
        try:
            bootstrap_cluster(
                admin,
                database=DATABASE,
                app_role=APP_ROLE,
                app_password=self._secret(APP_ROLE),
                replication_role=REPLICATION_ROLE,
                replication_password=self._secret(REPLICATION_ROLE),
                region=region,
            )
        finally:
            admin.dispose()
        db_admin = make_engine(self._url("postgres", "postgres", entry["port"], DATABASE), pool_size=1)
        try:
            grant_in_database(db_admin, app_role=APP_ROLE)
        finally:
            db_admin.dispose()
        entry["bootstrapped"] = True
        self.state.save(data)

    def admin_url(self, region: str, database: str = "postgres") -> str:
        """Superuser URL of a region's cluster (tests and bootstrap only)."""
        port = self.state.load()["regions"][region]["pg"]["port"]
        return self._url("postgres", "postgres", int(port), database)

    def pids(self) -> list[int]:
        """Every server process ``up`` recorded that is alive now (postmasters, redis, workers)."""
        out: list[int] = []
        for entry in self.state.load()["regions"].values():
            candidates = [entry.get("redis", {}).get("pid")]
            candidates += [w.get("pid") for w in entry.get("workers", [])]
            datadir = entry.get("pg", {}).get("datadir")
            if datadir:
                candidates.append(read_pidfile(Path(datadir) / "postmaster.pid"))
            out += [pid for pid in candidates if pid_alive(pid)]
        return out

    def _url(self, user: str, secret: str, port: int, database: str) -> str:

        return f"postgresql://{user}:{quote(self._secret(secret), safe='')}@{HOST}:{port}/{database}"

    def kill_region(self, region: str) -> list[int]:
        """SIGKILL everything of ``region``: workers (and their pools), Redis, PostgreSQL (every
        backend). ``up`` restarts its servers; workers are started again by the caller."""

        entry = self.state.load()["regions"][region]
        roots = [w.get("pid") for w in entry.get("workers", [])]
        roots.append(entry.get("redis", {}).get("pid"))
        datadir = entry.get("pg", {}).get("datadir")
        if datadir:
            roots.append(read_pidfile(Path(datadir) / "postmaster.pid"))
        killed = []
        for pid in filter(None, roots):
            try:
                proc = psutil.Process(pid)
                procs = [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                try:
                    p.kill()
                    killed.append(p.pid)
                except psutil.NoSuchProcess:
                    pass
        for pid in killed:
            wait_for(lambda pid=pid: not pid_alive(pid), 10, f"pid {pid} to die")
        with self.state.locked():
            data = self.state.load()
            data["regions"][region]["workers"] = []
            self.state.save(data)
        return killed

    def stop_pg(self, region: str, mode: str = "fast") -> None:
        """Stop one region's PostgreSQL (``mode`` fast or immediate); ``up`` starts it again."""
        pentry = self.state.load()["regions"][region]["pg"]
        cmd = [str(Path(pentry["bindir"]) / "pg_ctl"), "stop", "-D", pentry["datadir"], "-m", mode, "-w", "-t", "60"]
        if pentry.get("run_as"):
            cmd = ["runuser", "-u", pentry["run_as"], "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
        if res.returncode != 0:
            raise DevMeshError(f"could not stop PostgreSQL of {region}: {res.stderr}")

    # -- Redis -------------------------------------------------------------
    def _ensure_redis(self, server: str, region: str, data: dict[str, Any], used: set[int]) -> None:
        entry = data["regions"].setdefault(region, {}).setdefault("redis", {})
        rdir = self.root / "redis" / region
        rdir.mkdir(parents=True, exist_ok=True)
        pidfile = rdir / "redis.pid"
        entry.update(dir=str(rdir), pidfile=str(pidfile), log=str(self.root / "logs" / f"redis-{region}.log"))
        pid = entry.get("pid") or read_pidfile(pidfile)
        if pid_alive(pid) and entry.get("port") and self._redis_ping(int(entry["port"])):
            used.add(int(entry["port"]))
            return
        port = entry.get("port")
        if not port or port in used or not port_is_free(port):
            port = free_port(avoid=used)
        used.add(port)
        conf = rdir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(
                f"bind {HOST}\nport {port}\ndir {rdir}\npidfile {pidfile}\n"
                f"logfile {entry['log']}\ndaemonize no\nprotected-mode yes\n"
                "appendonly yes\nappendfsync everysec\nsave \"\"\n"
                "maxmemory-policy noeviction\n"
                f"requirepass {self._secret('redis')}\n"
            )
        entry.update(port=port, pid=None)
        self.state.save(data)
        Path(entry["log"]).parent.mkdir(parents=True, exist_ok=True)
        entry["pid"] = spawn([server, str(conf)], Path(entry["log"]))
        self.state.save(data)
        try:
            wait_for(lambda: self._redis_ping(port), 30, f"redis for {region} on port {port}")
        except DevMeshError:
            if not pid_alive(entry["pid"]):
                log = Path(entry["log"]).read_text(encoding="utf-8", errors="replace")[-1500:]
                raise DevMeshError(f"redis-server for {region} exited:\n{log}") from None
            raise

    def _redis_ping(self, port: int) -> bool:
        client = redis.Redis(host=HOST, port=port, password=self._secret("redis"), socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    # -- workers ---------------------------------------------------------------
    def start_worker(
        self,
        region: str,
        *,
        concurrency: int = 2,
        extra_env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Start one ``celery worker`` for ``region`` (recorded before it starts). Returns its record."""
        with self.state.locked():
            data = self.state.load()
            entry = data["regions"][region]
            workers = entry.setdefault("workers", [])
            n = len(workers) + 1
            while any(w.get("name") == f"w{n}" for w in workers):
                n += 1
            name = f"w{n}"
            log = self.root / "logs" / f"worker-{region}-{name}.log"
            record: dict[str, Any] = {"name": name, "log": str(log), "pid": None, "env": dict(extra_env or {})}
            workers.append(record)
            self.state.save(data)
            env = dict(os.environ)
            # A local mesh recovers on shorter timers than the production defaults.
            for key, value in DEV_WORKER_TIMERS.items():
                env.setdefault(key, value)
            env.update(
                REGIONMESH_CONFIG=str(self.mesh_file), REGIONMESH_REGION=region, PYTHONUNBUFFERED="1",
                PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir(region)),
                **(extra_env or {}),
            )
            offset = log.stat().st_size if log.exists() else 0
            cmd = [
                sys.executable, "-m", "celery", "-A", "regionmesh.workers.app", "worker",
                "-Q", f"{submit_queue(region)},{steps_queue(region)}",
                "-n", f"{region}-{name}@%h", "-c", str(concurrency), "--loglevel", "INFO",
                "--without-mingle", "--without-gossip",
            ]
            record["pid"] = spawn(cmd, log, env=env, cwd=env.get("REGIONMESH_WORKER_CWD"))
            self.state.save(data)
        if wait:
            def ready() -> bool:
                if not pid_alive(record["pid"]):
                    tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
                    raise DevMeshError(f"worker {name} for {region} exited:\n{tail}")
                with open(log, "rb") as fh:
                    fh.seek(offset)
                    return b" ready." in fh.read()

            wait_for(ready, 60, f"worker {name} of {region} to be ready")
        return record

    def metrics_dir(self, region: str) -> Path:
        path = self.root / "metrics" / region
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start_metrics(self, region: str) -> dict[str, Any]:
        """Start ``regionmesh metrics serve`` for ``region`` on a free port (reused if running)."""
        return self._start_service(
            region, "metrics",
            lambda port: [sys.executable, "-m", "regionmesh", "metrics", "serve", "--port", str(port),
                          "--multiproc-dir", str(self.metrics_dir(region))],
            {},
        )

    def start_flower(self, region: str) -> dict[str, Any]:
        """Start Flower for ``region`` on a free port, with basic auth (user ``admin``,
        password in ``secrets/flower``, or ``$REGIONMESH_FLOWER_AUTH`` as ``user:password``)."""
        auth = os.environ.get("REGIONMESH_FLOWER_AUTH") or f"admin:{self._secret('flower')}"
        return self._start_service(
            region, "flower",
            lambda port: [sys.executable, "-m", "celery", "-A", "regionmesh.workers.app", "flower", f"--port={port}",
                          f"--address={HOST}", "--purge_offline_workers=60"],
            {"FLOWER_BASIC_AUTH": auth, "FLOWER_UNAUTHENTICATED_API": "false"},
        )

    def _start_service(self, region: str, name: str, command: Any, extra_env: dict[str, str]) -> dict[str, Any]:
        """A region's HTTP side process on a free port, recorded before it starts; reused if running."""
        with self.state.locked():
            data = self.state.load()
            procs = data["regions"][region].setdefault("workers", [])
            running = [w for w in procs if w.get("name") == name and pid_alive(w.get("pid"))]
            if running:
                return dict(running[0])
            procs[:] = [w for w in procs if w.get("name") != name]
            port = free_port()
            log = self.root / "logs" / f"{name}-{region}.log"
            record: dict[str, Any] = {"name": name, "log": str(log), "pid": None, "port": port}
            procs.append(record)
            self.state.save(data)
            env = dict(os.environ, REGIONMESH_CONFIG=str(self.mesh_file), REGIONMESH_REGION=region, **extra_env)
            record["pid"] = spawn(command(port), log, env=env)
            self.state.save(data)

        def listening() -> bool:
            if not pid_alive(record["pid"]):
                raise DevMeshError(f"{name} for {region} exited: {log.read_text(errors='replace')[-1500:]}")
            with socket.socket() as sock:
                return sock.connect_ex((HOST, port)) == 0

        wait_for(listening, 60, f"{name} of {region} on port {port}")
        return record

    def workers(self, region: str) -> list[dict[str, Any]]:
        """Live celery workers of ``region`` (not Flower)."""
        return [
            w for w in self.state.load()["regions"].get(region, {}).get("workers", [])
            if pid_alive(w.get("pid")) and w.get("name") not in ("flower", "metrics")
        ]

    def stop_worker(self, region: str, name: str, *, kill: bool = False) -> None:
        """Stop one worker (warm shutdown: its unacked messages go back at once); ``kill``: SIGKILL."""
        with self.state.locked():
            data = self.state.load()
            workers = data["regions"][region].get("workers", [])
            for w in workers:
                if w.get("name") == name and pid_alive(w.get("pid")):
                    if kill:

                        try:
                            procs = [psutil.Process(w["pid"]), *psutil.Process(w["pid"]).children(recursive=True)]
                        except psutil.NoSuchProcess:
                            procs = []
                        for p in procs:
                            try:
                                p.kill()
                            except psutil.NoSuchProcess:
                                pass
                        wait_for(lambda pid=w["pid"]: not pid_alive(pid), 10, f"worker {name} to die")
                    else:
                        terminate(w["pid"], timeout=30, group=True)
            data["regions"][region]["workers"] = [w for w in workers if w.get("name") != name]
            self.state.save(data)

    # -- mesh file -----------------------------------------------------------
    def _write_mesh_file(self, data: dict[str, Any]) -> None:
        lines = [
            "# Written by 'regionmesh dev up'. Secrets are files in secrets/ (mode 0600).",
            "[mesh]",
            'name = "dev"',
            f'replication_user = "{REPLICATION_ROLE}"',
            f'replication_password = {{ file = "secrets/{REPLICATION_ROLE}" }}',
            "# Commands run against this mesh act as this region unless --region or $REGIONMESH_REGION says otherwise.",
            f'default_region = "{next(iter(data["regions"]))}"',
            "",
        ]
        for region, entry in data["regions"].items():
            pg_port, redis_port = entry["pg"]["port"], entry["redis"]["port"]
            lines += [
                f"[regions.{region}]",
                f'database_url = "postgresql://{APP_ROLE}@{HOST}:{pg_port}/{DATABASE}"',
                f'database_password = {{ file = "secrets/{APP_ROLE}" }}',
                f'broker_url = "redis://{HOST}:{redis_port}/0"',
                'broker_password = { file = "secrets/redis" }',
                f'peer_conninfo = "host={HOST} port={pg_port} dbname={DATABASE}"',
                'sslmode = "disable"',
                "",
            ]
        tmp = self.mesh_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines), encoding="utf-8")
        tmp.replace(self.mesh_file)

    # -- public --------------------------------------------------------------
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
    ) -> MeshConfig:
        """Start (or reuse) every region's servers, write the mesh file, migrate.

        Raises DevMeshError (and ConfigError for bad region names).
        """
        server = shutil.which("redis-server")
        if server is None:
            raise DevMeshError(
                "redis-server is not on PATH. Install it: 'apt-get install redis-server' "
                "(Debian/Ubuntu), 'brew install redis' (macOS), or put its folder on PATH."
            )
        pg = find_pg_bin()
        with self.state.locked():
            data = self.state.load()
            # A mesh only grows through up: recorded regions stay, requested ones are added.
            wanted = list(data["regions"]) + [r for r in (regions or []) if r not in data["regions"]]
            wanted = wanted or list(DEFAULT_REGIONS)

            for name in wanted:
                if not REGION_NAME_RE.match(name):
                    raise DevMeshError(f"invalid region name {name!r}: use a lowercase letter, then letters, digits or '-' (max 24)")
            for name in SECRET_NAMES:
                self._secret(name)
            data["pg_root"] = str(self._pg_root(pg, data))
            self.state.save(data)
            n_total = len(set(data["regions"]) | set(wanted))
            used: set[int] = set()
            for region in wanted:
                self._ensure_pg(pg, region, n_total, data, used)
                self.state.save(data)
                self._bootstrap(region, data)
                self._ensure_redis(server, region, data, used)
                self.state.save(data)
            self._write_mesh_file(data)
        config = load_config(str(self.mesh_file))
        if migrate:

            upgrade_all(config)
            with self.state.locked():
                data = self.state.load()
                if not any(e.get("joined") for e in data["regions"].values()):
                    # A new mesh: every region starts empty, so all are joined at once.
                    for e in data["regions"].values():
                        e["joined"] = True
                    self.state.save(data)
                joined = [r for r, e in data["regions"].items() if e.get("joined")]
            if replicate and len(joined) > 1:

                setup(config, joined)
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

    def add_region(self, name: str, *, seed: str | None = None) -> Any:
        """Start ``name`` and join it to the running mesh (Zodan), copying from ``seed``.
        Starts its workers if the other regions have any. Returns the join report."""

        data = self.state.load()
        existing = [r for r, e in data["regions"].items() if e.get("joined")]
        if name in existing:
            raise DevMeshError(f"region {name} is already part of the mesh")
        if not existing:
            raise DevMeshError("no running mesh here; 'regionmesh dev up' first")
        workers = max((len(self.workers(r)) for r in existing), default=0)
        config = self.up([*existing, name], replicate=False)
        report = add_region(config, name, seed=seed or existing[0], new_admin_url=self.admin_url(name, DATABASE))
        with self.state.locked():
            data = self.state.load()
            data["regions"][name]["joined"] = True
            self.state.save(data)
        for _ in range(workers):
            self.start_worker(name)
        return report

    def down(self, *, purge: bool = False) -> list[str]:
        """Stop exactly what ``up`` recorded; ``purge`` also deletes the data. Returns what stopped."""
        stopped: list[str] = []
        with self.state.locked():
            data = self.state.load()
            for region, entry in data["regions"].items():
                for worker in entry.get("workers", []):
                    if pid_alive(worker.get("pid")):
                        terminate(worker["pid"], timeout=20, group=True)
                        stopped.append(f"{region} {worker.get('name', 'worker')}")
                entry["workers"] = []
                rentry = entry.get("redis", {})
                pid = rentry.get("pid") or read_pidfile(Path(rentry.get("pidfile", "/nonexistent")))
                if pid_alive(pid):
                    terminate(pid)
                    stopped.append(f"{region} redis")
                rentry["pid"] = None
                pentry = entry.get("pg", {})
                datadir = Path(pentry.get("datadir", "/nonexistent"))
                if (datadir / "postmaster.pid").exists():
                    postmaster = read_pidfile(datadir / "postmaster.pid")
                    run_as = pentry.get("run_as")
                    pg_ctl = str(Path(pentry["bindir"]) / "pg_ctl")
                    cmd = [pg_ctl, "stop", "-D", str(datadir), "-m", "fast", "-w", "-t", "60"]
                    if run_as:
                        cmd = ["runuser", "-u", run_as, "--", *cmd]
                    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
                    if pid_alive(postmaster):
                        terminate(postmaster)
                    stopped.append(f"{region} postgres")
            if purge:
                pg_root = data.get("pg_root")
                if pg_root and "/var/tmp/regionmesh-data/" in pg_root:
                    shutil.rmtree(Path(pg_root).parent, ignore_errors=True)
                for sub in ("pg", "redis", "logs", "secrets"):
                    shutil.rmtree(self.root / sub, ignore_errors=True)
                for f in ("mesh.toml", "state.json"):
                    (self.root / f).unlink(missing_ok=True)
            else:
                self.state.save(data)
        return stopped

    def status(self) -> list[RegionHealth]:
        """Health of every region that ``up`` recorded."""

        data = self.state.load()
        out: list[RegionHealth] = []
        config = load_config(str(self.mesh_file)) if self.mesh_file.exists() else None
        for region, entry in data["regions"].items():
            pg_port = entry.get("pg", {}).get("port")
            redis_port = entry.get("redis", {}).get("port")
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
            redis_ok = bool(redis_port) and self._redis_ping(int(redis_port))
            out.append(
                RegionHealth(
                    region=region,
                    pg_port=pg_port,
                    redis_port=redis_port,
                    pg_ok=pg_ok,
                    pg_detail=pg_detail,
                    redis_ok=redis_ok,
                    redis_detail="PONG" if redis_ok else "down",
                    revision=revision,
                )
            )
        return out
