"""``regionmesh metrics serve``: one region's Prometheus endpoint.

Gauges are read on each scrape from this region's PostgreSQL (replication
links into it and slots out of it, outbox, runs, fence) and Redis (queue
depths); step durations and forward latency come from the workers through
``PROMETHEUS_MULTIPROC_DIR``. Every name is listed in docs/reference/metrics.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from regionmesh.broker import QueueGauge
from regionmesh.config import MeshConfig
from regionmesh.models import lease as lease_repo
from regionmesh.models import link_health, outbox
from regionmesh.models.engine import engine_for
from regionmesh.models.runs import counts_by_status
from regionmesh.names import steps_queue, submit_queue, subscription_name


class RegionCollector:
    def __init__(self, config: MeshConfig) -> None:
        self.config = config
        self.region = config.local.name
        self.engine = engine_for(config, self.region)
        self.queues = QueueGauge(config.local.broker_url)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        r = self.region
        up = GaugeMetricFamily("regionmesh_up", "1 if this region's database and broker answer.", labels=["region", "part"])
        try:
            yield from self._database()
            up.add_metric([r, "postgres"], 1)
        except Exception:  # a scrape must not fail because one part is down
            up.add_metric([r, "postgres"], 0)
        try:
            yield from self._queues()
            up.add_metric([r, "redis"], 1)
        except Exception:
            up.add_metric([r, "redis"], 0)
        yield up

    def _database(self) -> Iterator[Metric]:
        r = self.region
        labels = ["from", "to"]
        lag_s = GaugeMetricFamily("regionmesh_replication_lag_seconds", "Age of the peer's heartbeat as replicated here.", labels=labels)
        sub_up = GaugeMetricFamily("regionmesh_replication_subscription_up", "1 if the apply worker for the link runs.", labels=labels)
        errors = CounterMetricFamily("regionmesh_replication_apply_errors", "Apply worker errors (lost connections included).", labels=labels)
        subs = {s["subname"]: s for s in link_health.subscriptions(self.engine)}
        ages = link_health.heartbeat_ages(self.engine)
        for peer in self.config.peers(r):
            s = subs.get(subscription_name(r, peer.name))
            sub_up.add_metric([peer.name, r], 1 if s and s["pid"] else 0)
            errors.add_metric([peer.name, r], float(s["apply_error_count"]) if s else 0.0)
            if peer.name in ages:
                lag_s.add_metric([peer.name, r], max(0.0, ages[peer.name]))
        yield from (lag_s, sub_up, errors)
        lag_b = GaugeMetricFamily("regionmesh_replication_lag_bytes", "WAL not yet confirmed by the subscriber.", labels=labels)
        retained = GaugeMetricFamily("regionmesh_replication_slot_retained_bytes", "WAL kept for the slot.", labels=labels)
        status = GaugeMetricFamily("regionmesh_replication_slot_status", "1 for the slot's wal_status.", labels=[*labels, "wal_status"])
        names = {subscription_name(p.name, r): p.name for p in self.config.peers(r)}
        for slot in link_health.slots(self.engine):
            to = names.get(slot["slot_name"])
            if to is None:
                continue
            lag_b.add_metric([r, to], float(slot["lag_bytes"] or 0))
            retained.add_metric([r, to], float(slot["retained_bytes"] or 0))
            status.add_metric([r, to, slot["wal_status"] or "unknown"], 1)
        yield from (lag_b, retained, status)
        conflicts = CounterMetricFamily("regionmesh_replication_conflicts", "Conflicts the replica triggers resolved.", labels=["region", "kind"])
        for kind, n in link_health.conflict_counts(self.engine).items():
            conflicts.add_metric([r, kind], float(n))
        yield conflicts
        depth, oldest, _ = outbox.depth(self.engine)
        yield GaugeMetricFamily("regionmesh_outbox_depth", "Submissions waiting for an unreachable home broker.", value=depth)
        yield GaugeMetricFamily("regionmesh_outbox_oldest_age_seconds", "Age of the oldest waiting submission.", value=oldest or 0.0)
        yield GaugeMetricFamily("regionmesh_forward_awaiting", "Forwarded submissions whose run has not arrived here yet.",
                                value=outbox.awaiting(self.engine))
        runs = GaugeMetricFamily("regionmesh_runs", "Runs owned by this region, by status.", labels=["region", "status"])
        counts = counts_by_status(self.engine, r)
        lease = lease_repo.lease_row(self.engine)
        for st in ("running", "succeeded", "failed", "cancelled"):
            runs.add_metric([r, st], float(counts.get(st, 0)))
        yield runs
        yield GaugeMetricFamily("regionmesh_fenced", "1 while this region may not work (no lease, or fenced).",
                                value=0 if lease["may_work"] else 1)
        yield GaugeMetricFamily("regionmesh_lease_remaining_seconds",
                                "Seconds left of this region's lease (0 without one).",
                                value=max(0.0, lease["remaining_s"] or 0.0))

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("regionmesh_queue_depth", "Messages waiting in the region's queues.", labels=["queue"])
        for q, n in self.queues.depths([submit_queue(self.region), steps_queue(self.region)]).items():
            depth.add_metric([q], float(n))
        yield depth
        unacked = self.queues.unacked()
        yield GaugeMetricFamily("regionmesh_queue_unacked", "Messages delivered to workers, not yet acknowledged.", value=unacked)


def build_registry(config: MeshConfig, multiproc_dir: str | None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RegionCollector(config))
    if multiproc_dir and os.path.isdir(multiproc_dir):
        MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    return registry


def serve(config: MeshConfig, port: int, host: str = "127.0.0.1", multiproc_dir: str | None = None) -> Any:
    """Serve /metrics for the local region until the process ends."""
    registry = build_registry(config, multiproc_dir)
    return start_http_server(port, addr=host, registry=registry)
