"""``regionmesh demo``: three regions doing real work and converging, in under two minutes.

Brings up (or reuses) the local mesh, submits the example workflows for about
60 tenants from every region, waits, and prints per region: runs placed and
completed, submissions forwarded, submit-to-done latency, replication lag and
the ``verify`` result. ``--chaos`` also SIGKILLs a worker's pool process in the
middle of a step and fails a region over and back. Anything lost, duplicated
or diverged makes it exit non-zero.

The demo is a producer that must not lose a submission, so it journals them
(``regionmesh.client.Journal``) and sends again what a region does not hold
after ``RESEND_AFTER_S``; how many it sent again is printed with the events.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from regionmesh.client import Journal, confirm, submit
from regionmesh.config import MeshConfig
from regionmesh.models import runs as runs_repo
from regionmesh.models.engine import engine_for
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.failover import FailoverRefused, failover, restore
from regionmesh.replication.status import mesh_status
from regionmesh.replication.verify import verify
from regionmesh.routing.hashing import home_by_hash

STEPS = {"onboard": 4, "etl": 5}  # tasks per run: etl maps over 3 items
RESEND_AFTER_S = 15.0  # a submission its region does not hold this long after its send is sent again
CONFIRM_EVERY_S = 3.0


@dataclass
class Sent:
    tenant: str
    key: str
    workflow: str
    via: str
    home: str
    at: float


@dataclass
class DemoResult:
    seconds: float
    table: Table
    lost: int
    duplicated: int
    identical: bool
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.identical


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run_demo(root: str, *, tenants: int = 60, per_tenant: int = 3, chaos: bool = False, timeout: float = 90,
             console: Console | None = None) -> DemoResult:
    console = console or Console()
    started = time.monotonic()
    dev = DevMesh(root)
    config = dev.up(workers=1, metrics=True)
    regions = list(config.regions)
    engines = {r: engine_for(config, r) for r in regions}
    events: list[str] = []
    session = uuid.uuid4().hex[:8]
    sent: dict[uuid.UUID, Sent] = {}
    total = tenants * per_tenant
    victim = regions[-1] if chaos and len(regions) > 2 else None
    heir = regions[0]
    journal = Journal(Path(root) / f"journal-{session}.jsonl")
    resent = 0

    def settle() -> None:
        nonlocal resent
        resent += confirm(journal, config, resend_after_s=RESEND_AFTER_S).resent

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            t_sub = progress.add_task("submitted", total=total)
            t_done = progress.add_task("completed", total=total)
            alive = list(regions)
            for i in range(total):
                tenant = f"demo-{i % tenants}"
                workflow = "onboard" if i % 2 == 0 else "etl"
                via = alive[i % len(alive)]
                key = f"demo-{session}-{i}"
                data = {"email": f"user{i}@example.com"} if workflow == "onboard" else {"n": 3}
                receipt = submit(tenant, workflow, data, key, region=via, config=config, resolve_home=False,
                                 journal=journal)
                sent[receipt.run_id] = Sent(tenant, key, workflow, via, home_by_hash(tenant, regions), time.time())
                progress.advance(t_sub)
                if chaos and i == total // 3:
                    events.append(_kill_a_pool_process(dev, engines, regions))
                if victim and i == total // 2:
                    dev.kill_region(victim)
                    alive.remove(victim)
                    report = failover(config, victim, heir)
                    events.append(f"killed {victim} (SIGKILL: PostgreSQL, Redis, workers); failed over to {heir} once "
                                  f"its lease had expired ({report.waited_s:.1f}s): {report.runs_adopted} runs adopted")
                if i % 20 == 0:
                    progress.update(t_done, completed=_completed(engines[heir], list(sent)))
            ids = list(sent)
            # Submissions a producer handed to the victim's own broker wait there until it returns.
            stranded = [rid for rid in ids if sent[rid].via == victim]
            others = [rid for rid in ids if rid not in set(stranded)]
            _wait(engines[heir], others, timeout, lambda n: progress.update(t_done, completed=n), settle)
            if victim:
                events.append(_bring_back(dev, config, victim, engines))
                _wait(engines[heir], ids, timeout, lambda n: progress.update(t_done, completed=n), settle)
            settle()
            events.append(f"producer journal: {len(journal.settled)} of {total} submissions held by the region they "
                          f"were sent to, {resent} sent again (not held after {RESEND_AFTER_S:.0f}s), "
                          f"{len(journal.pending())} still pending")
        identical = False
        for _ in range(3):  # replication may still be carrying the last rows
            result = verify(config, timeout=30)
            identical = result.identical
            if identical:
                break
        lost, duplicated, table = _report(config, engines, sent, regions, identical, events)
        return DemoResult(time.monotonic() - started, table, lost, duplicated, identical, events)
    finally:
        for e in engines.values():
            e.dispose()


def _wait(engine: Any, ids: list[uuid.UUID], timeout: float, show: Any, settle: Any) -> None:
    deadline = time.monotonic() + timeout
    next_settle = time.monotonic() + CONFIRM_EVERY_S
    while time.monotonic() < deadline:
        done = _completed(engine, ids)
        show(done)
        if done == len(ids):
            return
        if time.monotonic() >= next_settle:
            settle()
            next_settle = time.monotonic() + CONFIRM_EVERY_S
        time.sleep(0.3)


def _completed(engine: Any, ids: list[uuid.UUID]) -> int:
    return sum(1 for status, _ in runs_repo.statuses(engine, ids).values() if status == "succeeded")


def _kill_a_pool_process(dev: DevMesh, engines: dict[str, Any], regions: list[str]) -> str:
    """SIGKILL the pool process running some step right now (or the first worker's pool)."""
    for region in regions:
        holder = runs_repo.running_worker(engines[region], region)
        if holder:
            pid = int(holder.rsplit(":", 1)[1])
            psutil.Process(pid).kill()
            return f"SIGKILLed worker process {pid} in {region} in the middle of a step"
    for region in regions:
        for w in dev.workers(region):
            if w.pid is None:
                continue
            children = psutil.Process(w.pid).children()
            if children:
                children[0].kill()
                return f"SIGKILLed pool process {children[0].pid} of {region}'s worker"
    return "no worker process to kill"


def _bring_back(dev: DevMesh, config: MeshConfig, victim: str, engines: dict[str, Any]) -> str:
    dev.up(metrics=True)
    engines[victim].dispose()
    dev.start_worker(victim)
    deadline = time.monotonic() + 60
    while True:
        try:
            report = restore(config, victim, timeout_s=10)
            break
        except (FailoverRefused, Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return (f"{victim} back, caught up with {', '.join(report.caught_up_with)} and restored "
            f"(written at {report.written_at}); it works again once a majority grants it a lease")


def _report(config: MeshConfig, engines: dict[str, Any], sent: dict[uuid.UUID, Sent], regions: list[str],
            identical: bool, events: list[str]) -> tuple[int, int, Table]:
    reader = engines[regions[0]]
    ids = list(sent)
    rows = runs_repo.run_facts(reader, ids)
    missing = [rid for rid in ids if rows.get(rid, {}).get("status") != "succeeded"]
    lost = len(missing)
    for rid in missing[:10]:
        s = sent[rid]
        events.append(f"not completed: run {rid} ({s.workflow}, tenant {s.tenant}, sent via {s.via}, "
                      f"home {s.home}, status {rows.get(rid, {}).get('status', 'absent')})")
    duplicated = runs_repo.duplicate_keys(reader, [(s.tenant, s.key) for s in sent.values()])
    # A finished run with more step tasks than its DAG has would be a duplicate effect.
    duplicated += sum(1 for rid, facts in rows.items()
                      if facts["status"] == "succeeded" and facts["tasks"] != STEPS[sent[rid].workflow])
    links, _ = mesh_status(config)
    lag_into = {r: max((link.lag_seconds or 0.0 for link in links if link.subscriber == r), default=0.0) for r in regions}
    placed = Counter(facts["owner"] for facts in rows.values())
    completed = Counter(facts["owner"] for facts in rows.values() if facts["status"] == "succeeded")
    forwarded = Counter(s.via for rid, s in sent.items() if rows.get(rid, {}).get("owner", s.via) != s.via)
    latency: dict[str, list[float]] = defaultdict(list)
    for rid, facts in rows.items():
        if facts["finished"] is not None:
            latency[facts["owner"]].append((facts["finished"] - sent[rid].at) * 1000)
    table = Table(title="regionmesh demo: per region")
    for col in ("region", "runs placed", "completed", "forwarded", "p50 ms", "p99 ms", "lag in s", "verify"):
        table.add_column(col, justify="right" if col not in ("region", "verify") else "left")
    for r in regions:
        lat = latency.get(r, [])
        table.add_row(r, str(placed.get(r, 0)), str(completed.get(r, 0)), str(forwarded.get(r, 0)),
                      f"{statistics.median(lat):.0f}" if lat else "-", f"{_pct(lat, 0.99):.0f}" if lat else "-",
                      f"{lag_into[r]:.2f}", "identical" if identical else "DIFFERENT")
    return lost, duplicated, table
