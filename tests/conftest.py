"""Fixtures shared by the tiers: real PostgreSQL >= 16 and Redis, on free ports."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from regionmesh.config import MeshConfig
from regionmesh.ops.devmesh import DevMesh

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


class Mesh:
    def __init__(self, dev: DevMesh, config: MeshConfig) -> None:
        self.dev = dev
        self.config = config


@pytest.fixture(scope="session")
def mesh() -> Iterator[Mesh]:
    """One three-region mesh for the integration tier (started once, stopped at the end)."""
    root = make_mesh_dir()
    dev = DevMesh(root)
    try:
        config = dev.up(["us-east", "eu-west", "ap-south"])
        yield Mesh(dev, config)
    finally:
        dev.down(purge=True)
        leftover = processes_under(root)
        assert not leftover, f"processes left behind: {[p.cmdline() for p in leftover]}"
