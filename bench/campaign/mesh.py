"""The campaign's mesh: a scratch dev mesh whose replication links and cross-region broker links run
through TCP proxies (so faults can cut them), its workers with the test workflows and short timers,
and the questions the other parts ask of it (is every region healthy, which regions are down).

Proxies: ``repl_proxies[(subscriber, publisher)]`` carries the subscriber's subscription to the
publisher; ``broker_proxies[(region, other)]`` carries ``region``'s workers to ``other``'s Redis
(each region's workers read a mesh file of their own, ``campaign-<region>.toml``, that says so).
"""

from __future__ import annotations

import os
import shutil
import time

from sqlalchemy import Engine

from bench import mutants
from bench.campaign.record import Record
from bench.common import ROOT
from bench.mutants import Mutant
from regionmesh.config import MeshConfig, load_config
from regionmesh.models import residency, subscribing
from regionmesh.models.engine import make_engine
from regionmesh.names import subscription_name, zoned_publication
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.failover import lease_status
from regionmesh.ops.residency import bind_zone
from regionmesh.replication.setup import conninfo
from regionmesh.testing.proxy import Proxy

WORKFLOWS = "regionmesh.workers.examples,regionmesh.testing.workflows"
LEASE_S, DRIFT, MARGIN_S = 4.0, 0.01, 1.0
SETTINGS_ENV = {"REGIONMESH_RECONCILE_INTERVAL_S": "0.3", "REGIONMESH_LEASE_S": str(LEASE_S),
                "REGIONMESH_CLOCK_DRIFT": str(DRIFT), "REGIONMESH_LEASE_MARGIN_S": str(MARGIN_S),
                "REGIONMESH_FORWARD_CONFIRM_S": "5", "REGIONMESH_REQUEUE_AFTER_S": "5"}


def _port(conninfo_or_url: str) -> int:
    if "port=" in conninfo_or_url:
        return int(conninfo_or_url.split("port=")[1].split()[0])
    return int(conninfo_or_url.rsplit(":", 1)[1].split("/")[0])


class CampaignMesh:
    """A running campaign mesh (made by ``start``)."""

    def __init__(self, dev: DevMesh, regions: list[str], config: MeshConfig, record: Record,
                 mutant: Mutant | None = None) -> None:
        self.dev = dev
        self.mutant = mutant
        self.root = dev.root
        self.regions = regions
        self.config = config
        self.record = record
        self.ledger_dir = self.root / "ledger"
        self.engines: dict[str, Engine] = {r: make_engine(config.regions[r].database_url, region=r) for r in regions}
        self.repl_proxies: dict[tuple[str, str], Proxy] = {}  # (subscriber, publisher)
        self.broker_proxies: dict[tuple[str, str], Proxy] = {}  # (from region, to region's broker)
        self.down: set[str] = set()  # regions whose broker a producer should not try now

    @classmethod
    def start(cls, dev: DevMesh, regions: list[str], record: Record, mutant: Mutant | None = None, *,
              zones: dict[str, list[str]] | None = None, zoned: list[str] | None = None) -> CampaignMesh:
        """Bring the mesh up without workers (with ``zones``), route every link through a proxy,
        plant ``mutant`` (its SQL in every region's database, after migrate; its Python through the
        workers' workflow modules), start one worker per region, wait until every region holds its
        lease, then bind the ``zoned`` tenants to the mesh's zone (and plant a publication mutant)."""
        os.environ.update(SETTINGS_ENV)  # the operator side (failover, restore) runs the same lease settings
        ledger_dir = dev.root / "ledger"
        ledger_dir.mkdir()
        os.chmod(ledger_dir, 0o777)
        mesh = cls(dev, regions, dev.up(regions, workers=0, zones=zones or None), record, mutant)
        try:
            if mutant is not None and (mutant.sql or mutant.python):
                for r in regions:
                    with mesh.engines[r].begin() as conn:
                        planted = mutants.apply_sql(conn, mutant)
                record.log(f"  mutant {mutant.name} planted: {', '.join(planted) or 'python: ' + mutants.PATCH_MODULE}")
            mesh._route_through_proxies()
            mesh._write_worker_mesh_files()
            for r in regions:
                dev.start_worker(r, extra_env=mesh.worker_env(r))
            mesh.wait_healthy(90)
            if zoned:
                mesh._bind(zoned)
        except BaseException:
            mesh._close_links()
            raise
        return mesh

    def _bind(self, tenants: list[str]) -> None:
        """Bind ``tenants`` to the mesh's one zone and wait until every region holds the bindings
        (the load starts after: the window of a binding still replicating is a fault of its own),
        then plant a publication mutant: one in-zone region's publication toward the first region
        outside the zone loses its row filters."""
        (zone, members), = self.config.zones.items()
        for tenant in tenants:
            bind_zone(self.config, tenant, zone, members[0])
        deadline = time.monotonic() + 60
        for r in self.regions:
            while residency.bound_counts(self.engines[r]).get(zone, 0) < len(tenants):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"zone bindings of {', '.join(tenants)} not in {r} after 60s")
                time.sleep(0.2)
        self.record.log(f"  zone {zone} ({', '.join(members)}): {', '.join(tenants)} bound")
        if self.mutant is not None and self.mutant.unfilter:
            outside = next(r for r in self.regions if r not in members)
            with self.engines[members[0]].begin() as conn:
                gone = mutants.apply_unfilter(conn, zoned_publication(outside))
            self.record.log(f"  mutant {self.mutant.name} planted: {members[0]}'s {zoned_publication(outside)} "
                            f"without its row filter on {', '.join(gone)}")

    def _route_through_proxies(self) -> None:
        for sub in self.regions:
            for pub in self.regions:
                if sub == pub:
                    continue
                port = _port(self.config.regions[pub].peer_conninfo)
                proxy = self.repl_proxies[(sub, pub)] = Proxy(port)
                info = conninfo(self.config, pub, sub).replace(f"port={port}", f"port={proxy.port}")
                subscribing.set_subscription_connection(self.engines[sub], subscription_name(sub, pub), info)
                self.broker_proxies[(sub, pub)] = Proxy(_port(self.config.regions[pub].broker_url))

    def worker_env(self, region: str) -> dict[str, str]:
        return SETTINGS_ENV | mutants.worker_env(self.mutant, WORKFLOWS) | {
            "PYTHONPATH": str(ROOT), "RM_TEST_LEDGER": str(self.ledger_dir),
            "REGIONMESH_CONFIG": str(self.root / f"campaign-{region}.toml")}

    def _write_worker_mesh_files(self) -> None:
        """mesh.toml as each region's workers see it: peers' brokers through this region's proxies."""
        for me in self.regions:
            self.dev.write_mesh_file(self.root / f"campaign-{me}.toml", broker_urls={
                peer: self.dev.broker_url(peer, port=self.broker_proxies[(me, peer)].port)
                for peer in self.regions if peer != me})

    def restart_servers(self) -> None:
        """Start whatever server is down (PostgreSQL, Redis) without touching the subscriptions
        (``up``'s migrate step would point them back at the direct addresses)."""
        self.dev.up(migrate=False)
        config = load_config(str(self.dev.mesh_file))
        for (_sub, pub), proxy in self.repl_proxies.items():
            proxy.target = (proxy.target[0], _port(config.regions[pub].peer_conninfo))
        for (_frm, to), proxy in self.broker_proxies.items():
            proxy.target = (proxy.target[0], _port(config.regions[to].broker_url))
        for e in self.engines.values():
            e.dispose()

    def heirs(self, victim: str) -> list[str]:
        """The regions ``victim`` may be failed over to: the other regions of its zone when it is
        in one (a failover out of the zone is refused while the zone has bound tenants), else all."""
        zone = self.config.zone_of(victim)
        peers = self.config.zones.get(zone, ()) if zone else self.regions
        return [r for r in peers if r != victim and r in self.regions]

    def alive(self) -> list[str]:
        """The regions a producer should try now (all of them if every one is down)."""
        return [r for r in self.regions if r not in self.down] or list(self.regions)

    def leases(self) -> dict[str, bool]:
        return {s.region: s.held for s in lease_status(self.config)}

    def wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(self.leases().values()) and all(self.dev.workers(r) for r in self.regions):
                    return True
            except Exception as exc:  # a region answering slowly: ask again
                self.record.log(f"  (lease status: {type(exc).__name__})")
            time.sleep(0.5)
        self.record.note(f"mesh not healthy after {timeout:.0f}s: {self.leases()}")
        return False

    def _close_links(self) -> None:
        for p in [*self.repl_proxies.values(), *self.broker_proxies.values()]:
            p.close()
        for e in self.engines.values():
            e.dispose()

    def close(self, keep: bool) -> None:
        self._close_links()
        self.dev.down(purge=not keep)  # stop every process either way; keep the folder on request
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
