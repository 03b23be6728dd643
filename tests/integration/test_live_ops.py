"""Day-two operations on a running three-region mesh, under write load: deletes and TRUNCATE,
setup repairing subscriptions, prune, resync after a lost slot and after wiped tables, and a
schema change (a column and a table) through migrate. Real PostgreSQL 16, no mocks."""

from __future__ import annotations

import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from bench.campaign_checker import scan_pg_logs
from bench.resync import load_finished_runs, lose_database
from regionmesh.config import MeshConfig
from regionmesh.models import link_health, publishing, retention, subscribing
from regionmesh.models.engine import make_engine
from regionmesh.names import PUBLICATION, subscription_name
from regionmesh.ops.cli import cli
from regionmesh.ops.devmesh import DATABASE, DevMesh
from regionmesh.ops.migrate import head, plan, upgrade_live
from regionmesh.ops.rebuild import rebuild
from regionmesh.replication.setup import setup
from regionmesh.replication.status import mesh_status
from regionmesh.replication.verify import COMPARED_TABLES, verify
from tests.conftest import down_and_leftovers, make_mesh_dir
from tests.support.helpers import wait_until

REGIONS = ("us-east", "eu-west", "ap-south")
SCHEMA_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "sql.md"


class Ops:
    def __init__(self, dev: DevMesh, config: MeshConfig) -> None:
        self.dev = dev
        self.config = config
        self.engines = {r: make_engine(config.regions[r].database_url, region=r, pool_size=4) for r in REGIONS}


@pytest.fixture(scope="module")
def ops() -> Iterator[Ops]:
    root = make_mesh_dir()
    dev = DevMesh(root)
    try:
        o = Ops(dev, dev.up(list(REGIONS)))
        yield o
        for e in o.engines.values():
            e.dispose()
    finally:
        leftover = down_and_leftovers(dev, root)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftover, f"processes left behind: {[p.cmdline() for p in leftover]}"


def streaming(config: MeshConfig) -> bool:
    links, _ = mesh_status(config, error_window_s=3)
    bad = [f"{link.publisher}->{link.subscriber}: {link.problem}" for link in links if not link.ok]
    if bad:
        print("not streaming:", bad)
    return not bad


def apply_error_counts(engines: dict[str, Engine]) -> dict[str, int]:
    return {s["subname"]: int(s["apply_error_count"]) for e in engines.values() for s in link_health.subscriptions(e)}


def apply_errors_in_logs(dev: DevMesh, since: dict[str, int]) -> list[str]:
    """ERROR lines of apply workers written after the byte offsets in ``since``, lost connections
    and worker restart races aside."""
    return scan_pg_logs(dev.root / "logs", since)


def log_offsets(dev: DevMesh) -> dict[str, int]:
    return {log.name: log.stat().st_size for log in (dev.root / "logs").glob("pg-*.log")}


def regionmesh_cli(ops: Ops, *args: str) -> str:
    """Run one ``regionmesh`` command against the mesh's file, in this process; its output."""
    result = CliRunner().invoke(cli, ["--config", str(ops.dev.mesh_file), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # rich wraps long lines


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


class Writers:
    """One thread per region inserting and updating tenant_registry rows until stopped."""

    def __init__(self, ops: Ops, regions: tuple[str, ...] = REGIONS) -> None:
        self.ops, self.regions = ops, regions
        self.tag = uuid.uuid4().hex[:6]
        self.stop = threading.Event()
        self.written: dict[str, int] = {}
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._write, args=(r,)) for r in regions]

    def _write(self, region: str) -> None:
        e = make_engine(self.ops.config.regions[region].database_url, region=region, pool_size=1)
        n = 0
        try:
            while not self.stop.is_set():
                with e.begin() as conn:
                    conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason) VALUES (:t, :r, 'pin')"),
                                 {"t": f"w-{self.tag}-{region}-{n}", "r": region})
                    conn.execute(text("UPDATE tenant_registry SET note = :n WHERE tenant_id = :t"),
                                 {"n": f"{region}-{n}", "t": f"w-{self.tag}-{region}-{n // 2}"})
                n += 1
                time.sleep(0.005)
        except Exception as exc:
            self.errors.append(f"{region}: {exc}")
        finally:
            self.written[region] = n
            e.dispose()

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert not self.errors, self.errors
        assert all(self.written.get(r, 0) > 5 for r in self.regions), self.written


# -- the docs' schema page and the publication ----------------------------------------------------
def test_the_schema_page_lists_exactly_the_published_tables(ops: Ops) -> None:
    page = SCHEMA_PAGE.read_text(encoding="utf-8")
    listed = re.search(r"\n### Replicated tables \(publication `rm_pub`\)\n(.*?)\n#", page, re.S)
    assert listed, "docs/reference/sql.md no longer has its 'Replicated tables (publication `rm_pub`)' section"
    names = set(re.findall(r"^- `(\w+)`", listed.group(1), re.M))
    for engine in ops.engines.values():
        assert names == set(publishing.publication_tables(engine, PUBLICATION))


# -- TRUNCATE and deletes -------------------------------------------------------------------------
def test_truncate_is_refused_in_every_region_with_the_reason(ops: Ops) -> None:
    for engine in ops.engines.values():
        for table in publishing.publication_tables(engine, PUBLICATION):
            with pytest.raises(Exception, match="TRUNCATE of replicated table .* is refused") as info:
                with engine.begin() as conn:
                    conn.execute(text(f"TRUNCATE {table}"))
            assert "does not replicate" in str(info.value)


def _hold_links(ops: Ops, a: str, b: str, enabled: bool) -> None:
    for sub, pub in ((a, b), (b, a)):
        subscribing.set_subscription_enabled(ops.engines[sub], subscription_name(sub, pub), enabled)
        if not enabled:
            subscribing.wait_worker_stopped(ops.engines[sub], subscription_name(sub, pub))


def _run_state(engine: Engine, run_id: str) -> tuple[str, bool] | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, deleted_at IS NOT NULL FROM workflow_runs WHERE id = :r"),
                           {"r": run_id}).first()
    return None if row is None else (row[0], row[1])


@pytest.mark.parametrize("order", ["delete_then_newer_update", "update_then_newer_delete"])
def test_delete_and_update_follow_the_rule_in_both_orders(ops: Ops, order: str) -> None:
    a, b = ops.engines["us-east"], ops.engines["eu-west"]
    tag = uuid.uuid4().hex[:8]
    load_finished_runs(a, 1, tag, days_ago=400)
    run_id = scalar(a, "SELECT md5(:t || 1)::uuid::text", t=tag)
    wait_until(lambda: all(_run_state(e, run_id) == ("succeeded", False) for e in ops.engines.values()), 30, "the run everywhere")
    _hold_links(ops, "us-east", "eu-west", False)  # neither sees the other's write until both wrote
    try:
        def update() -> None:  # e.g. an operator retrying the run in its owner region
            with a.begin() as conn:
                conn.execute(text("UPDATE workflow_runs SET status = 'running', finished_at = NULL WHERE id = :r"), {"r": run_id})

        def delete() -> None:
            ids, _ = retention.tombstone_finished_runs(b, 399 * 86400, 10)
            assert uuid.UUID(run_id) in ids

        first, second = (delete, update) if order == "delete_then_newer_update" else (update, delete)
        first()
        time.sleep(0.01)  # the second write's updated_at is later (one clock: one host)
        second()
    finally:
        _hold_links(ops, "us-east", "eu-west", True)
    expected = ("running", False) if order == "delete_then_newer_update" else ("succeeded", True)
    wait_until(lambda: all(_run_state(e, run_id) == expected for e in ops.engines.values()), 60,
               f"{expected} in every region")
    # Its steps were tombstoned by the delete and not touched by the update: tombstones everywhere.
    if order == "update_then_newer_delete":
        purged = retention.purge_tombstones(b, [uuid.UUID(run_id)], 3600)
        assert purged["workflow_runs"] == 1
        wait_until(lambda: all(_run_state(e, run_id) is None for e in ops.engines.values()), 30, "removal everywhere")
    wait_until(lambda: streaming(ops.config), 60, "every link streaming")
    assert verify(ops.config, timeout=60).identical


def test_a_delete_that_skips_the_tombstone_is_refused_in_every_region(ops: Ops) -> None:
    tag = uuid.uuid4().hex[:8]
    load_finished_runs(ops.engines["us-east"], 1, tag, days_ago=500)
    run_id = scalar(ops.engines["us-east"], "SELECT md5(:t || 1)::uuid::text", t=tag)
    wait_until(lambda: all(_run_state(e, run_id) for e in ops.engines.values()), 30, "the run everywhere")
    for region, engine in ops.engines.items():
        with pytest.raises(Exception, match="DELETE of a live row of replicated table workflow_runs is refused") as err:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM workflow_runs WHERE id = :r"), {"r": run_id})
        assert "regionmesh runs prune" in str(err.value), region  # the hint names the path to use
    assert all(_run_state(e, run_id) == ("succeeded", False) for e in ops.engines.values())


def test_a_replicated_delete_does_not_remove_a_newer_live_row(ops: Ops) -> None:
    a, b = ops.engines["us-east"], ops.engines["eu-west"]
    tag = uuid.uuid4().hex[:8]
    load_finished_runs(a, 1, tag, days_ago=500)
    run_id = scalar(a, "SELECT md5(:t || 1)::uuid::text", t=tag)
    wait_until(lambda: all(_run_state(e, run_id) == ("succeeded", False) for e in ops.engines.values()), 30,
               "the run everywhere")
    before = scalar(a, "SELECT count(*) FROM replication_conflicts WHERE kind = 'delete_lost'")
    _hold_links(ops, "us-east", "eu-west", False)
    try:
        # eu-west deletes through the one path without waiting for its peers (as erasure does),
        # while us-east, not hearing it, writes a newer version of the run.
        ids, _ = retention.tombstone_finished_runs(b, 499 * 86400, 10)
        assert uuid.UUID(run_id) in ids
        time.sleep(0.01)  # us-east's version is later (one clock: one host)
        with a.begin() as conn:
            conn.execute(text("UPDATE workflow_runs SET status = 'cancelled' WHERE id = :r"), {"r": run_id})
        retention.purge_tombstones(b, ids, 3600)
        assert _run_state(b, run_id) is None
    finally:
        _hold_links(ops, "us-east", "eu-west", True)
    # us-east drops the stale tombstone (a lower version) and keeps its newer live row.
    wait_until(lambda: scalar(a, "SELECT count(*) FROM replication_conflicts WHERE kind = 'delete_lost'") > before,
               30, "us-east to refuse the delete of its newer live row")
    assert _run_state(a, run_id) == ("cancelled", False)
    # us-east deletes its version through the same path: every region converges on no row.
    ids, _ = retention.tombstone_finished_runs(a, 499 * 86400, 10)
    assert uuid.UUID(run_id) in ids
    retention.purge_tombstones(a, ids, 3600)
    wait_until(lambda: all(_run_state(e, run_id) is None for e in ops.engines.values()), 30, "removal everywhere")
    wait_until(lambda: streaming(ops.config), 60, "every link streaming")
    assert verify(ops.config, timeout=60).identical


# -- setup converges on the mesh file ---------------------------------------------------------------
def test_setup_repairs_connection_options_and_enabled_state(ops: Ops) -> None:
    e = ops.engines["us-east"]
    wrong = subscription_name("us-east", "eu-west")
    with e.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        info = subscribing.subscription_facts(e, wrong)["conninfo"]  # type: ignore[index]
        assert info, "the app role cannot read subconninfo: setup would compare fingerprints only"
        bad = re.sub(r"port=\d+", "port=1", info).replace("'", "''")
        conn.execute(text(f"ALTER SUBSCRIPTION {wrong} CONNECTION '{bad}'"))
        conn.execute(text(f"ALTER SUBSCRIPTION {subscription_name('us-east', 'ap-south')} SET (binary = true)"))
    subscribing.set_subscription_enabled(ops.engines["ap-south"], subscription_name("ap-south", "eu-west"), False)
    with e.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # a table no longer published
        conn.execute(text(f"ALTER PUBLICATION {PUBLICATION} DROP TABLE tenant_zones"))
    results = {link.subscription: link.result for link in setup(ops.config)}
    assert "connection" in results[wrong]
    assert "options" in results[subscription_name("us-east", "ap-south")]
    assert "enabled" in results[subscription_name("ap-south", "eu-west")]
    for sub in ("eu-west", "ap-south"):  # the links from us-east say what us-east publishes again
        assert "us-east publishes tenant_zones again" in results[subscription_name(sub, "us-east")], results
    assert "tenant_zones" in publishing.publication_tables(e, PUBLICATION)
    assert sum(r == "unchanged" for r in results.values()) == 1, results
    assert {link.result for link in setup(ops.config)} == {"unchanged"}
    wait_until(lambda: streaming(ops.config), 60, "every link streaming after the repair")


# -- prune -------------------------------------------------------------------------------------------
def test_prune_under_load_removes_old_finished_runs_everywhere(ops: Ops) -> None:
    tag = uuid.uuid4().hex[:8]
    load_finished_runs(ops.engines["eu-west"], 3000, tag, days_ago=40)
    load_finished_runs(ops.engines["ap-south"], 500, tag + "new", days_ago=10)
    wait_until(lambda: all(scalar(e, "SELECT count(*) FROM workflow_runs WHERE tenant_id LIKE :t", t=f"tenant-{tag}%") == 3500
                           for e in ops.engines.values()), 60, "the runs everywhere")
    with Writers(ops):  # the operator's command, as the runbook gives it
        out = regionmesh_cli(ops, "--region", "us-east", "runs", "prune", "--older-than", "30d", "--timeout", "120")
    pruned = re.search(r"pruned (\d+) runs from us-east", out)
    removed = {t: int(n) for t, n in re.findall(r"(\w+) (\d+)", out.split("removed:", 1)[-1])}
    assert pruned and int(pruned[1]) >= 3000, out
    assert removed.get("workflow_runs", 0) >= 3000 and removed.get("step_attempts", 0) >= 3000, out
    wait_until(lambda: streaming(ops.config), 60, "every link streaming")
    result = verify(ops.config, timeout=60)
    assert result.identical, {t: list(d)[:5] for t, d in result.differences.items() if d}
    for e in ops.engines.values():
        assert scalar(e, "SELECT count(*) FROM workflow_runs WHERE tenant_id = :t", t=f"tenant-{tag}") == 0
        assert scalar(e, "SELECT count(*) FROM workflow_runs WHERE tenant_id = :t", t=f"tenant-{tag}new") == 500
        for table in ("workflow_steps", "step_tasks", "step_attempts"):
            assert scalar(e, f"SELECT count(*) FROM {table} WHERE run_id IN "
                             "(SELECT md5(:t || i)::uuid FROM generate_series(1, 3000) i)", t=tag) == 0


# -- resync ------------------------------------------------------------------------------------------
def _slot_status(engine: Engine, slot: str) -> str | None:
    return next((s["wal_status"] for s in link_health.slots(engine) if s["slot_name"] == slot), None)


def test_resync_after_a_lost_slot_under_write_load(ops: Ops) -> None:
    lost = subscription_name("eu-west", "us-east")
    admin = make_engine(ops.dev.admin_url("us-east", DATABASE), region="us-east", pool_size=1)
    ops.dev.stop_pg("eu-west")
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'"))
            conn.execute(text("SELECT pg_reload_conf()"))
            deadline = time.monotonic() + 120
            while _slot_status(admin, lost) != "lost":
                assert time.monotonic() < deadline, f"slot {lost} never became lost: {link_health.slots(admin)}"
                conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason) VALUES (:t, 'us-east', 'pin')"),
                             {"t": f"wal-{uuid.uuid4().hex}"})
                conn.execute(text("SELECT pg_switch_wal()"))
                target = link_health.current_lsn(admin)
                wait_until(lambda: link_health.slot_caught_up(admin, subscription_name("ap-south", "us-east"), target), 30,
                           "ap-south to keep up")
                conn.execute(text("CHECKPOINT"))
            conn.execute(text("ALTER SYSTEM RESET max_slot_wal_keep_size"))
            conn.execute(text("SELECT pg_reload_conf()"))
    finally:
        ops.dev.up()
        admin.dispose()
    for e in ops.engines.values():
        e.dispose()
    links, _ = mesh_status(ops.config, error_window_s=3)
    assert any(link.subscription == lost and link.problem and "slot lost" in link.problem for link in links)
    with Writers(ops, ("us-east", "ap-south")):  # the operator's command, as the runbook gives it
        out = regionmesh_cli(ops, "region", "resync", "eu-west", "--from", "ap-south", "--dir", str(ops.dev.root))
    print(f"resync after a lost slot: {out}")
    assert re.search(rf"dropped .*{lost}.* rows copied", " ".join(out.split())), out
    wait_until(lambda: streaming(ops.config), 60, "every link streaming after the resync")
    result = verify(ops.config, timeout=60)
    assert result.identical, {t: list(d)[:5] for t, d in result.differences.items() if d}


def test_resync_after_the_database_is_dropped_under_write_load(ops: Ops) -> None:
    load_finished_runs(ops.engines["us-east"], 20000, uuid.uuid4().hex[:8], days_ago=1)
    lose_database(ops.dev, ops.config, "eu-west", ops.engines)
    with Writers(ops, ("us-east", "ap-south")):
        report = rebuild(ops.config, "eu-west", seed="us-east", admin_url=ops.dev.admin_url("eu-west", DATABASE))
    runs = scalar(ops.engines["us-east"], "SELECT count(*) FROM workflow_runs")
    print(f"resync after a dropped database: {runs} runs, {report.rows_copied} rows in {report.seconds:.1f}s")
    wait_until(lambda: streaming(ops.config), 60, "every link streaming after the resync")
    result = verify(ops.config, timeout=60)
    assert result.identical, {t: list(d)[:5] for t, d in result.differences.items() if d}
    assert result.rows["workflow_runs"]["eu-west"] == runs >= 20000
    # The new database is eu-west's: its own writes carry its name and replicate.
    with ops.engines["eu-west"].begin() as conn:
        conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason) VALUES ('after-rebuild', 'eu-west', 'pin')"))
    wait_until(lambda: scalar(ops.engines["ap-south"], "SELECT origin_region FROM tenant_registry WHERE tenant_id = 'after-rebuild'")
               == "eu-west", 30, "eu-west's first write after the rebuild in ap-south")


# -- a schema change on the running mesh (last: it leaves a throwaway revision at head) --------------
THROWAWAY = '''"""throwaway: a column on tenant_registry and a new replicated table

Revision ID: t900
Revises: {down}
"""
from alembic import op

from regionmesh.models import replicated_tables

revision = "t900"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tenant_registry ADD COLUMN region_note text")
    op.execute("""CREATE TABLE rm_test_widgets (id uuid PRIMARY KEY, label text NOT NULL,
                  epoch bigint NOT NULL DEFAULT 1, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                  origin_region text NOT NULL, deleted_at timestamptz)""")
    op.execute("CREATE TRIGGER rm_stamp BEFORE INSERT OR UPDATE ON rm_test_widgets FOR EACH ROW EXECUTE FUNCTION rm_stamp()")
    op.execute("SELECT rm_install_conflict_triggers('rm_test_widgets'::regclass)")
    replicated_tables.regenerate_replica_triggers(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError
'''


def test_migrate_adds_a_column_and_a_table_under_write_load_within_the_announced_pause(ops: Ops, tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "t900_throwaway.py").write_text(THROWAWAY.replace("{down}", head()), encoding="utf-8")
    extra = (str(versions),)
    steps = plan(ops.config, extra_versions=extra)
    actions = [(s.region, s.action.split(":")[0]) for s in steps]
    assert actions[:3] == [(r, "pause apply") for r in REGIONS]
    assert actions[3:6] == [(r, "upgrade to head in one transaction (DDL and conflict-trigger regeneration)") for r in REGIONS]
    assert actions[-3:] == [(r, "resume apply") for r in REGIONS]
    errors_before = apply_error_counts(ops.engines)
    offsets = log_offsets(ops.dev)
    down: dict[str, float] = {}
    worst: dict[str, float] = {}
    watching = threading.Event()

    def watch() -> None:  # how long each link's apply worker is not running
        while not watching.is_set():
            now = time.monotonic()
            for e in ops.engines.values():
                for s in link_health.subscriptions(e):
                    if s["pid"] is None:
                        down.setdefault(s["subname"], now)
                    elif s["subname"] in down:
                        worst[s["subname"]] = max(worst.get(s["subname"], 0.0), now - down.pop(s["subname"]))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    lines: list[str] = []
    with Writers(ops):
        watcher.start()
        time.sleep(1)
        report = upgrade_live(ops.config, extra_versions=extra, say=lines.append)
        wait_until(lambda: not down, 30, "every apply worker running again")
        watching.set()
        watcher.join()
    print("\n".join(lines))
    assert report.paused_s is not None and any("apply was paused for" in line for line in lines)
    assert lines[0].startswith("pausing apply on "), lines  # announced before it starts
    print(f"migrate paused apply for {report.paused_s:.2f}s; longest link down {max(worst.values()):.2f}s")
    assert set(worst) == {s for s in errors_before}, "every link was paused"
    assert max(worst.values()) <= report.paused_s + 2.0, (worst, report.paused_s)
    assert all(r.after == "t900" for r in report.regions)
    # The new shape replicates both ways, old rows and new.
    for region, e in ops.engines.items():
        with e.begin() as conn:
            conn.execute(text("INSERT INTO rm_test_widgets (id, label) VALUES (:i, :l)"), {"i": uuid.uuid4(), "l": region})
            conn.execute(text("INSERT INTO tenant_registry (tenant_id, home_region, reason, region_note) "
                              "VALUES (:t, :r, 'pin', 'new shape')"), {"t": f"shape-{region}-{uuid.uuid4().hex[:6]}", "r": region})
    wait_until(lambda: all(scalar(e, "SELECT count(*) FROM rm_test_widgets") == 3 for e in ops.engines.values()), 30,
               "the new table's rows everywhere")
    wait_until(lambda: all(scalar(e, "SELECT count(*) FROM tenant_registry WHERE region_note = 'new shape'") == 3
                           for e in ops.engines.values()), 30, "the new column everywhere")
    wait_until(lambda: streaming(ops.config), 60, "every link streaming")
    assert apply_error_counts(ops.engines) == errors_before
    assert apply_errors_in_logs(ops.dev, offsets) == []
    result = verify(ops.config, timeout=60, tables=(*COMPARED_TABLES, "rm_test_widgets"))
    assert result.identical, {t: list(d)[:5] for t, d in result.differences.items() if d}
