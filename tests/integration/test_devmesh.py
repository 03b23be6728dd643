"""The local mesh on real PostgreSQL >= 16 and Redis: up, status, idempotent up, down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import redis
from sqlalchemy import text

from regionmesh.host import pid_alive
from regionmesh.models.engine import make_engine
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.migrate import head
from tests.conftest import down_and_leftovers, make_mesh_dir, processes_under

CLI = [sys.executable, "-m", "regionmesh.ops.cli"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env, check=False)


def test_three_region_mesh_up_status_down_leaves_nothing() -> None:
    root = make_mesh_dir()
    try:
        up = _cli("dev", "up", "--dir", str(root))
        assert up.returncode == 0, up.stderr
        dev = DevMesh(root)
        from regionmesh.config import load_config

        config = load_config(str(dev.mesh_file))
        assert list(config.regions) == ["us-east", "eu-west", "ap-south"]
        ports = set()
        for name, region in config.regions.items():
            engine = make_engine(region.database_url, pool_size=1)
            with engine.connect() as conn:
                assert conn.execute(text("SHOW server_version_num")).scalar_one() >= "160000"
                assert conn.execute(text("SHOW wal_level")).scalar_one() == "logical"
                assert conn.execute(text("SHOW track_commit_timestamp")).scalar_one() == "on"
                assert conn.execute(text("SHOW max_slot_wal_keep_size")).scalar_one() != "-1"
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head()
                assert conn.execute(text("SELECT current_setting('regionmesh.region')")).scalar_one() == name
                ports.add(engine.url.port)
            engine.dispose()
            client = redis.Redis.from_url(region.broker_url)
            assert client.ping()
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
            ports.add(client.connection_pool.connection_kwargs["port"])
            client.close()
        assert len(ports) == 6 and not ({5432, 6379} & ports)

        status = _cli("dev", "status", "--dir", str(root), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        health = json.loads(status.stdout)
        assert [h["ok"] for h in health] == [True, True, True]
        assert {h["revision"] for h in health} == {head()}

        # up again reuses what runs: same pids, same ports.
        pids_before = sorted(dev.pids())
        assert len(pids_before) == 12  # a postmaster, a redis-server, a celery worker and metrics per region
        assert all(len(dev.workers(r)) == 1 for r in config.regions)
        again = _cli("dev", "up", "--dir", str(root))
        assert again.returncode == 0, again.stderr
        assert sorted(dev.pids()) == pids_before

        # A region part down makes status fail.
        redis_pid = dev.region("eu-west").redis.pid
        assert redis_pid is not None
        os.kill(redis_pid, 9)
        down_status = _cli("dev", "status", "--dir", str(root))
        assert down_status.returncode == 1
        # ... and up brings it back.
        assert _cli("dev", "up", "--dir", str(root)).returncode == 0
        assert _cli("dev", "status", "--dir", str(root)).returncode == 0

        all_pids = dev.pids()
        down = _cli("dev", "down", "--dir", str(root))
        assert down.returncode == 0, down.stderr
        assert not [p for p in all_pids if pid_alive(p)]
        assert not processes_under(root)
        # Data survives a plain down; a second up restarts from it.
        assert _cli("dev", "up", "--dir", str(root)).returncode == 0
        assert _cli("dev", "status", "--dir", str(root)).returncode == 0
    finally:
        leftover = down_and_leftovers(DevMesh(root), root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def test_crash_halfway_through_up_leaves_nothing_down_cannot_stop(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = make_mesh_dir()
    dev = DevMesh(root)
    calls = {"n": 0}
    real = DevMesh._ensure_redis

    def crash_on_second(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DevMesh, "_ensure_redis", crash_on_second)
    try:
        try:
            dev.up(["us-east", "eu-west"])
        except KeyboardInterrupt:
            pass
        started = processes_under(root)
        assert started, "the first region and the second's PostgreSQL should be running"
        dev.down()
        assert not processes_under(root)
    finally:
        dev.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)


def test_missing_redis_server_is_a_clear_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    root = make_mesh_dir()
    env = dict(os.environ, PATH="/nonexistent")
    res = subprocess.run([*CLI, "dev", "up", "--dir", str(root)], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 1
    assert "redis-server is not on PATH" in res.stderr and "apt-get install redis-server" in res.stderr
    shutil.rmtree(root, ignore_errors=True)


def test_migrate_reports_and_refuses_unknown_revision(mesh) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, REGIONMESH_CONFIG=str(mesh.dev.mesh_file))
    ok = _cli("migrate", env=env)
    assert ok.returncode == 0, ok.stderr
    for name in mesh.config.regions:
        assert name in ok.stdout
    engine = make_engine(mesh.config.regions["ap-south"].database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
        refused = _cli("migrate", env=env)
        assert refused.returncode == 1
        assert "ap-south at f00dfeed" in refused.stderr and "Upgrade regionmesh" in refused.stderr
        # Nothing was changed in the other regions.
        check = _cli("migrate", "--check", env=env)
        assert check.returncode == 1
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head()})
        engine.dispose()
