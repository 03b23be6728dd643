"""A 1,000-message fuzz run (bench.fuzz) against real workers in all three regions of the suite's mesh."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fuzz import run_fuzz
from tests.conftest import Mesh

SEED = 12


@pytest.fixture
def workers(mesh: Mesh) -> Iterator[list[str]]:
    regions = list(mesh.config.regions)
    for region in regions:
        mesh.dev.start_worker(region, concurrency=1)
    yield regions
    for region in regions:
        for w in mesh.dev.workers(region):
            mesh.dev.stop_worker(region, w.name)


def test_fuzz_1000_malformed_messages(mesh: Mesh, workers: list[str]) -> None:
    logs = {w.log: Path(w.log).stat().st_size for r in workers for w in mesh.dev.workers(r)}
    started = time.monotonic()
    result = run_fuzz(mesh.dev, mesh.config, messages=1000, seed=SEED, valid_every=10, timeout=90)
    elapsed = time.monotonic() - started
    assert result.ok, f"seed {SEED}: {result.failures}"
    assert sum(r.get("dead-lettered", 0) for r in result.by_kind.values()) == 1000
    assert result.valid_succeeded == result.valid_sent == 100
    assert result.workers_same
    for path, offset in logs.items():
        with open(path, "rb") as fh:
            fh.seek(offset)
            assert b"Unrecoverable error" not in fh.read(), path
    assert elapsed < 90, f"the fuzz run took {elapsed:.0f}s"
