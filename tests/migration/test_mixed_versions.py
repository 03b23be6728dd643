"""Workers of the previous release against a schema migrated to head: the middle of a rolling upgrade.

The documented order (docs/howto/migrations.md) is: migrate every region to head while the previous
release's workers keep running, then replace the workers. So the previous release must work on
head's schema. This builds it from git (``history.PREVIOUS_RELEASE``), installs it in a venv of its
own (system site-packages for its dependencies, its own regionmesh first), and runs it against
databases this checkout migrated to head: its real ``celery worker`` in one region of the test mesh,
where workflows complete (intake, placement, claims, completions) and replicate to the peers
through head's conflict triggers; and its trigger regeneration (the Python that calls the
generators 0018 changed) on a scratch database.

The reverse, this release's code on a database still at an older revision, is not promised
(the procedure migrates first), and not tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.migrations import history
from regionmesh.models.engine import make_engine
from regionmesh.names import steps_queue, submit_queue
from regionmesh.ops.devmesh import DEV_WORKER_TIMERS
from regionmesh.ops.migrate import alembic_config, current_revision, head
from regionmesh.routing.hashing import home_by_hash
from tests.conftest import Mesh
from tests.migration.catalog import read_catalog
from tests.migration.test_sql_history import ROOT, has_commit
from tests.support.helpers import wait_until

REGION = "eu-west"

pytestmark = pytest.mark.skipif(not has_commit(history.PREVIOUS_RELEASE),
                                reason=f"git history with {history.PREVIOUS_RELEASE} (a fresh clone has it)")


def build_release(commit: str, where: Path) -> Path:
    """Install ``commit``'s regionmesh into a venv under ``where``; returns that venv's python."""
    src = where / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    # Build isolation on: the release's build needs setuptools>=68 and wheel, which pip takes from
    # the configured index; the release's runtime dependencies come from the system site-packages.
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(src)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"pip install of {commit} failed:\n{done.stdout}\n{done.stderr}"
    where_from = subprocess.run([str(python), "-c", "import regionmesh.workers.app as a; print(a.__file__)"],
                                capture_output=True, text=True, check=True, cwd=where).stdout.strip()
    assert where_from.startswith(str(venv)), f"the venv imports regionmesh from {where_from}, not its own install"
    return python


@pytest.fixture(scope="module")
def previous_release() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="rm-previous-release-", dir="/tmp"))
    try:
        yield build_release(history.PREVIOUS_RELEASE, where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def run_old(python: Path, code: str, env: dict[str, str]) -> str:
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env), cwd=python.parent, check=False)
    assert done.returncode == 0, f"previous release failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_previous_release_regenerates_the_conflict_triggers_of_head(
    previous_release: Path, new_database: Callable[[str], Engine]
) -> None:
    engine = new_database("rm_mixed_regenerate")
    command.upgrade(alembic_config(engine), "head")
    with engine.connect() as conn:
        before = read_catalog(conn)
    out = run_old(previous_release, (
        "import os\n"
        "from regionmesh.models import replication as repl\n"
        "from regionmesh.models.engine import make_engine\n"
        "engine = make_engine(os.environ['RM_URL'], pool_size=1)\n"
        "with engine.begin() as conn:\n"
        "    print(','.join(repl.regenerate_replica_triggers(conn)))\n"
    ), {"RM_URL": engine.url.render_as_string(hide_password=False)})
    assert "tenant_registry" in out.split(",")
    with engine.connect() as conn:
        assert read_catalog(conn) == before  # the old caller regenerates exactly head's functions


def local_tenants(mesh: Mesh, n: int) -> list[str]:
    regions = list(mesh.config.regions)
    names = (f"mixed-{uuid.uuid4().hex[:6]}-{i}" for i in range(10_000))
    return [t for t in names if home_by_hash(t, regions) == REGION][:n]


def statuses(engine: Engine, run_ids: list[uuid.UUID]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM workflow_runs WHERE id = ANY(:ids) GROUP BY 1"),
                            {"ids": run_ids}).all()
    return {str(r[0]): int(r[1]) for r in rows}


def test_a_worker_of_the_previous_release_completes_workflows_on_a_schema_at_head(
    previous_release: Path, mesh: Mesh
) -> None:
    engines = {r: make_engine(mesh.config.regions[r].database_url, pool_size=1) for r in mesh.config.regions}
    log_path = previous_release.parents[2] / f"worker-{REGION}.log"
    worker: subprocess.Popen[bytes] | None = None
    try:
        assert current_revision(engines[REGION]) == head() == max(history.revision_files())
        env = dict(os.environ, **DEV_WORKER_TIMERS)
        env.update({"REGIONMESH_CONFIG": str(mesh.dev.mesh_file), "REGIONMESH_REGION": REGION,
                    "PYTHONUNBUFFERED": "1", "PROMETHEUS_MULTIPROC_DIR": str(previous_release.parents[2])})
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [str(previous_release), "-m", "celery", "-A", "regionmesh.workers.app", "worker",
                 "-Q", f"{submit_queue(REGION)},{steps_queue(REGION)}", "-n", f"{REGION}-previous@%h",
                 "-c", "2", "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
                env=env, cwd=previous_release.parents[2], stdout=log, stderr=subprocess.STDOUT)

        def ready() -> bool:
            assert worker is not None
            assert worker.poll() is None, f"the previous release's worker exited:\n{log_path.read_text()[-3000:]}"
            return b" ready." in log_path.read_bytes()

        wait_until(ready, 90, "the previous release's worker to be ready")
        tenants = local_tenants(mesh, 3)
        receipts = [submit(t, "onboard", {"email": f"{t}@example.com"}, f"{t}-onboard", region=REGION,
                           config=mesh.config, resolve_home=False) for t in tenants]
        receipts += [submit(t, "etl", {"n": 4}, f"{t}-etl", region=REGION, config=mesh.config, resolve_home=False)
                     for t in tenants]
        ids = [r.run_id for r in receipts]
        wait_until(lambda: statuses(engines[REGION], ids) == {"succeeded": len(ids)}, 90,
                   f"{len(ids)} runs to succeed on the previous release's worker")
        for region, engine in engines.items():  # applied in the peers by head's conflict triggers
            wait_until(lambda e=engine: statuses(e, ids) == {"succeeded": len(ids)}, 60,
                       f"the runs to replicate to {region}")
        with engines[REGION].connect() as conn:
            loads = conn.execute(text("SELECT output FROM workflow_runs WHERE id = ANY(:ids) AND workflow = 'etl'"),
                                 {"ids": ids}).scalars().all()
        assert [out["sum"] for out in loads] == [0 + 1 + 4 + 9] * len(tenants)
        received = log_path.read_text(encoding="utf-8", errors="replace")
        assert all(f"[{r.submission_id}] received" in received for r in receipts), "another worker took them"
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)
        for engine in engines.values():
            engine.dispose()
