"""TLS end to end: the demo runs on a mesh where every PostgreSQL and Redis connection is TLS
verified against the mesh CA, and plain-text or wrong-CA connections are refused."""

from __future__ import annotations

import urllib.request
from base64 import b64encode
from pathlib import Path
from urllib.error import HTTPError

import psycopg2
import pytest
import redis
from sqlalchemy import text

from regionmesh.models.engine import make_engine
from regionmesh.ops.demo import DemoResult
from regionmesh.supervisor import wait_for
from regionmesh.tls import make_ca
from tests.conftest import Mesh

HOST = "127.0.0.1"


def _pg_port(mesh: Mesh, region: str) -> int:
    return int(mesh.dev.region(region).pg.port or 0)


def _redis_port(mesh: Mesh, region: str) -> int:
    return int(mesh.dev.region(region).redis.port or 0)


def _secret(mesh: Mesh, name: str) -> str:
    return (mesh.dev.root / "secrets" / name).read_text().strip()


def test_demo_runs_on_a_tls_mesh_and_every_connection_is_encrypted(tls_mesh: Mesh, demo_on_tls: DemoResult) -> None:
    assert demo_on_tls.ok, (demo_on_tls.lost, demo_on_tls.duplicated, demo_on_tls.identical)
    for region in tls_mesh.config.regions:
        engine = make_engine(tls_mesh.dev.admin_url(region, "regionmesh"), pool_size=1)
        with engine.connect() as conn:
            rows = conn.execute(text(
                """SELECT a.usename, a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                    WHERE a.usename IS NOT NULL AND a.client_addr IS NOT NULL""")).all()
            senders = conn.execute(text("SELECT count(*) FROM pg_stat_replication")).scalar_one()
        engine.dispose()
        users = {r.usename for r in rows}
        # Workers and metrics (the app role) and the peers' subscriptions (link roles) are connected ...
        assert "regionmesh" in users and sum(u.startswith("rm_link_") for u in users) == 2, rows
        assert senders == 2
        # ... and every one of them over TLS.
        assert all(r.ssl for r in rows), [r for r in rows if not r.ssl]


def test_clients_are_configured_to_verify(tls_mesh: Mesh) -> None:
    for region in tls_mesh.config.regions.values():
        assert "sslmode=verify-full" in region.database_url and "sslrootcert=" in region.database_url
        assert region.broker_url.startswith("rediss://") and "ssl_cert_reqs=required" in region.broker_url
        assert "ssl_ca_certs=" in region.broker_url
        assert "sslrootcert=" in region.peer_conninfo


def test_subscriptions_verify_the_publisher(tls_mesh: Mesh) -> None:
    for region in tls_mesh.config.regions:
        engine = make_engine(tls_mesh.dev.admin_url(region, "regionmesh"), pool_size=1)
        with engine.connect() as conn:
            infos = conn.execute(text("SELECT subconninfo FROM pg_subscription")).scalars().all()
        engine.dispose()
        assert len(infos) == 2
        for info in infos:
            assert "sslmode=verify-full" in info and "sslrootcert=" in info, info


def test_plain_text_postgres_is_refused(tls_mesh: Mesh) -> None:
    for region in tls_mesh.config.regions:
        for user, secret in (("regionmesh", "regionmesh"), ("postgres", "postgres")):
            with pytest.raises(psycopg2.OperationalError, match="no encryption"):
                psycopg2.connect(host=HOST, port=_pg_port(tls_mesh, region), user=user, dbname="regionmesh",
                                 password=_secret(tls_mesh, secret), sslmode="disable", connect_timeout=5)


def test_wrong_ca_is_refused(tls_mesh: Mesh, tmp_path: Path) -> None:
    other = make_ca(tmp_path, "someone else's CA")
    region = next(iter(tls_mesh.config.regions))
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        psycopg2.connect(host=HOST, port=_pg_port(tls_mesh, region), user="regionmesh", dbname="regionmesh",
                         password=_secret(tls_mesh, "regionmesh"), sslmode="verify-full",
                         sslrootcert=str(other.cert), connect_timeout=5)
    client = redis.Redis(host=HOST, port=_redis_port(tls_mesh, region), password=_secret(tls_mesh, "redis"),
                         ssl=True, ssl_ca_certs=str(other.cert), ssl_cert_reqs="required", socket_timeout=5)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client.ping()
    # The right CA works (the refusal is the CA's, not something else).
    good = redis.Redis.from_url(tls_mesh.config.regions[region].broker_url, socket_timeout=5)
    assert good.ping()
    good.close()
    admin = redis.Redis(host=HOST, port=_redis_port(tls_mesh, region), username="rm-admin",
                        password=_secret(tls_mesh, "redis"), ssl=True, ssl_ca_certs=str(tls_mesh.dev.ca_file()),
                        ssl_cert_reqs="required", socket_timeout=5)
    assert admin.config_get("port")["port"] == "0"  # no plain-text port at all
    admin.close()


def test_plain_text_redis_is_refused(tls_mesh: Mesh) -> None:
    for region in tls_mesh.config.regions:
        client = redis.Redis(host=HOST, port=_redis_port(tls_mesh, region), password=_secret(tls_mesh, "redis"),
                             socket_timeout=3, socket_connect_timeout=3)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        client.close()


def _get(url: str, auth: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except HTTPError as exc:
        return exc.code, ""


def test_metrics_and_flower_reach_tls_servers(tls_mesh: Mesh, demo_on_tls: DemoResult) -> None:
    for region in tls_mesh.config.regions:
        procs = {w.name: w for w in tls_mesh.dev.region(region).workers}
        status, body = _get(f"http://{HOST}:{procs['metrics'].port}/metrics")
        assert status == 200
        up = {line for line in body.splitlines() if line.startswith("regionmesh_up{")}
        assert up == {f'regionmesh_up{{part="{part}",region="{region}"}} 1.0' for part in ("postgres", "redis")}, up
        flower = f"http://{HOST}:{procs['flower'].port}"
        assert _get(f"{flower}/api/tasks")[0] == 401  # no auth, no answer
        # Flower follows the workers' events over TLS as its read-only Redis user.
        auth = f"admin:{_secret(tls_mesh, 'flower')}"
        wait_for(lambda: "regionmesh." in _get(f"{flower}/api/tasks?limit=5", auth)[1], 30,
                 f"Flower of {region} to show tasks")
