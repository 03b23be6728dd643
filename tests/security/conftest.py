"""The security tier: one TLS mesh (PostgreSQL with OpenSSL from .ci/pg-tls, Redis TLS only)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from regionmesh.ops.demo import DemoResult, run_demo
from regionmesh.ops.devmesh import DevMesh
from tests.conftest import Mesh, down_and_leftovers, make_mesh_dir

ROOT = Path(__file__).resolve().parents[2]
REGIONS = ["us-east", "eu-west", "ap-south"]


@pytest.fixture(scope="session")
def tls_pg_bin() -> str:
    """PostgreSQL 16 built with SSL (installed once by .ci/pg-tls)."""
    res = subprocess.run([str(ROOT / ".ci" / "pg-tls")], capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, f".ci/pg-tls failed:\n{res.stdout}{res.stderr}"
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def tls_mesh(tls_pg_bin: str) -> Iterator[Mesh]:
    """Three regions, TLS everywhere, one worker and a metrics endpoint per region."""
    root = make_mesh_dir("rm-sec-")
    dev = DevMesh(root, pg_bin=tls_pg_bin)
    try:
        config = dev.up(REGIONS, tls=True, workers=1, metrics=True, flower=True)
        yield Mesh(dev, config)
    finally:
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftover, f"processes left behind: {leftover}"


@pytest.fixture(scope="session")
def demo_on_tls(tls_mesh: Mesh) -> DemoResult:
    """The demo, run once on the TLS mesh (the tier's tests read what it left behind)."""
    return run_demo(str(tls_mesh.dev.root), tenants=8, per_tenant=2, timeout=90, console=Console(quiet=True))
