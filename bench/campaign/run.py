"""One campaign from start to verdict: the mesh up, producers and faults for M minutes, the drain,
the verdict; the mesh folder kept when the campaign failed or was asked to keep it."""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.campaign.drain import drain
from bench.campaign.faults import Faults
from bench.campaign.mesh import CampaignMesh
from bench.campaign.procwatch import ProcessWatch
from bench.campaign.producers import Producers
from bench.campaign.record import Log, Plan, Record
from bench.campaign.resend import Resender
from bench.campaign.schedule import schedule
from bench.campaign.verdict import Baseline, judge, report
from bench.campaign_checker import Verdict
from bench.common import RESULTS, check_code_root, scratch_mesh
from bench.mutants import Mutant


def resender_thread(plan: Plan, mesh: CampaignMesh, record: Record) -> threading.Thread | None:
    """The batch and raw producers' re-sender, not started; None with re-sends off (--no-resend)."""
    return threading.Thread(target=Resender(mesh, record).loop, daemon=True) if plan.resend else None


def run(plan: Plan, mesh: CampaignMesh, record: Record, drain_s: float) -> tuple[Verdict, dict[str, Any]]:
    """Load and faults until the campaign's end, then the drain and the verdict."""
    baseline = Baseline.take(mesh)
    stop = threading.Event()
    producers = Producers(plan, mesh, record, stop)
    faults = Faults(plan, mesh, record, stop)
    record.started = time.time()
    watch_stop = threading.Event()
    watch = ProcessWatch(mesh.dev, mesh.regions, watch_stop)
    watch_thread = watch.thread()
    watch_thread.start()
    threads = producers.threads()
    for t in threads:
        t.start()
    resender = resender_thread(plan, mesh, record)
    if resender is not None:
        resender.start()
    try:
        schedule(plan, mesh, faults, record, stop)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    faults_end = time.time()
    record.log(f"  faults stopped after {faults_end - record.started:.0f}s; {len(record.sent)} submissions "
               f"acknowledged; draining (at most {drain_s:.0f}s)")
    mesh.wait_healthy(120)
    drained = drain(plan, mesh, producers, record, drain_s)
    record.log(f"  drained: {drained} after {time.time() - faults_end:.0f}s")
    watch_stop.set()
    watch_thread.join(10)
    return judge(plan, mesh, record, producers, baseline, faults_end=faults_end, drained=drained,
                 exits=watch.exits())


def run_campaign(seed: int, minutes: float, *, n_regions: int = 3, drain_s: float = 300, keep: bool = False,
                 out: str | None = None, log: Log = print, mutant: Mutant | None = None,
                 kinds: tuple[str, ...] = (), resend: bool = True) -> tuple[Verdict, dict[str, Any]]:
    check_code_root()
    plan = Plan.of(seed, minutes, n_regions, mutant, kinds, resend=resend)
    dev = scratch_mesh()
    record = Record(log)
    log(f"fault campaign: seed {seed}, {minutes:g} min, regions {plan.regions}, mesh in {dev.root}"
        + (f", mutant {mutant.name} ({mutant.breaks})" if mutant else "")
        + ("" if resend else ", producer re-sends off"))
    try:
        mesh = CampaignMesh.start(dev, plan.regions, record, mutant, zones=plan.zones, zoned=plan.zoned_tenants)
    except BaseException:
        dev.down(purge=False)
        log(f"campaign aborted (seed {seed}); mesh kept in {dev.root}")
        raise
    try:
        verdict, extra = run(plan, mesh, record, drain_s)
    except BaseException:
        mesh.close(keep=True)
        log(f"campaign aborted (seed {seed}); mesh kept in {dev.root}")
        raise
    # A failed campaign keeps its folder (logs, ledger, journals) for whoever looks into it; with a
    # mutant, failing is the checker missing the planted bug.
    failed = not verdict.ok if mutant is None else not mutant.caught(verdict.classes)
    mesh.close(keep or failed)
    extra["mesh_folder"] = str(dev.root) if keep or failed else None
    if mutant is not None:
        extra["mutant"] = {"name": mutant.name, "breaks": mutant.breaks, "catches": [mutant.catches, *mutant.or_else],
                           "caught": not failed}
    report(verdict, extra, seed, out or (str(RESULTS / f"campaign-{seed}-{mutant.name}.json") if mutant else None))
    return verdict, extra
