"""compose/: TLS on every server, one credential per role, each container only its own secrets
(a server its own key, a PostgreSQL only the link secrets of its links, the bootstrap every link
secret), Redis dropping root, Flower behind auth on loopback and without the database password
(structure; compose is not run in CI: no Docker engine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from regionmesh.config import parse_config

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
REGIONS = ("us-east", "eu-west", "ap-south")
ENV = {"REGIONMESH_DB_PASSWORD": "x", "REGIONMESH_REDIS_PASSWORD": "y"}


def services() -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"])


def _files_seen(svc: dict[str, Any], declared: dict[str, Any]) -> set[str]:
    """Host paths under compose/ a service can read: bind mounts and compose secrets."""
    seen = {v.split(":")[0] for v in svc.get("volumes", []) if v.startswith("./")}
    for entry in svc.get("secrets", []):
        source = entry["source"] if isinstance(entry, dict) else entry
        seen.add(declared[source]["file"])
    return seen


def _link(sub: str, pub: str) -> str:
    return f"./secrets/links/rm_link_{sub.replace('-', '_')}_from_{pub.replace('-', '_')}"


def test_each_container_gets_only_its_own_secrets() -> None:
    """Issue 21 item 10: every PostgreSQL and Redis container mounted every server's private key
    (./secrets/tls) and every PostgreSQL every link secret (./secrets/links)."""
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    declared = compose["secrets"]
    ca = "./secrets/tls/ca.crt"
    links = {_link(s, p) for s in REGIONS for p in REGIONS if s != p}
    for name, svc in compose["services"].items():
        seen = _files_seen(svc, declared)
        assert "./secrets" not in seen and "./secrets/tls" not in seen and "./secrets/links" not in seen, name
        assert not any(f.endswith("ca.key") for f in seen), name  # the CA key stays on the host
        secret_files = {f for f in seen if f.startswith("./secrets/")}
        region = next((r for r in REGIONS if name.endswith(r)), None)
        if name.startswith("pg-"):
            own = {_link(s, p) for s in REGIONS for p in REGIONS if s != p and region in (s, p)}
            assert secret_files == {f"./secrets/tls/{name}.key", f"./secrets/tls/{name}.crt", ca} | own, name
        elif name.startswith("redis-"):
            assert secret_files == {f"./secrets/tls/{name}.key", f"./secrets/tls/{name}.crt", ca,
                                    f"./secrets/redis/{region}.acl"}, name
        elif name == "bootstrap":
            assert secret_files == {ca} | links, name
        else:  # workers, Flower, metrics, Prometheus: at most the CA certificate
            assert secret_files <= {ca}, name
    for f in ("mesh.toml", "flower.toml"):
        app = parse_config((COMPOSE / f).read_text(), path=str(COMPOSE / f), environ=ENV)
        assert app.replication_password is None and app.replication_link_dir is None, f
    cfg = parse_config((COMPOSE / "bootstrap.toml").read_text(), path=str(COMPOSE / "bootstrap.toml"), environ=ENV)
    assert cfg.replication_link_dir == "/run/regionmesh/links" and cfg.replication_password is None


def test_each_postgresql_finds_its_files_where_its_command_reads_them() -> None:
    """The secrets land where the server's command and compose/initdb read them (no folder mount)."""
    svc = services()
    for r in REGIONS:
        pg = svc[f"pg-{r}"]
        targets = {e["target"] for e in pg["secrets"]}
        for path in (f"/etc/regionmesh/tls/pg-{r}.key", f"/etc/regionmesh/tls/pg-{r}.crt", "/etc/regionmesh/tls/ca.crt"):
            assert path in targets and path in pg["command"], (r, path)
        me = r.replace("-", "_")
        assert f"/run/regionmesh/links/rm_link_*_from_{me}" in pg["command"]
        assert f"/run/regionmesh/links/rm_link_{me}_from_*" in pg["command"]
        assert {t for t in targets if t.startswith("/run/regionmesh/links/")} == {
            t for t in (f"/run/regionmesh/links/{_link(s, p).rsplit('/', 1)[1]}" for s in REGIONS for p in REGIONS
                        if s != p and r in (s, p))}
    initdb = (COMPOSE / "initdb" / "10-roles.sh").read_text()
    assert "/var/lib/postgresql/links/$role" in initdb  # the copies the command made for the server user


def test_redis_runs_as_the_redis_user() -> None:
    """The image's entrypoint drops to the redis user (gosu) only when its first argument is
    redis-server; 'sh -c ... redis-server' kept root. start.sh hands over to the entrypoint."""
    svc = services()
    script = (COMPOSE / "redis" / "start.sh").read_text()
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    execs = [line for line in lines if line.startswith("exec ")]
    assert len(execs) == 1 and execs[0].startswith("exec docker-entrypoint.sh redis-server "), execs
    assert lines[-1].startswith("--tls-auth-clients no --aclfile /run/redis-secrets/users.acl")
    assert "--port 0 --tls-port 6380" in script and "--requirepass" not in script and "--user " not in script
    assert "install -m 0600 -o redis -g redis" in script
    for r in REGIONS:
        redis = svc[f"redis-{r}"]
        assert redis["command"] == ["sh", "/etc/regionmesh/redis/start.sh"], r
        assert redis.get("user") in (None, "redis", "999:999"), r
        assert "./redis:/etc/regionmesh/redis:ro" in redis["volumes"]
        assert {e["target"] for e in redis["secrets"]} == {"server.key", "server.crt", "ca.crt", "users.acl"}
        assert set(redis["environment"]) == {"REDIS_ADMIN_PASSWORD"}, r  # the healthcheck's; users are hashes


def test_flower_has_no_database_password_and_needs_none() -> None:
    """Flower reads the broker only: neither its environment nor flower.toml names the schema owner's
    password, and the Celery app it serves is built without one."""
    from regionmesh.workers.app import create_app

    for r in REGIONS:
        env = services()[f"flower-{r}"]["environment"]
        assert not any("DB_PASSWORD" in k or "DATABASE" in k for k in env), r
    text = (COMPOSE / "flower.toml").read_text()
    assert "database_password" not in text
    cfg = parse_config(text, path=str(COMPOSE / "flower.toml"), environ={"REGIONMESH_REDIS_PASSWORD": "y"},
                       region="eu-west")
    assert create_app(cfg).main == "regionmesh-eu-west"


def test_every_client_verifies_tls_and_every_server_requires_it() -> None:
    users = {"mesh.toml": "rm-worker", "flower.toml": "rm-flower", "bootstrap.toml": "rm-worker"}
    for f, user in users.items():
        cfg = parse_config((COMPOSE / f).read_text(), path=str(COMPOSE / f), environ=ENV)
        for region in cfg.regions.values():
            assert region.sslmode == "verify-full" and "sslrootcert=" in region.database_url
            assert region.broker_url.startswith(f"rediss://{user}:") and "ssl_ca_certs=" in region.broker_url
            assert "sslrootcert=" in region.peer_conninfo
    svc = services()
    redis = (COMPOSE / "redis" / "start.sh").read_text()
    assert "--port 0" in redis and "--tls-port 6380" in redis  # TLS only; users: test_compose_acl.py
    for r in REGIONS:
        assert "ssl=on" in svc[f"pg-{r}"]["command"] and "hba_file=" in svc[f"pg-{r}"]["command"]


def test_pg_hba_is_tls_only_and_link_roles_reach_only_the_replicated_database() -> None:
    env = dict(os.environ, REGIONMESH_REGION="eu-west", REGIONMESH_PEERS="us-east ap-south")
    out = subprocess.run(["sh", str(COMPOSE / "pg" / "hba.sh")], capture_output=True, text=True, env=env,
                         check=True, timeout=10).stdout.splitlines()
    assert out[-2:] == ["host all all 0.0.0.0/0 reject", "host all all ::/0 reject"]
    allowing = [line for line in out[:-2] if not line.startswith("local ")]
    assert all(line.startswith("hostssl ") for line in allowing)
    links = [line.split() for line in allowing if " rm_link_" in line]
    assert sorted(parts[2] for parts in links) == ["rm_link_ap_south_from_eu_west", "rm_link_us_east_from_eu_west"]
    assert all(parts[1] == "regionmesh" for parts in links)


def test_flower_requires_auth_and_listens_on_loopback() -> None:
    for r in REGIONS:
        flower = services()[f"flower-{r}"]
        assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
        assert flower["environment"]["FLOWER_UNAUTHENTICATED_API"] == "false"
        assert all(p.startswith("127.0.0.1:") for p in flower["ports"])
        assert "./flower.toml:/etc/regionmesh/mesh.toml:ro" in flower["volumes"]
