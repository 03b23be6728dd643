"""A mesh set up before zones (0012: payload tables in rm_pub, every subscription to rm_pub only)
migrated to head while every region writes runs: its subscriptions end on rm_pub + rm_pub_to_<sub>,
rm_pub no longer carries the payload tables, and no run written before, during or after is missing
anywhere. Real PostgreSQL 16, no mocks."""

from __future__ import annotations

import shutil
import threading
import time
import uuid

from alembic import command
from sqlalchemy import Engine, text

from regionmesh.models import link_health, publishing, replicated_tables, subscribing
from regionmesh.models.engine import make_engine
from regionmesh.models.tables import ZONED_TABLES
from regionmesh.names import PUBLICATION, subscription_name, subscription_publications
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.migrate import alembic_config, current_revision, head, upgrade_live
from regionmesh.replication.setup import setup
from regionmesh.replication.verify import verify
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

REGIONS = ("us-east", "eu-west", "ap-south")


def runs_of(engine: Engine, tag: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id LIKE :t"),
                                {"t": f"{tag}-%"}).scalar_one())


def own_runs(engine: Engine, tag: str, region: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM workflow_runs WHERE tenant_id = :t"),
                                {"t": f"{tag}-{region}"}).scalar_one())


def test_migrate_switches_a_mesh_set_up_before_zones_without_losing_a_run() -> None:
    root = make_mesh_dir()
    dev = DevMesh(root)
    stop = threading.Event()
    written: dict[str, int] = {}
    errors: list[str] = []
    tag = uuid.uuid4().hex[:6]
    try:
        config = dev.up(list(REGIONS), migrate=False)
        engines = {r: make_engine(config.regions[r].database_url, region=r, pool_size=2) for r in REGIONS}
        for e in engines.values():
            command.upgrade(alembic_config(e), "0012")
        setup(config)
        for r, e in engines.items():
            assert not replicated_tables.payload_zoned(e)
            # 0026's payload tables (schedules, run_signals) do not exist at 0012
            assert set(ZONED_TABLES) - {"schedules", "run_signals"} <= set(publishing.publication_tables(e, PUBLICATION))
            for p in REGIONS:
                if p != r:
                    assert subscribing.subscription_publication_names(e, subscription_name(r, p)) == [PUBLICATION]

        def writer(region: str) -> None:
            e = make_engine(config.regions[region].database_url, region=region, pool_size=1)
            n = 0
            try:
                while not stop.is_set():
                    with e.begin() as conn:
                        conn.execute(text(
                            "INSERT INTO workflow_runs (id, tenant_id, idempotency_key, workflow, input, status, "
                            "owner_region) VALUES (:i, :t, :k, 'wf', '{}'::jsonb, 'running', :r)"),
                            {"i": uuid.uuid4(), "t": f"{tag}-{region}", "k": str(n), "r": region})
                    n += 1
                    time.sleep(0.01)
            except Exception as exc:  # the test fails on it below
                errors.append(f"{region}: {exc}")
            finally:
                written[region] = n
                e.dispose()

        threads = [threading.Thread(target=writer, args=(r,)) for r in REGIONS]
        for t in threads:
            t.start()
        wait_until(lambda: all(runs_of(e, tag) > 30 for e in engines.values()), 30, "runs replicating before")
        lines: list[str] = []
        report = upgrade_live(config, say=lines.append)
        print("\n".join(lines))
        after = {r: own_runs(e, tag, r) for r, e in engines.items()}
        wait_until(lambda: all(own_runs(e, tag, r) > after[r] + 20 for r, e in engines.items()), 30,
                   "runs written after the switch in every region")
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert all(r.after == head() for r in report.regions)
        assert sum(line.endswith(f"subscribes to {subscription_publications(r)}") for line in lines
                   for r in REGIONS) == 6, lines
        for r, e in engines.items():
            assert current_revision(e) == head()
            assert not set(ZONED_TABLES) & set(publishing.publication_tables(e, PUBLICATION))
            for p in REGIONS:
                if p != r:
                    assert subscribing.subscription_publication_names(e, subscription_name(r, p)) == \
                        [PUBLICATION, f"rm_pub_to_{r}".replace("-", "_")]
        total = sum(written.values())
        wait_until(lambda: all(runs_of(e, tag) == total for e in engines.values()), 60,
                   f"all {total} runs in every region")
        result = verify(config, timeout=60)
        assert result.identical, {t: list(d)[:5] for t, d in result.differences.items() if d}
        assert {link.result for link in setup(config)} == {"unchanged"}
        # Never 'publication "rm_pub_to_…" does not exist' (a subscription switched too early).
        assert {s["subname"]: s["apply_error_count"] for e in engines.values() for s in link_health.subscriptions(e)
                if s["apply_error_count"]} == {}
        for e in engines.values():
            e.dispose()
    finally:
        stop.set()
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
    assert not leftover
