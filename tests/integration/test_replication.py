"""Full-mesh logical replication on three real PostgreSQL 16 clusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from bench.campaign_checker import scan_pg_logs
from regionmesh.config import MeshConfig
from regionmesh.models import link_health, publishing, subscribing
from regionmesh.models.engine import make_engine
from regionmesh.names import PUBLICATION, subscription_name, zoned_publication
from regionmesh.replication.setup import conninfo, setup
from regionmesh.replication.status import mesh_status
from regionmesh.replication.verify import verify
from regionmesh.testing.proxy import Proxy
from tests.conftest import Mesh
from tests.support.helpers import wait_until

REGIONS = ("us-east", "eu-west", "ap-south")


@pytest.fixture(scope="module")
def engines(mesh: Mesh) -> Iterator[dict[str, Engine]]:
    out = {r: make_engine(mesh.config.regions[r].database_url, region=r, pool_size=2) for r in REGIONS}
    yield out
    for e in out.values():
        e.dispose()


def put(engine: Engine, tenant: str, note: str, *, epoch: int = 1, home: str = "us-east") -> None:
    with engine.begin() as conn:
        conn.execute(text(
            """INSERT INTO tenant_registry (tenant_id, home_region, reason, note, epoch) VALUES (:t, :h, 'pin', :n, :e)
               ON CONFLICT (tenant_id) DO UPDATE SET note = EXCLUDED.note, epoch = EXCLUDED.epoch"""
        ), {"t": tenant, "h": home, "n": note, "e": epoch})


def get(engine: Engine, tenant: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM tenant_registry WHERE tenant_id = :t"), {"t": tenant}).mappings().first()
    return dict(row) if row else None


def everywhere(engines: dict[str, Engine], tenant: str, note: str) -> bool:
    return all((r := get(e, tenant)) is not None and r["note"] == note for e in engines.values())


def conflicts(engine: Engine, kind_like: str = "%") -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM replication_conflicts WHERE kind LIKE :k"), {"k": kind_like}).scalar_one())


def problems(config: MeshConfig) -> list[str]:
    links, _ = mesh_status(config, error_window_s=3)
    return [f"{link.publisher}->{link.subscriber}: {link.problem}" for link in links if not link.ok]


def apply_errors_other_than_network(mesh: Mesh) -> list[str]:
    """ERROR lines of logical replication workers in every region's log, lost connections and
    worker restart races aside (the fault campaign's own reading of the logs)."""
    return scan_pg_logs(mesh.dev.root / "logs")


def all_streaming(config: MeshConfig) -> bool:
    found = problems(config)
    if found:
        print("links not streaming:", found)
    return not found


def test_publication_is_the_replicated_tables_only_without_truncate(mesh: Mesh, engines: dict[str, Engine]) -> None:
    for engine in engines.values():
        tables = publishing.publication_tables(engine, PUBLICATION)
        assert "outbox" not in tables and "dead_letters" not in tables and "alembic_version" not in tables
        assert set(tables) == {"regions", "tenant_registry", "step_attempts", "heartbeats", "lease_grants",
                               "tenant_zones", "tenant_erasures", "erasure_confirmations", "run_summaries",
                               "tenant_registry_history", "duplicate_submissions", "zones",
                               "console_actions", "schedule_ticks", "tenant_shares"}
        # Payload tables go per destination, filtered on their zone (a mesh without zones: unzoned rows only).
        for dest in ("us-east", "eu-west", "ap-south"):
            if engine is not engines.get(dest):
                filters = publishing.publication_filters(engine, zoned_publication(dest))
                assert set(filters) == {"workflow_runs", "workflow_steps", "step_tasks", "schedules", "run_signals"}
                assert all(f is not None and "zone" in f for f in filters.values())
        flags = publishing.publication_flags(engine, PUBLICATION)
        assert flags == {"puballtables": False, "pubinsert": True, "pubupdate": True, "pubdelete": True, "pubtruncate": False}
    subs = {s["subname"]: s for s in link_health.subscriptions(engines["us-east"])}
    assert set(subs) == {"rm_us_east_from_eu_west", "rm_us_east_from_ap_south"}
    assert all(s["suborigin"] == "none" for s in subs.values())
    # The replication role reads the published tables and nothing else.
    with engines["us-east"].connect() as conn:
        role = mesh.config.replication_user
        assert conn.execute(text("SELECT rolreplication FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
        assert conn.execute(text(f"SELECT has_table_privilege('{role}', 'workflow_runs', 'SELECT')")).scalar()
        assert not conn.execute(text(f"SELECT has_table_privilege('{role}', 'outbox', 'SELECT')")).scalar()
        assert not conn.execute(text(f"SELECT has_table_privilege('{role}', 'workflow_runs', 'UPDATE')")).scalar()
    # Setup is idempotent.
    assert {link.result for link in setup(mesh.config)} == {"unchanged"}


def test_rows_from_each_region_arrive_once_everywhere_and_nothing_echoes(mesh: Mesh, engines: dict[str, Engine]) -> None:
    run = uuid.uuid4().hex[:8]
    before = {r: conflicts(e) for r, e in engines.items()}
    for region, engine in engines.items():
        put(engine, f"once-{run}-{region}", f"from {region}")
    for region in REGIONS:
        wait_until(lambda: everywhere(engines, f"once-{run}-{region}", f"from {region}"), 20, f"{region}'s row everywhere")
    # Each region's marker, written after it held every row: any echo of those rows
    # would be in its WAL before the marker, so it has arrived once the markers have.
    for region, engine in engines.items():
        put(engine, f"marker-{run}-{region}", "m")
    for region in REGIONS:
        wait_until(lambda: everywhere(engines, f"marker-{run}-{region}", "m"), 20, f"{region}'s marker")
    for region, engine in engines.items():
        for origin in REGIONS:
            row = get(engine, f"once-{run}-{origin}")
            assert row is not None and row["origin_region"] == origin
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM tenant_registry WHERE tenant_id LIKE :p"),
                                {"p": f"once-{run}-%"}).scalar() == 3
        assert conflicts(engine) == before[region], "an echo or conflict was applied"


def _route_through(config: MeshConfig, engines: dict[str, Engine], sub: str, pub: str, proxy: Proxy) -> None:
    port = int(config.regions[pub].peer_conninfo.split("port=")[1].split()[0])
    info = conninfo(config, pub).replace(f"port={port}", f"port={proxy.port}")
    subscribing.set_subscription_connection(engines[sub], subscription_name(sub, pub), info)


def test_partition_conflicts_converge_after_heal(mesh: Mesh, engines: dict[str, Engine]) -> None:
    config = mesh.config
    a, b, c = engines["us-east"], engines["eu-west"], engines["ap-south"]
    port = {r: int(config.regions[r].peer_conninfo.split("port=")[1].split()[0]) for r in REGIONS}
    to_a, to_b = Proxy(port["us-east"]), Proxy(port["eu-west"])
    run = uuid.uuid4().hex[:8]
    keys = {k: f"part-{run}-{k}" for k in ("a_then_b", "b_then_a", "epoch", "both_insert")}
    try:
        for key in ("a_then_b", "b_then_a", "epoch"):
            put(a, keys[key], "v0")
        for key in ("a_then_b", "b_then_a", "epoch"):
            wait_until(lambda: everywhere(engines, keys[key], "v0"), 20, "the base rows")
        _route_through(config, engines, "eu-west", "us-east", to_a)
        _route_through(config, engines, "us-east", "eu-west", to_b)
        wait_until(lambda: all_streaming(config), 30, "links through the proxies")
        to_a.sever()
        to_b.sever()
        # us-east and eu-west cannot see each other now (ap-south still sees both).
        put(a, keys["a_then_b"], "a")
        put(b, keys["a_then_b"], "b")  # later: b wins
        put(b, keys["b_then_a"], "b")
        put(a, keys["b_then_a"], "a")  # later: a wins
        put(b, keys["epoch"], "b-epoch2", epoch=2)
        put(a, keys["epoch"], "a-epoch1-later")  # later but lower epoch: loses
        put(a, keys["both_insert"], "a")
        put(b, keys["both_insert"], "b")  # same new key inserted on both sides: b is later
        with a.connect() as conn:
            assert conn.execute(text("SELECT note FROM tenant_registry WHERE tenant_id=:t"), {"t": keys["a_then_b"]}).scalar() == "a"

        def cut() -> bool:
            links, _ = mesh_status(config, error_window_s=3)
            down = {(link.publisher, link.subscriber) for link in links if not link.ok}
            return {("us-east", "eu-west"), ("eu-west", "us-east")} <= down and ("us-east", "ap-south") not in down

        wait_until(cut, 30, "status to show the two severed links down, and only them")
        to_a.heal()
        to_b.heal()
        expected = {"a_then_b": "b", "b_then_a": "a", "epoch": "b-epoch2", "both_insert": "b"}
        for key, note in expected.items():
            wait_until(lambda: everywhere(engines, keys[key], note), 60, f"{key} to converge on {note}")
        wait_until(lambda: all_streaming(config), 60, "every link streaming")
        result = verify(config, timeout=30)
        assert result.identical, result.differences
        # PostgreSQL counts lost connections as apply errors; no other error may have happened.
        assert apply_errors_other_than_network(mesh) == []
        assert conflicts(c, "%_lost") + conflicts(c, "%_won") >= 1  # ap-south saw both sides and resolved them
    finally:
        to_a.close()
        to_b.close()
        setup(config)
    wait_until(lambda: all_streaming(config), 60, "links back on direct connections")


def test_stopped_region_catches_up(mesh: Mesh, engines: dict[str, Engine]) -> None:
    run = uuid.uuid4().hex[:8]
    mesh.dev.stop_pg("ap-south")
    try:
        for i in range(50):
            put(engines["us-east"] if i % 2 else engines["eu-west"], f"down-{run}-{i}", f"n{i}")
        links, _ = mesh_status(mesh.config)
        assert any(not link.ok for link in links if "ap-south" in (link.publisher, link.subscriber))
    finally:
        mesh.dev.up()
    engines["ap-south"].dispose()
    wait_until(lambda: all(get(engines["ap-south"], f"down-{run}-{i}") for i in range(50)), 60, "ap-south to catch up")
    wait_until(lambda: all_streaming(mesh.config), 60, "every link streaming")
    assert verify(mesh.config, timeout=30).identical


def test_verify_names_a_planted_divergence(mesh: Mesh, engines: dict[str, Engine]) -> None:
    key = f"plant-{uuid.uuid4().hex[:8]}"
    put(engines["us-east"], key, "true value")
    wait_until(lambda: everywhere(engines, key, "true value"), 20, "the row everywhere")
    admin = make_engine(mesh.dev.admin_url("eu-west", "regionmesh"), region="eu-west", pool_size=1)
    try:
        with admin.begin() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_replication_origin WHERE roname = 'rm_test_plant'")).scalar():
                conn.execute(text("SELECT pg_replication_origin_create('rm_test_plant')"))
            conn.execute(text("SELECT pg_replication_origin_session_setup('rm_test_plant')"))
            conn.execute(text("UPDATE tenant_registry SET note = 'planted' WHERE tenant_id = :t"), {"t": key})
            conn.execute(text("SELECT pg_replication_origin_session_reset()"))
    finally:
        admin.dispose()
    assert get(engines["eu-west"], key)["note"] == "planted"  # type: ignore[index]
    env = dict(os.environ, REGIONMESH_CONFIG=str(mesh.dev.mesh_file))
    res = subprocess.run([sys.executable, "-m", "regionmesh.ops.cli", "verify", "--json", "--timeout", "20"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    assert report["identical"] is False
    diff = report["differences"]["tenant_registry"]
    assert list(diff) == [key]
    assert diff[key]["us-east"] == diff[key]["ap-south"] != diff[key]["eu-west"]
    assert all(not d for t, d in report["differences"].items() if t != "tenant_registry")
    # Repair the normal way: a newer write replicates everywhere.
    put(engines["us-east"], key, "repaired")
    wait_until(lambda: everywhere(engines, key, "repaired"), 20, "the repair")
    assert verify(mesh.config, timeout=20).identical


def test_status_cli_reports_every_link(mesh: Mesh) -> None:
    env = dict(os.environ, REGIONMESH_CONFIG=str(mesh.dev.mesh_file))

    def status() -> subprocess.CompletedProcess[str] | None:
        res = subprocess.run([sys.executable, "-m", "regionmesh.ops.cli", "replication", "status", "--json",
                              "--error-window", "3"], capture_output=True, text=True, env=env, timeout=60, check=False)
        return res if res.returncode == 0 else None

    res = wait_until(status, 60, "status to exit 0")
    links = json.loads(res.stdout)["links"]
    assert len(links) == 6 and all(link["ok"] and link["worker_alive"] for link in links)
    assert all(link["wal_status"] in ("reserved", "extended") for link in links)
    # A link down makes it exit 1.
    mesh.dev.stop_pg("eu-west")
    try:
        down = subprocess.run([sys.executable, "-m", "regionmesh.ops.cli", "replication", "status", "--json"],
                              capture_output=True, text=True, env=env, timeout=60, check=False)
        assert down.returncode == 1
        problems_ = [link for link in json.loads(down.stdout)["links"] if not link["ok"]]
        assert {(p["publisher"], p["subscriber"]) for p in problems_} >= {("us-east", "eu-west"), ("eu-west", "us-east")}
    finally:
        mesh.dev.up()


def test_a_tie_on_epoch_and_time_goes_to_the_greater_region_name(mesh: Mesh, engines: dict[str, Engine]) -> None:
    """The last tie-break of the conflict rule: the same key written in us-east and eu-west with
    the same epoch and the same updated_at converges everywhere on us-east's version ('us-east' >
    'eu-west' byte-wise), whichever arrives first (ap-south receives both)."""
    config = mesh.config
    for engine in engines.values():  # the module's pools may hold connections to a server restarted since
        engine.dispose()
    key = f"tie-{uuid.uuid4().hex[:8]}"
    links = [("us-east", "eu-west"), ("eu-west", "us-east")]  # (subscriber, publisher)

    def admin(region: str) -> Engine:
        return make_engine(mesh.dev.admin_url(region, "regionmesh"), pool_size=1)

    def set_links(enabled: bool) -> None:
        for sub, pub in links:
            engine = admin(sub)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f"ALTER SUBSCRIPTION {subscription_name(sub, pub)} {'ENABLE' if enabled else 'DISABLE'}"))
            engine.dispose()

    set_links(False)
    try:
        for region in ("us-east", "eu-west"):
            engine = admin(region)
            with engine.begin() as conn:
                # Written as the apply worker writes: the stamp trigger (local writes only) does not
                # set updated_at or origin_region, so both sides carry exactly the same time.
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                conn.execute(text(
                    """INSERT INTO tenant_registry (tenant_id, home_region, reason, note, epoch, updated_at, origin_region)
                       VALUES (:t, 'us-east', 'pin', :n, 3, '2026-01-01 00:00:00+00', :r)"""),
                    {"t": key, "n": f"from {region}", "r": region})
            engine.dispose()
        wait_until(lambda: get(engines["ap-south"], key) is not None and get(engines["ap-south"], key)["note"]  # type: ignore[index]
                   == "from us-east" and get(engines["us-east"], key)["note"] == "from us-east"  # type: ignore[index]
                   and get(engines["eu-west"], key)["note"] == "from eu-west", 30,  # type: ignore[index]
                   "ap-south to settle on us-east's version while the pair is apart")
    finally:
        set_links(True)
    wait_until(lambda: everywhere(engines, key, "from us-east"), 60, "every region on us-east's version")
    assert {get(e, key)["origin_region"] for e in engines.values()} == {"us-east"}  # type: ignore[index]
    wait_until(lambda: all_streaming(config), 60, "every link streaming")
