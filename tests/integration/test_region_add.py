"""Adding a region to a running mesh under write load (Zodan), on real PostgreSQL 16."""

from __future__ import annotations

import shutil
import threading
import uuid

from sqlalchemy import Engine, text

from regionmesh.config import load_config
from regionmesh.models import link_health
from regionmesh.models.engine import make_engine
from regionmesh.ops.devmesh import DevMesh
from regionmesh.replication.setup import setup
from regionmesh.replication.status import mesh_status
from regionmesh.replication.verify import verify
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until


def test_region_added_under_write_load_converges() -> None:
    root = make_mesh_dir()
    dev = DevMesh(root)
    stop = threading.Event()
    written: dict[str, int] = {}
    try:
        config = dev.up(["us-east", "eu-west", "ap-south"])
        run = uuid.uuid4().hex[:6]
        # History the new region must receive by copy.
        for region in config.regions:
            e = make_engine(config.regions[region].database_url, region=region, pool_size=1)
            with e.begin() as conn:
                for i in range(200):
                    conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason) VALUES (:t, :r, 'pin')"),
                                 {"t": f"hist-{run}-{region}-{i}", "r": region})
            e.dispose()

        def writer(region: str) -> None:
            e = make_engine(config.regions[region].database_url, region=region, pool_size=1)
            n = 0
            with e.connect() as conn:
                while not stop.is_set():
                    # New rows, and updates of rows from every origin, while the region joins.
                    conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason) VALUES (:t, :r, 'pin')"),
                                 {"t": f"live-{run}-{region}-{n}", "r": region})
                    conn.execute(text("UPDATE tenant_registry SET note = :n WHERE tenant_id = :t"),
                                 {"n": f"{region}-{n}", "t": f"hist-{run}-{['us-east', 'eu-west', 'ap-south'][n % 3]}-{n % 200}"})
                    conn.commit()
                    n += 1
            written[region] = n
            e.dispose()

        probe = make_engine(config.regions["us-east"].database_url, region="us-east", pool_size=1)

        def live_rows() -> set[str]:
            with probe.connect() as conn:
                return set(conn.execute(text(
                    "SELECT DISTINCT home_region FROM tenant_registry WHERE tenant_id LIKE :p"), {"p": f"live-{run}-%"}).scalars())

        threads = [threading.Thread(target=writer, args=(r,)) for r in config.regions]
        for t in threads:
            t.start()
        # The region joins while every writer is writing.
        wait_until(lambda: len(live_rows()) == 3, 30, "rows from all three writers")
        report = dev.add_region("sa-east", seed="eu-west")
        assert report.rows_copied >= 600
        # Keep writing a little after the join, then stop.
        new = make_engine(load_config(str(dev.mesh_file)).regions["sa-east"].database_url, region="sa-east", pool_size=1)
        with new.begin() as conn:
            conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason) VALUES (:t, 'sa-east', 'pin')"),
                         {"t": f"from-new-{run}"})
        stop.set()
        for t in threads:
            t.join()
        assert all(n > 10 for n in written.values()), written
        # Payload tables travel in the per-destination publications, to and from the new region too.
        config = load_config(str(dev.mesh_file))
        engines = {r: make_engine(config.regions[r].database_url, region=r, pool_size=1) for r in config.regions}
        for region, e in engines.items():
            with e.begin() as conn:
                conn.execute(text(
                    "INSERT INTO workflow_runs (id, tenant_id, idempotency_key, workflow, input, status, owner_region) "
                    "VALUES (:i, :t, :k, 'wf', '{}'::jsonb, 'running', :r)"),
                    {"i": uuid.uuid4(), "t": f"payload-{run}", "k": region, "r": region})

        def payload_rows(e: Engine) -> int:
            with e.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id = :t"),
                                        {"t": f"payload-{run}"}).scalar_one())
        wait_until(lambda: all(payload_rows(e) == 4 for e in engines.values()), 30,
                   "a run written in each of the four regions in every region")
        for e in engines.values():
            e.dispose()
        assert list(config.regions) == ["us-east", "eu-west", "ap-south", "sa-east"]
        wait_until(lambda: all(link.ok for link in mesh_status(config, error_window_s=3)[0]), 60, "all 12 links streaming")
        result = verify(config, timeout=60)
        assert result.identical, {t: list(d)[:5] for t, d in result.differences.items() if d}
        expected = 600 + sum(written.values()) + 1
        counts = result.rows["tenant_registry"]
        assert set(counts) == set(config.regions)
        assert all(n >= expected for n in counts.values()), (counts, expected)
        assert {s["subname"] for s in link_health.subscriptions(new)} == {"rm_sa_east_from_us_east", "rm_sa_east_from_eu_west",
                                                                     "rm_sa_east_from_ap_south"}
        new.dispose()
        probe.dispose()
        # Setup is still idempotent with four regions.
        assert {link.result for link in setup(config)} == {"unchanged"}
    finally:
        stop.set()
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover


def test_setup_refuses_a_region_that_was_never_joined() -> None:
    root = make_mesh_dir()
    dev = DevMesh(root)
    try:
        dev.up(["us-east", "eu-west"])
        config = dev.up(["us-east", "eu-west", "ap-south"], replicate=False)
        import pytest

        from regionmesh.errors import ConfigError

        with pytest.raises(ConfigError, match="region add ap-south"):
            setup(config)
    finally:
        dev.down(purge=True)
        shutil.rmtree(root, ignore_errors=True)
