"""Each region's Redis (its broker): the config file, a TLS mesh's ACL users, start and ping.

Not named ``redis.py``: the client library it uses is ``redis``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import redis

from regionmesh.errors import DevMeshError
from regionmesh.host import pid_alive
from regionmesh.names import submit_queue
from regionmesh.ops.devmesh.folder import HOST, REDIS_USER_PREFIX, MeshFolder
from regionmesh.ops.devmesh.state import MeshState, StateFile
from regionmesh.safefs import ensure_log
from regionmesh.supervisor import free_port, port_is_free, read_pidfile, spawn, wait_for
from regionmesh.tls import make_server_cert


def ensure_redis(folder: MeshFolder, server: str, region: str, state: MeshState, store: StateFile,
                 used: set[int]) -> None:
    """Start ``region``'s Redis unless it answers (its port saved before it starts, its pid after).
    Raises DevMeshError when it exits or does not answer within 30 s."""
    entry = state.region(region).redis
    rdir = folder.root / "redis" / region
    rdir.mkdir(parents=True, exist_ok=True)
    entry.dir, entry.pidfile, entry.log = rdir, rdir / "redis.pid", folder.root / "logs" / f"redis-{region}.log"
    pid = entry.pid or read_pidfile(entry.pidfile)
    if pid_alive(pid) and entry.port and ping(folder, entry.port, tls=state.tls):
        used.add(entry.port)
        return
    port = entry.port
    if not port or port in used or not port_is_free(port):
        port = free_port(avoid=used)
    used.add(port)
    conf = rdir / "redis.conf"
    listen = f"port {port}\n"
    if state.tls:
        if not (rdir / "redis.crt").exists():
            (rdir / "redis.key").unlink(missing_ok=True)
            make_server_cert(folder.ca(), rdir, "redis")
        # No plain-text port at all: only TLS, checked against the mesh CA.
        listen = (f"port 0\ntls-port {port}\ntls-cert-file {rdir / 'redis.crt'}\n"
                  f"tls-key-file {rdir / 'redis.key'}\ntls-ca-cert-file {folder.ca().cert}\n"
                  "tls-auth-clients no\ntls-protocols \"TLSv1.2 TLSv1.3\"\n")
    conf.unlink(missing_ok=True)
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(
            f"bind {HOST}\n{listen}dir {rdir}\npidfile {entry.pidfile}\n"
            f"logfile {entry.log}\ndaemonize no\nprotected-mode yes\n"
            # always: a reply means the write is on disk. everysec may postpone writing the
            # AOF while an fsync is slow and still reply, so a SIGKILL loses acknowledged publishes.
            "appendonly yes\nappendfsync always\nsave \"\"\n"
            "maxmemory-policy noeviction\n"
            + (acl(folder, region) if state.tls else f"requirepass {folder.secret('redis')}\n")
        )
    entry.port, entry.pid = port, None
    store.save(state)
    entry.log.parent.mkdir(parents=True, exist_ok=True)
    ensure_log(entry.log)
    entry.pid = spawn([server, str(conf)], entry.log)
    store.save(state)
    try:
        wait_for(lambda: ping(folder, port, tls=state.tls), 30, f"redis for {region} on port {port}")
    except DevMeshError:
        if not pid_alive(entry.pid):
            log = entry.log.read_text(encoding="utf-8", errors="replace")[-1500:]
            raise DevMeshError(f"redis-server for {region} exited:\n{log}") from None
        raise


def acl(folder: MeshFolder, region: str) -> str:
    """ACL users of a TLS mesh's Redis: the default user is off; ``rm-admin`` (dev up, tests)
    may do anything; ``rm-worker`` anything but the dangerous commands (FLUSHALL, CONFIG, KEYS,
    DEBUG, ...); ``rm-producer`` only what kombu needs to publish to this region's submit
    queue (PING, LPUSH onto ``rm.<region>.submit``, reading the exchange binding set); ``rm-flower``
    reads queues and events and writes only kombu's binding tables; it may PUBLISH (Flower
    broadcasts a wake-up on the control channel whenever it connects), which is also how
    control commands travel: Flower's own basic auth and loopback binding guard those."""
    p = REDIS_USER_PREFIX
    return "".join([
        "user default off\n",
        f"user {p}admin on >{folder.secret('redis')} ~* &* +@all\n",
        f"user {p}worker on >{folder.secret('redis-worker')} ~* &* +@all -@dangerous +info\n",
        # Producers read kombu's binding set, never write it: a binding a producer could add would
        # route its messages into any queue (the steps queue included). The client declares nothing.
        f"user {p}producer on >{folder.secret('redis-producer')} resetchannels -@all +ping "
        f"+lpush +llen +smembers +multi +exec +discard ~{submit_queue(region)}* %R~_kombu.binding*\n",
        # Flower's event receiver keeps kombu's binding tables fresh (a Lua script: SADD, TIME,
        # ZADD) and wakes the workers with a broadcast on the control channel (PUBLISH; Flower
        # always does, so its control commands cannot be told apart in Redis); it writes no key
        # but the binding tables.
        f"user {p}flower on >{folder.secret('redis-flower')} resetchannels &* %R~* %RW~_kombu.binding* -@all "
        "+@read +@connection +subscribe +psubscribe +unsubscribe +punsubscribe +publish +sadd +srem +zadd +zrem "
        "+exists +del +time +multi +exec +discard +eval +evalsha +script|load +script|exists -keys\n",
    ])


def ping(folder: MeshFolder, port: int, *, tls: bool) -> bool:
    """Whether the Redis on ``port`` answers the admin user."""
    options: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(folder.ca_file()), "ssl_cert_reqs": "required",
                               "username": f"{REDIS_USER_PREFIX}admin"} if tls else {}
    client = redis.Redis(host=HOST, port=port, password=folder.secret("redis"), socket_timeout=1,
                         socket_connect_timeout=1, **options)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def recorded_pid(state: MeshState, region: str) -> int | None:
    """The pid ``up`` recorded for ``region``'s Redis, else the one in its pid file."""
    entry = state.region(region).redis
    return entry.pid or read_pidfile(Path(entry.pidfile))
