"""compose/: TLS on every server, one credential per role, replication secrets only where the
subscriptions are made, Flower behind auth on loopback (structure; compose is not run in CI)."""

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


def test_only_databases_and_bootstrap_see_replication_secrets() -> None:
    for name, svc in services().items():
        mounts = " ".join(svc.get("volumes", []))
        env = " ".join(f"{k}={v}" for k, v in (svc.get("environment") or {}).items())
        holds = "secrets/links" in mounts or "REPLICATION" in env
        assert holds == (name.startswith("pg-") or name == "bootstrap"), name
    for f in ("mesh.toml", "flower.toml"):
        app = parse_config((COMPOSE / f).read_text(), path=str(COMPOSE / f), environ=ENV)
        assert app.replication_password is None and app.replication_link_dir is None, f
    cfg = parse_config((COMPOSE / "bootstrap.toml").read_text(), path=str(COMPOSE / "bootstrap.toml"), environ=ENV)
    assert cfg.replication_link_dir == "/run/regionmesh/links" and cfg.replication_password is None


def test_every_client_verifies_tls_and_every_server_requires_it() -> None:
    users = {"mesh.toml": "rm-worker", "flower.toml": "rm-flower", "bootstrap.toml": "rm-worker"}
    for f, user in users.items():
        cfg = parse_config((COMPOSE / f).read_text(), path=str(COMPOSE / f), environ=ENV)
        for region in cfg.regions.values():
            assert region.sslmode == "verify-full" and "sslrootcert=" in region.database_url
            assert region.broker_url.startswith(f"rediss://{user}:") and "ssl_ca_certs=" in region.broker_url
            assert "sslrootcert=" in region.peer_conninfo
    svc = services()
    for r in REGIONS:
        redis = svc[f"redis-{r}"]["command"]
        assert "--port 0" in redis and "--tls-port 6380" in redis
        for user in ("rm-worker", "rm-producer", "rm-flower"):
            assert f"--user {user} on" in redis
        assert f'"~rm.{r}.submit*"' in redis  # producers: their region's submit queue only
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
