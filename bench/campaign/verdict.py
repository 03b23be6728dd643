"""The end of a campaign: what the regions hold is gathered with the independent checker's own reads
(bench/campaign_checker.py), put beside what the campaign recorded, judged, and reported (a table on
stdout and bench/results/campaign-<seed>.json)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from bench.campaign.mesh import DRIFT, LEASE_S, MARGIN_S, CampaignMesh
from bench.campaign.producers import Producers
from bench.campaign.record import ZONE, Plan, Record
from bench.campaign_checker import (
    Bounds,
    History,
    Verdict,
    apply_error_counts,
    evaluate,
    gather,
    log_offsets,
    print_table,
    read_ledger,
    scan_pg_logs,
)
from bench.checker.gather import dump_database, marker_hits
from bench.common import RESULTS, write_json
from regionmesh.ops.devmesh import DATABASE
from regionmesh.replication.verify import verify


@dataclass(frozen=True)
class Baseline:
    """Taken before the load starts: apply errors already counted and how far the logs were read."""

    apply_errors: dict[str, int]
    log_offsets: dict[str, int]

    @classmethod
    def take(cls, mesh: CampaignMesh) -> Baseline:
        return cls(apply_error_counts(_urls(mesh)), log_offsets(mesh.root / "logs"))


def _urls(mesh: CampaignMesh) -> dict[str, str]:
    return {r: mesh.config.regions[r].database_url for r in mesh.regions}


def _verify(mesh: CampaignMesh, record: Record) -> bool:
    """Whether every region holds identical replicated rows (three tries, 5 s apart)."""
    identical = False
    for _ in range(3):
        try:
            identical = verify(mesh.config, timeout=60).identical
        except Exception as exc:
            record.notes.append(f"verify: {type(exc).__name__}: {exc}")
        if identical:
            break
        time.sleep(5)
    return identical


def judge(plan: Plan, mesh: CampaignMesh, record: Record, producers: Producers, baseline: Baseline, *,
          faults_end: float, drained: bool,
          exits: dict[tuple[str, int], float] | None = None) -> tuple[Verdict, dict[str, Any]]:
    """The checker's verdict on the campaign, and the facts the result file carries beside it."""
    identical = _verify(mesh, record)
    urls = _urls(mesh)
    got = gather(urls, plan.prefix)
    zones = {t: tuple(plan.zones[ZONE]) for t in plan.zoned_tenants}
    hits: dict[str, dict[str, int]] = {}
    if zones:
        markers = {t: m for t in plan.zoned_tenants if (m := plan.marker(t))}
        pg_dump = mesh.dev.pg_bindir / "pg_dump"
        hits = marker_hits({r: dump_database(pg_dump, mesh.dev.admin_url(r, DATABASE)) for r in mesh.regions}, markers)
    resent_at = producers.journal_resends()
    errors_after = apply_error_counts(urls)
    firsts = [replace(s.ack, resent_at=s.first_resend or resent_at.get(s.sid)) for s in record.sent]
    history = History(
        regions=mesh.regions, faults=record.faults, runs=got["runs"], created=got["created"],
        acks=firsts + list(record.resends),
        tasks=got["tasks"], ledger=read_ledger(mesh.ledger_dir), identical=identical,
        apply_errors=scan_pg_logs(mesh.root / "logs", baseline.log_offsets),
        apply_error_count_delta={k: v - baseline.apply_errors.get(k, 0) for k, v in errors_after.items()
                                 if v != baseline.apply_errors.get(k, 0)},
        dead_letters=got["dead_letters"],
        valid_submission_ids={s.sid for s in record.sent} | {a.sid for a in record.resends},
        outbox_rejected=got["outbox_rejected"], bounds=Bounds(LEASE_S, DRIFT, MARGIN_S), rows=got["rows"],
        submissions=got["submissions"], zones=zones, marker_hits=hits, accepted=got["accepted"],
        exits=exits or {})
    verdict = evaluate(history)
    started = record.started
    extra = {"seed": plan.seed, "minutes": plan.minutes, "regions": mesh.regions,
             "faults_s": round(faults_end - started, 1), "drain_s": round(time.time() - faults_end, 1),
             "drained": drained, "producer_resends": plan.resend, "refused_publishes": dict(record.stats.refused),
             "resent_by_producers": dict(record.stats.resent),
             "faults": [asdict(f) | {"t0": round(f.t0 - started, 2), "t1": round(f.t1 - started, 2)}
                        for f in record.faults],
             "notes": record.notes}
    return verdict, extra


def report(verdict: Verdict, extra: dict[str, Any], seed: int, out: str | None) -> None:
    print_table(verdict, seed)
    print(f"  re-sent by producers: {extra['resent_by_producers']}; publishes refused: {extra['refused_publishes']}")
    write_json(out or str(RESULTS / f"campaign-{seed}.json"), extra | {"verdict": verdict.as_json()})
