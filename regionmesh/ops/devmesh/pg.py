"""Each region's PostgreSQL cluster: its data folder, initdb, access rules, link passfiles,
bootstrap (roles, database, grants), start and stop. Every server command runs as the server's
user through ``PgBin.command``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from hashlib import sha256
from pathlib import Path
from urllib.parse import quote

from regionmesh.config import MeshConfig
from regionmesh.errors import DevMeshError
from regionmesh.host import pid_alive, pid_exists
from regionmesh.models.admin import (
    bootstrap_cluster,
    grant_in_database,
    link_role,
    lock_slot_functions,
    seal_subscription,
    unseal_subscription,
)
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name
from regionmesh.ops.devmesh.folder import APP_ROLE, DATABASE, HOST, REPLICATION_ROLE, MeshFolder, replace_file
from regionmesh.ops.devmesh.state import MeshState, PgState, StateFile
from regionmesh.pgbin import PgBin, reachable_by
from regionmesh.replication.setup import conninfo
from regionmesh.safefs import create_private_file, ensure_dir, ensure_log, uid_of, verify_dir
from regionmesh.supervisor import free_port, port_is_free, read_pidfile, wait_for
from regionmesh.tls import copy_public, make_server_cert

SHARED_DATA = Path("/var/tmp/regionmesh-data")


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


# -- the data folder -----------------------------------------------------------------------------
def pg_root(root: Path, pg: PgBin, recorded: Path | None) -> Path:
    """The folder holding every region's data folder: ``recorded`` (verified) or a new one."""
    if recorded is not None:
        _verify_pg_root(pg, recorded)
        return recorded
    folder = root / "pg"
    root.mkdir(parents=True, exist_ok=True)
    owner = uid_of(pg.run_as)
    ensure_dir(folder, owner=owner, mode=0o700)
    if pg.run_as is not None and not reachable_by(pg.run_as, folder, write=True):
        # The mesh folder sits under a folder the server user cannot traverse (a
        # root-only home): keep the clusters in a fresh, randomly named folder
        # under the shared data folder (recorded in state.json, verified on reuse).
        ensure_dir(SHARED_DATA, owner=os.geteuid(), mode=0o755)
        digest = sha256(str(root).encode()).hexdigest()[:12]
        mesh_dir = Path(tempfile.mkdtemp(prefix=f"{digest}-", dir=SHARED_DATA))
        os.chmod(mesh_dir, 0o755)
        folder = ensure_dir(mesh_dir / "pg", owner=owner, mode=0o700)
    return folder


def _verify_pg_root(pg: PgBin, root: Path) -> None:
    """A recorded data root is used again only if it still is what ``up`` made."""
    verify_dir(root, owner=uid_of(pg.run_as), private=True)
    if SHARED_DATA in root.parents:
        verify_dir(SHARED_DATA, owner=os.geteuid())
        verify_dir(root.parent, owner=os.geteuid())


def purge_data(state: MeshState) -> None:
    """Delete a data root ``pg_root`` made under the shared data folder (the mesh folder's own
    ``pg/`` goes with the mesh folder)."""
    if state.pg_root is not None and SHARED_DATA in state.pg_root.parents:
        shutil.rmtree(state.pg_root.parent, ignore_errors=True)


# -- access rules and secrets the server reads ----------------------------------------------------
def server_ca(folder: MeshFolder, pg: PgBin, state: MeshState) -> Path:
    """The CA as the PostgreSQL servers' user reads it (subscriptions' ``sslrootcert``)."""
    path = _pg_root(state) / "ca.crt"
    if not path.exists():
        copy_public(folder.ca().cert, path, owner=pg.run_as)
    return path


def write_hba(pg: PgBin, region: str, datadir: Path, state: MeshState) -> None:
    """Who may connect to ``region``'s PostgreSQL, from where, to which database: the
    superuser, the app role and the operator's replication role; each link role only to
    the replicated database (loopback is every peer's address here). Nothing else; with
    TLS only ``hostssl``."""
    kind = "hostssl" if state.tls else "host"
    peers = [sub for sub in state.regions if sub != region]
    rules = [("all", "postgres"), (DATABASE, APP_ROLE), (DATABASE, REPLICATION_ROLE)]
    rules += [(DATABASE, link_role(sub, region)) for sub in peers]
    lines = ["# Written by 'regionmesh dev up'; rewritten on every up."]
    lines += [f"{kind} {db} {user} {HOST}/32 scram-sha-256" for db, user in rules]
    lines += ["host all all 0.0.0.0/0 reject", "host all all ::/0 reject", "local all all reject", ""]
    replace_file(datadir / "pg_hba.conf", "\n".join(lines), pg.run_as)


def write_passfiles(folder: MeshFolder, pg: PgBin, state: MeshState) -> None:
    """Per subscribing region, the passwords of its link roles, in a 0600 file its server reads
    (the subscriptions name it as ``passfile``; the catalog holds no password)."""
    for sub in state.regions:
        lines = [f"{HOST}:*:{DATABASE}:{link_role(sub, pub)}:{folder.secret(f'links/{link_role(sub, pub)}')}"
                 for pub in state.regions if pub != sub]
        replace_file(passfile(state, sub), "\n".join(lines) + "\n", pg.run_as)


def passfile(state: MeshState, region: str) -> Path:
    return _pg_root(state) / f"{region}.pgpass"


def seal_subscriptions(folder: MeshFolder, state: MeshState, config: MeshConfig, regions: list[str], *,
                       seal: bool = True) -> None:
    """A TLS mesh's subscriptions read their password from the passfile, not the catalog
    (``seal``); unsealed, their owner (the app role) may alter them again. No-op without TLS:
    a plain dev mesh stays alterable by the app role (tests re-point links through proxies)."""
    if not state.tls:
        return
    for sub in regions:
        db_admin = make_engine(admin_url(folder, state, sub, DATABASE), pool_size=1)
        try:
            for pub in regions:
                if pub == sub:
                    continue
                owner_info = conninfo(config, pub, sub)
                if seal:
                    info = re.sub(r"password='(?:[^'\\]|\\.)*'", f"passfile={passfile(state, sub)}", owner_info)
                    seal_subscription(db_admin, subscription_name(sub, pub), info)
                else:
                    unseal_subscription(db_admin, subscription_name(sub, pub), owner_info)
        finally:
            db_admin.dispose()


def admin_url(folder: MeshFolder, state: MeshState, region: str, database: str = "postgres") -> str:
    """Superuser URL of a region's cluster (tests and bootstrap only)."""
    port = state.region(region).pg.port
    if port is None:
        raise DevMeshError(f"PostgreSQL of {region} has no port recorded; 'regionmesh dev up' first")
    return _superuser_url(folder, state.tls, port, database)


def _superuser_url(folder: MeshFolder, tls: bool, port: int, database: str) -> str:
    url = f"postgresql://postgres:{quote(folder.secret('postgres'), safe='')}@{HOST}:{port}/{database}"
    if tls:
        url += f"?sslmode=verify-full&sslrootcert={quote(str(folder.ca_file()))}"
    return url


# -- start, bootstrap, stop -------------------------------------------------------------------------
def _run(pg: PgBin, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(pg.command(*args), capture_output=True, text=True, timeout=timeout, check=False)


def _running(pg: PgBin, datadir: Path) -> bool:
    if not (datadir / "PG_VERSION").exists():
        return False
    return _run(pg, pg.exe("pg_ctl"), "status", "-D", str(datadir)).returncode == 0


def wait_reaped(datadir: Path, timeout_s: float = 30.0) -> None:
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


def _initdb(folder: MeshFolder, pg: PgBin, region: str, datadir: Path, n_regions: int, state: MeshState) -> None:
    shutil.rmtree(datadir, ignore_errors=True)
    # initdb runs as the server user, who cannot read root's secrets folder.
    tmp_pw = _pg_root(state) / f".pw-{region}"
    tmp_pw.unlink(missing_ok=True)
    create_private_file(tmp_pw, folder.secret("postgres").encode("ascii"), owner=pg.run_as)
    try:
        res = _run(
            pg, pg.exe("initdb"), "-D", str(datadir), "-U", "postgres", f"--pwfile={tmp_pw}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions", "-c", "timezone=UTC",
        )
    finally:
        tmp_pw.unlink(missing_ok=True)
    if res.returncode != 0:
        raise DevMeshError(f"initdb for {region} failed:\n{res.stdout}{res.stderr}")
    settings = pg_settings(n_regions)
    if state.tls:
        make_server_cert(folder.ca(), datadir, "server", owner=pg.run_as)
        settings.update(ssl="on", ssl_cert_file="'server.crt'", ssl_key_file="'server.key'",
                        ssl_min_protocol_version="'TLSv1.2'")
    conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
    with open(datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write("\n# regionmesh dev mesh\n" + conf)


def ensure_pg(folder: MeshFolder, pg: PgBin, region: str, n_regions: int, state: MeshState, store: StateFile,
              used: set[int]) -> bool:
    """Create and start ``region``'s cluster as needed (its port saved before it starts).
    Returns whether it was started. Raises DevMeshError when initdb or the start fails."""
    entry = state.region(region).pg
    entry.bindir, entry.run_as, entry.log = pg.bindir, pg.run_as, folder.root / "logs" / f"pg-{region}.log"
    datadir = entry.datadir
    if not (datadir / "PG_VERSION").exists():
        _initdb(folder, pg, region, datadir, n_regions, state)
        entry.bootstrapped = False
    write_hba(pg, region, datadir, state)
    wait_reaped(datadir)
    if _running(pg, datadir):
        if entry.port is not None:
            used.add(entry.port)
        _run(pg, pg.exe("pg_ctl"), "reload", "-D", str(datadir))
        return False
    port = entry.port
    if not port or port in used or not port_is_free(port):
        port = free_port(avoid=used)
    used.add(port)
    entry.port = port
    store.save(state)
    entry.log.parent.mkdir(parents=True, exist_ok=True)
    ensure_log(entry.log, owner=pg.run_as)
    res = _run(
        pg, pg.exe("pg_ctl"), "start", "-w", "-t", "90", "-D", str(datadir), "-l", str(entry.log), "-o", f"-p {port}"
    )
    if res.returncode != 0:
        tail = entry.log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise DevMeshError(f"PostgreSQL for {region} did not start on port {port}:\n{res.stderr}\n{tail}")
    return True


def bootstrap(folder: MeshFolder, region: str, state: MeshState, regions: list[str]) -> None:
    """Roles (the app, the operator's, one per link publishing from here), the database,
    grants, and the slot functions locked. Idempotent; runs on every ``up`` so a new
    region's links get their roles."""
    entry = state.region(region).pg
    links = {link_role(sub, region): folder.secret(f"links/{link_role(sub, region)}") for sub in regions if sub != region}
    admin = make_engine(admin_url(folder, state, region), pool_size=1)
    try:
        bootstrap_cluster(
            admin,
            database=DATABASE,
            app_role=APP_ROLE,
            app_password=folder.secret(APP_ROLE),
            replication_role=REPLICATION_ROLE,
            replication_password=folder.secret(REPLICATION_ROLE),
            region=region,
            link_roles=links,
        )
    finally:
        admin.dispose()
    db_admin = make_engine(admin_url(folder, state, region, DATABASE), pool_size=1)
    try:
        grant_in_database(db_admin, app_role=APP_ROLE)
    finally:
        db_admin.dispose()
    # Function privileges live in each database; template1 covers databases made later.
    for database in (DATABASE, "postgres", "template1"):
        db = make_engine(admin_url(folder, state, region, database), pool_size=1)
        try:
            lock_slot_functions(db, allowed=(REPLICATION_ROLE,))
        finally:
            db.dispose()
    entry.bootstrapped = True


def postmaster_pid(entry: PgState) -> int | None:
    return read_pidfile(entry.datadir / "postmaster.pid")


def stop(region: str, entry: PgState, mode: str = "fast") -> subprocess.CompletedProcess[str]:
    """``pg_ctl stop`` (``mode`` fast or immediate) as the server's user, waiting up to a minute.
    Raises DevMeshError when no bin folder is recorded."""
    if entry.bindir is None:
        raise DevMeshError(f"no PostgreSQL bin folder recorded for {region}; stop its postmaster by hand")
    pg = PgBin.recorded(entry.bindir, entry.run_as)
    return _run(pg, pg.exe("pg_ctl"), "stop", "-D", str(entry.datadir), "-m", mode, "-w", "-t", "60", timeout=90)


def _pg_root(state: MeshState) -> Path:
    if state.pg_root is None:
        raise DevMeshError(f"the mesh in {state.root} has no data folder recorded; 'regionmesh dev up' first")
    return state.pg_root
