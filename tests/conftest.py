"""Fixtures shared by the tiers: real PostgreSQL >= 16 and Redis, on free ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from regionmesh.config import MeshConfig
from regionmesh.ops.devmesh import DEV_WORKER_TIMERS, DevMesh

TIERS = ("unit", "integration", "acceptance", "migration", "security")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries its tier's marker (its folder), so `pytest -m unit` runs one tier."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def make_mesh_dir(prefix: str = "rm-test-") -> Path:
    """A folder the unprivileged PostgreSQL user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def processes_under(root: Path) -> list[psutil.Process]:
    """Live processes whose command line mentions ``root`` (our servers name their folders)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(str(root) in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def recorded_processes(dev: DevMesh) -> list[psutil.Process]:
    """Every process the dev mesh recorded (postmasters, Redis, workers) and their children, now."""
    out: list[psutil.Process] = []
    try:
        pids = dev.pids()
    except (OSError, KeyError, ValueError):
        return out
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            out += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return out


def down_and_leftovers(dev: DevMesh, root: Path, *, purge: bool = True) -> list[str]:
    """Stop the mesh; what is still alive of what it recorded (by pid, with its start time, so a
    reused pid is not mistaken for ours) or mentions its folder."""
    recorded = recorded_processes(dev)
    dev.down(purge=purge)
    alive = []
    for proc in recorded:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(proc.cmdline()))
        except psutil.NoSuchProcess:
            continue
    return alive + [" ".join(p.cmdline()) for p in processes_under(root)]


class Mesh:
    def __init__(self, dev: DevMesh, config: MeshConfig) -> None:
        self.dev = dev
        self.config = config
        self.keepers: dict[str, subprocess.Popen[bytes]] = {}

    def start_keeper(self, region: str) -> None:
        """Keep ``region``'s lease with `regionmesh lease keep` (a region works only while a majority
        of the mesh keeps leases; this mesh runs no worker in most regions)."""
        log = open(self.dev.root / f"keeper-{region}.log", "ab")  # noqa: SIM115 - the child owns it
        env = dict(os.environ, REGIONMESH_CONFIG=str(self.dev.mesh_file), REGIONMESH_REGION=region,
                   PYTHONUNBUFFERED="1", **DEV_WORKER_TIMERS)
        self.keepers[region] = subprocess.Popen([sys.executable, "-m", "regionmesh", "lease", "keep"], env=env,
                                                stdout=log, stderr=subprocess.STDOUT)

    def stop_keepers(self) -> None:
        for proc in self.keepers.values():
            proc.terminate()
        for proc in self.keepers.values():
            proc.wait(timeout=20)
        self.keepers.clear()


@pytest.fixture(scope="session")
def mesh() -> Iterator[Mesh]:
    """One three-region mesh for the integration tier (started once, stopped at the end)."""
    root = make_mesh_dir()
    dev = DevMesh(root)
    try:
        config = dev.up(["us-east", "eu-west", "ap-south"])
        m = Mesh(dev, config)
        for region in config.regions:
            m.start_keeper(region)
        yield m
    finally:
        if "m" in locals():
            m.stop_keepers()
        # RM_KEEP_MESH=1 keeps logs and data to look at a failure.
        leftover = down_and_leftovers(dev, root, purge=not os.environ.get("RM_KEEP_MESH"))
        if not os.environ.get("RM_KEEP_MESH"):
            shutil.rmtree(root, ignore_errors=True)
        assert not leftover, f"processes left behind: {leftover}"
