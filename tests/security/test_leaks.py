"""No generated secret appears in a log, a process's argument list, an exception or the metrics
after the demo ran on the TLS mesh and a subscription was made to fail (its publisher changed the
link role's password: the apply worker's connections are refused) and a subscription statement
failed (the exception text is what an operator sees)."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
import urllib.request
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text

from regionmesh.models import subscribing
from regionmesh.models.admin import link_role
from regionmesh.models.engine import engine_for, make_engine
from regionmesh.names import PUBLICATION, subscription_name
from regionmesh.ops.demo import DemoResult
from regionmesh.replication.setup import conninfo
from regionmesh.supervisor import free_port, wait_for
from tests.conftest import Mesh


def _secrets(root: Path) -> dict[str, str]:
    found = {str(p.relative_to(root)): p.read_text().strip() for p in (root / "secrets").rglob("*") if p.is_file()}
    for key in [root / "tls" / "ca.key", *root.glob("redis/*/redis.key")]:
        # A private key's first line of base64 stands for the whole key.
        found[str(key.relative_to(root))] = key.read_text().splitlines()[1]
    assert len(found) >= 5 + 6 + 1 and all(len(v) >= 20 for v in found.values())
    return found


def _leaks(where: str, content: str, secrets: dict[str, str]) -> list[str]:
    return [f"{name} in {where}" for name, value in secrets.items() if value in content]


def _log_tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def test_no_secret_leaks_anywhere(tls_mesh: Mesh, demo_on_tls: DemoResult) -> None:
    assert demo_on_tls.ok
    dev, config = tls_mesh.dev, tls_mesh.config
    root = dev.root
    secrets = _secrets(root)
    sub, pub = "us-east", "eu-west"
    role, name = link_role(sub, pub), subscription_name(sub, pub)
    sub_log = dev.region(sub).pg.log

    # 1. A failing subscription: the publisher no longer accepts the link's password.
    admin_pub = make_engine(dev.admin_url(pub, "regionmesh"), pool_size=1)
    try:
        with admin_pub.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ALTER ROLE {role} PASSWORD 'not-the-link-secret-{os.getpid()}'"))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE usename = :r"), {"r": role})
        wait_for(lambda: "password authentication failed" in _log_tail(sub_log), 30,
                 f"{sub}'s apply worker to be refused by {pub}")
    finally:
        admin_pub.dispose()

    # 2. A failing subscription statement, as the operator would see it.
    engine = engine_for(config, sub)
    closed = free_port()
    info = conninfo(config, pub, sub).replace(f"port={dev.region(pub).pg.port}", f"port={closed}")
    try:
        with pytest.raises(subscribing.SubscriptionError) as caught:
            subscribing.ensure_subscription(engine, "rm_leak_probe", info, PUBLICATION)
    finally:
        engine.dispose()
    exc_text = "".join(traceback.format_exception(caught.value))
    assert "could not connect" in exc_text

    # 3. Operator surfaces and the metrics endpoints.
    env = dict(os.environ, REGIONMESH_CONFIG=str(dev.mesh_file))
    status = subprocess.run([sys.executable, "-m", "regionmesh", "replication", "status", "--json"],
                            capture_output=True, text=True, timeout=120, env=env, check=False)
    assert status.stdout.strip(), status.stderr
    metrics = ""
    for region in config.regions:
        port = next(w.port for w in dev.region(region).workers if w.name == "metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics += resp.read().decode()
    assert "regionmesh_replication_lag_bytes" in metrics

    # The mesh heals when up runs again (roles get their secrets back, sealed once more).
    dev.up()
    engine = make_engine(dev.admin_url(sub, "regionmesh"), pool_size=1)
    try:
        def streaming() -> bool:
            with engine.connect() as conn:
                return bool(conn.execute(text(
                    "SELECT w.pid IS NOT NULL AND w.received_lsn IS NOT NULL FROM pg_subscription s "
                    "JOIN pg_stat_subscription w ON w.subid = s.oid WHERE s.subname = :n"), {"n": name}).scalar())
        wait_for(streaming, 60, f"{name} to stream again")
    finally:
        engine.dispose()

    leaks: list[str] = []
    logs = [p for p in root.rglob("*.log") if p.is_file()]
    assert any("password authentication failed" in _log_tail(p) for p in logs)
    for path in [*logs, dev.mesh_file, dev.state.path]:
        leaks += _leaks(str(path), _log_tail(path), secrets)
    pids: set[int] = set()
    for pid in dev.pids():
        try:
            proc = psutil.Process(pid)
            pids |= {pid, *(c.pid for c in proc.children(recursive=True))}
        except psutil.NoSuchProcess:
            continue
    assert len(pids) > 12  # postmasters and their backends, redis, workers and pools, metrics, flower
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        leaks += _leaks(f"/proc/{pid}/cmdline ({cmdline[:60]})", cmdline, secrets)
    leaks += _leaks("the exception", exc_text, secrets)
    leaks += _leaks("replication status", status.stdout + status.stderr, secrets)
    leaks += _leaks("metrics", metrics, secrets)
    assert not leaks, leaks
    # The checks can see a secret where there is one.
    assert _leaks("probe", f"x{secrets['secrets/redis']}x", secrets)
