"""compose/: three regions with healthchecks, pinned images, no secret literals, a bootstrap,
and a Prometheus config whose alerts use metric names the endpoint really serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
REGIONS = ("us-east", "eu-west", "ap-south")
SECRET_KEY = re.compile(r"(PASSWORD|SECRET|TOKEN|_AUTH)$", re.I)


def load() -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE / "docker-compose.yml").read_text()))


def test_three_regions_each_with_database_broker_workers_flower_and_metrics() -> None:
    services = load()["services"]
    for region in REGIONS:
        for kind in ("pg", "redis", "worker", "flower", "metrics"):
            assert f"{kind}-{region}" in services, f"{kind}-{region} missing"
        pg = services[f"pg-{region}"]
        assert "wal_level=logical" in pg["command"] and "track_commit_timestamp=on" in pg["command"]
        assert "max_slot_wal_keep_size" in pg["command"]
        major = int(re.match(r"postgres:(\d+)", pg["image"]).group(1))  # type: ignore[union-attr]
        assert major >= 16
        assert services[f"redis-{region}"]["command"] == ["sh", "/etc/regionmesh/redis/start.sh"]
        redis = (COMPOSE / "redis" / "start.sh").read_text()
        assert "--appendonly yes" in redis and "noeviction" in redis and "--aclfile" in redis
        worker = services[f"worker-{region}"]["command"]
        assert f"-Q rm.{region}.submit,rm.{region}.steps" in worker
        assert services[f"worker-{region}"]["environment"]["REGIONMESH_REGION"] == region
        assert services[f"worker-{region}"]["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in load()["services"].items():
        if name == "bootstrap":
            assert svc["restart"] == "no" and "regionmesh migrate" in svc["command"]
            assert "regionmesh replication setup" in svc["command"]
            continue
        assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no healthcheck"


def test_images_are_pinned() -> None:
    for name, svc in load()["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned"


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for k, v in node.items() for item in _walk(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [item for i, v in enumerate(node) for item in _walk(v, f"{path}[{i}]")]
    return [(path, node)]


def test_no_secret_literals() -> None:
    for path, value in _walk(load()):
        key = path.rsplit(".", 1)[-1]
        if SECRET_KEY.search(key) and isinstance(value, str):
            assert value.startswith("${") and ":?" in value, f"{path} holds a literal secret"
    mesh = (COMPOSE / "mesh.toml").read_text()
    assert "password = {" in mesh and not re.search(r'password\s*=\s*"', mesh)
    from regionmesh.config import parse_config

    env = {"REGIONMESH_DB_PASSWORD": "x", "REGIONMESH_REPLICATION_PASSWORD": "y", "REGIONMESH_REDIS_PASSWORD": "z"}
    assert list(parse_config(mesh, environ=env).regions) == list(REGIONS)


def test_prometheus_scrapes_every_region_and_alerts_use_served_metric_names() -> None:
    prom = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = [t for sc in prom["scrape_configs"] for c in sc["static_configs"] for t in c["targets"]]
    assert sorted(targets) == sorted(f"metrics-{r}:9808" for r in REGIONS)
    alerts = yaml.safe_load((COMPOSE / "alerts.yml").read_text())
    rules = {r["alert"]: r["expr"] for g in alerts["groups"] for r in g["rules"]}
    served = set(re.findall(r'"(regionmesh_[a-z_]+)"', (Path(__file__).resolve().parents[2] / "regionmesh" / "ops" / "metrics.py").read_text()))
    served |= {n + "_total" for n in served}
    for name, expr in rules.items():
        for metric in re.findall(r"regionmesh_[a-z_]+", expr):
            assert metric in served, f"alert {name} uses {metric}, which the endpoint does not serve"
    wanted = ("lag", "Stalled", "SlotNearLoss", "Outbox")
    assert all(any(w.lower() in a.lower() for a in rules) for w in wanted)
