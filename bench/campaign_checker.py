"""The fault campaign's checker: an independent reading of what happened, sharing no code with the
system under test. It reads each region's PostgreSQL with its own SQL (never regionmesh's
repository functions), the external effect ledger the step handlers append to
(tests/support/workflows.py ``t.ledger``), the producers' records of what they were told, the
fault log and the PostgreSQL server logs, and decides:

* lost: an acknowledged submission (its publish to a broker returned) with no run in some region;
* duplicated: more than one run for one (tenant, idempotency key) anywhere, or a step effect more
  than once per (run, step, index) that no injected fault explains;
* crash re-runs: an execution of a step superseded by a later one (started and never took effect,
  or took effect but its completion was lost) in a region a fault hit at that moment, counted apart;
* stuck: a run of the campaign not ``succeeded`` in every region after the drain period;
* missing effect: a step task recorded done with no effect in the ledger;
* verify, apply errors other than lost connections, dead letters (without a reason, or for a
  valid submission of the campaign).

``evaluate`` is pure (tests plant violations in a history and see them reported); ``gather`` reads.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

# An effect this long before a fault can still belong to an execution the fault interrupted: the
# completion commit follows the effect, and on a starved two-core machine it can lag seconds.
EFFECT_SLACK_S = 8.0
# Faults that may interrupt a running handler or its completion: a killed process, a region
# killed, a lost lease (a cut), a database gone mid-completion. A Redis restart, a broker cut or
# a graceful move must never make a step run again.
RERUN_KINDS = frozenset({"pool_kill", "worker_kill", "pg_kill", "repl_cut", "region_failover"})
# PostgreSQL log lines about lost connections are what a cut or a killed peer looks like.
NETWORK_ERRORS = ("could not connect to the publisher", "could not receive data from WAL stream",
                  "could not send data to WAL stream", "terminating logical replication worker due to timeout",
                  "server closed the connection unexpectedly", "connection to server", "SSL SYSCALL error",
                  "could not read from", "terminating connection due to administrator command",
                  "terminating connection because of crash of another server process", "Connection refused")
# PostgreSQL 16: an apply worker leaving on a parameter change (ALTER SUBSCRIPTION … CONNECTION, as
# a cut and a heal do) or on a lost connection frees its worker slot before its replication origin;
# the launcher, told to restart it at once, can start the next worker in between, which fails at
# start, before applying anything, and is started again. Only such a race is forgiven: the PID
# holding the origin must be seen leaving in the same log.
ORIGIN_BUSY = re.compile(r"replication origin with ID \d+ is already active for PID (\d+)")


@dataclass(frozen=True)
class Ack:
    """One acknowledged submission as its producer recorded it."""

    path: str  # direct | forwarded | batch | raw
    tenant: str
    key: str
    via: str
    at: float
    resent_at: float | None = None  # the producer's first re-send (not held where it was sent by then)


@dataclass(frozen=True)
class Fault:
    kind: str
    region: str | None  # the region it hit (None: several, see regions)
    t0: float  # when it began
    t1: float  # when the region could work again (a cut: healed, plus the lease)
    regions: tuple[str, ...] = ()
    detail: str = ""

    def hits(self, region: str) -> bool:
        return region == self.region or region in self.regions


@dataclass
class History:
    regions: list[str]
    acks: list[Ack]
    faults: list[Fault]
    # region -> rows (tenant, key, run id, status) of every run of the campaign's tenants there
    runs: dict[str, list[tuple[str, str, str, str]]]
    tasks: set[tuple[str, str, int | None]]  # (run, step, index) of every step task, any region
    ledger: list[dict[str, Any]]
    identical: bool
    apply_errors: list[str]
    apply_error_count_delta: dict[str, int]
    dead_letters: list[tuple[str, str | None, str | None]]  # (region, submission id, reason)
    valid_submission_ids: set[str]
    outbox_rejected: list[tuple[str, str, str | None]]  # (region, submission id, rejection)
    created: dict[tuple[str, str], float] = field(default_factory=dict)  # (tenant, key) -> run created (epoch s)


@dataclass
class Verdict:
    submissions: dict[str, int]
    faults: dict[str, int]
    runs: int
    step_effects: int
    lost: list[str] = field(default_factory=list)
    duplicated_runs: list[str] = field(default_factory=list)
    duplicated_effects: list[str] = field(default_factory=list)
    missing_effects: list[str] = field(default_factory=list)
    crash_reruns: dict[str, int] = field(default_factory=dict)  # by fault kind
    stuck: list[str] = field(default_factory=list)
    identical: bool = False
    apply_errors: list[str] = field(default_factory=list)
    apply_error_count_delta: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    bad_dead_letters: list[str] = field(default_factory=list)
    outbox_rejected: list[str] = field(default_factory=list)
    # Re-sent by their producer / whose run was created only after that re-send: the most the
    # producers' journals can have closed of the pop-before-unacked window (README, Durability).
    resent: dict[str, int] = field(default_factory=dict)
    created_after_resend: dict[str, int] = field(default_factory=dict)

    @property
    def duplicated(self) -> int:
        return len(self.duplicated_runs) + len(self.duplicated_effects)

    @property
    def violations(self) -> list[str]:
        out = [f"lost: {x}" for x in self.lost] + [f"duplicated run: {x}" for x in self.duplicated_runs]
        out += [f"duplicated effect: {x}" for x in self.duplicated_effects]
        out += [f"missing effect: {x}" for x in self.missing_effects] + [f"stuck: {x}" for x in self.stuck]
        out += [f"apply error: {x}" for x in self.apply_errors] + [f"dead letter: {x}" for x in self.bad_dead_letters]
        out += [f"outbox rejected: {x}" for x in self.outbox_rejected]
        if not self.identical:
            out.append("verify: regions differ")
        return out

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"duplicated": self.duplicated, "violations": self.violations, "ok": self.ok}


def _executions(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ledger lines of one (run, step, index) as executions: a start and its effect, if any,
    matched by region and attempt, in start order."""
    out: list[dict[str, Any]] = []
    open_: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for e in sorted(entries, key=lambda e: e["t"]):
        slot = (e["region"], e["attempt"])
        if e["phase"] == "start":
            ex = {"region": e["region"], "attempt": e["attempt"], "start": e["t"], "effect": None}
            out.append(ex)
            open_[slot].append(ex)
        elif open_[slot]:
            open_[slot].pop(0)["effect"] = e["t"]
        else:  # an effect whose start line is missing: keep it as its own execution
            out.append({"region": e["region"], "attempt": e["attempt"], "start": e["t"], "effect": e["t"]})
    return sorted(out, key=lambda x: x["start"])


def attribute(ex: dict[str, Any], next_start: float, faults: Iterable[Fault]) -> Fault | None:
    """The injected fault that explains why execution ``ex`` was superseded, if any: one that hit
    its region while it ran (started before the region recovered, and either never took effect or
    took effect shortly before the fault began), and began before the next execution started."""
    for f in faults:
        if f.kind not in RERUN_KINDS or not f.hits(ex["region"]) or next_start < f.t0 or ex["start"] > f.t1:
            continue
        if ex["effect"] is None or ex["effect"] >= f.t0 - EFFECT_SLACK_S:
            return f
    return None


def evaluate(h: History) -> Verdict:
    v = Verdict(submissions=dict(Counter(a.path for a in h.acks)), faults=dict(Counter(f.kind for f in h.faults)),
                runs=0, step_effects=0, identical=h.identical, apply_errors=list(h.apply_errors),
                apply_error_count_delta=dict(h.apply_error_count_delta))
    # Runs: per (tenant, key), the run ids and statuses every region holds.
    by_key: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for region, rows in h.runs.items():
        for tenant, key, run_id, status in rows:
            by_key[(tenant, key)][region].append((run_id, status))
    v.runs = len(by_key)
    for (tenant, key), per_region in sorted(by_key.items()):
        ids = {rid for rows in per_region.values() for rid, _ in rows}
        if len(ids) > 1 or any(len(rows) > 1 for rows in per_region.values()):
            v.duplicated_runs.append(f"{tenant}/{key}: {sorted(ids)} ({ {r: len(x) for r, x in per_region.items()} })")
        not_done = {r: [s for _, s in rows] for r, rows in per_region.items() if any(s != "succeeded" for _, s in rows)}
        absent = [r for r in h.regions if r not in per_region]
        if not_done or absent:
            v.stuck.append(f"{tenant}/{key}: {not_done or ''}{' absent in ' + ','.join(absent) if absent else ''}")
    for a in h.acks:
        held_in = [r for r in h.regions if (a.tenant, a.key) in by_key and r in by_key[(a.tenant, a.key)]]
        if not held_in:
            v.lost.append(f"{a.path} via {a.via} at {a.at:.3f}: tenant {a.tenant} key {a.key}")
    # Effects: exactly one per (run, step, index); superseded executions must each be a fault's.
    by_task: dict[tuple[str, str, int | None], list[dict[str, Any]]] = defaultdict(list)
    for e in h.ledger:
        by_task[(e["run"], e["step"], e["idx"])].append(e)
    for task in sorted(h.tasks, key=str):
        if not any(e["phase"] == "effect" for e in by_task.get(task, [])):
            v.missing_effects.append(f"{task}")
    for task, entries in sorted(by_task.items(), key=lambda kv: str(kv[0])):
        execs = _executions(entries)
        effects = [x for x in execs if x["effect"] is not None]
        v.step_effects += len(effects) > 0
        unexplained = []
        for i, ex in enumerate(execs[:-1]):
            fault = attribute(ex, execs[i + 1]["start"], h.faults)
            if fault is None:
                if ex["effect"] is not None:
                    unexplained.append(ex)
            else:
                v.crash_reruns[fault.kind] = v.crash_reruns.get(fault.kind, 0) + 1
        if len(effects) > 1 and unexplained:
            v.duplicated_effects.append(
                f"{task}: {len(effects)} effects, unexplained: "
                + "; ".join(f"{x['region']} attempt {x['attempt']} start {x['start']:.3f} effect {x['effect']:.3f}"
                            for x in unexplained))
    v.dead_letters = len(h.dead_letters)
    for region, sid, reason in h.dead_letters:
        if not (reason or "").strip():
            v.bad_dead_letters.append(f"{region}: submission {sid} without a reason")
        elif sid in h.valid_submission_ids:
            v.bad_dead_letters.append(f"{region}: valid submission {sid} dead-lettered: {reason}")
    v.outbox_rejected = [f"{r}: {sid}: {why}" for r, sid, why in h.outbox_rejected]
    for a in h.acks:
        if a.resent_at is not None:
            v.resent[a.path] = v.resent.get(a.path, 0) + 1
            if h.created.get((a.tenant, a.key), 0.0) > a.resent_at:
                v.created_after_resend[a.path] = v.created_after_resend.get(a.path, 0) + 1
    return v


def log_offsets(log_dir: Path) -> dict[str, int]:
    """Where each PostgreSQL log ends now: the campaign scans only what its load and faults wrote
    (pointing the links at the proxies restarts the apply workers once, at setup)."""
    return {log.name: log.stat().st_size for log in log_dir.glob("pg-*.log")}


def scan_pg_logs(log_dir: Path, offsets: dict[str, int] | None = None) -> list[str]:
    """ERROR lines of logical replication workers in every region's PostgreSQL log (from
    ``offsets``), lost connections aside (a cut, a killed peer and a restart produce only those)."""
    found = []
    for log in sorted(log_dir.glob("pg-*.log")):
        with open(log, "rb") as fh:
            fh.seek((offsets or {}).get(log.name, 0))
            lines = fh.read().decode(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if "ERROR:" not in line or any(n in line for n in NETWORK_ERRORS):
                continue
            busy = ORIGIN_BUSY.search(line)
            if busy and worker_was_leaving(lines, busy.group(1)):
                continue
            context = " ".join(lines[i:i + 3])
            if "logical replication" in context or "rm_conflict" in context or "apply" in context:
                found.append(f"{log.name}: {context}")
    return found


def worker_was_leaving(lines: list[str], pid: str) -> bool:
    """Whether the log shows replication worker ``pid`` restarting on a parameter change or exiting."""
    return any((f"[{pid}] " in line and "will restart because of a parameter change" in line)
               or f'"logical replication worker" (PID {pid}) exited' in line for line in lines)


def apply_error_counts(urls: dict[str, str]) -> dict[str, int]:
    """subscription -> apply_error_count (reset by a crash restart: a delta is only a hint)."""
    out: dict[str, int] = {}
    for region, url in urls.items():
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1),
                               connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                for name, count in conn.execute(text(
                        "SELECT subname, apply_error_count FROM pg_stat_subscription_stats")):
                    out[f"{region}:{name}"] = int(count)
        finally:
            engine.dispose()
    return out


def read_ledger(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("ledger-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn line cannot be an effect anyone relies on
    return out


def gather(urls: dict[str, str], tenant_prefix: str) -> dict[str, Any]:
    """Every region's rows about the campaign's tenants, read with plain SQL."""
    runs: dict[str, list[tuple[str, str, str, str]]] = {}
    tasks: set[tuple[str, str, int | None]] = set()
    dead: list[tuple[str, str | None, str | None]] = []
    rejected: list[tuple[str, str, str | None]] = []
    created: dict[tuple[str, str], float] = {}
    like = tenant_prefix + "%"
    for region, url in urls.items():
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1),
                               connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT tenant_id, idempotency_key, id, status, extract(epoch FROM created_at) "
                    "FROM workflow_runs WHERE tenant_id LIKE :p"), {"p": like}).all()
                runs[region] = [(r[0], r[1], str(r[2]), r[3]) for r in rows]
                for r in rows:
                    created[(r[0], r[1])] = min(float(r[4]), created.get((r[0], r[1]), float("inf")))
                tasks |= {(str(r[0]), r[1], r[2]) for r in conn.execute(text(
                    "SELECT t.run_id, t.step_key, t.idx FROM step_tasks t JOIN workflow_runs w ON w.id = t.run_id "
                    "WHERE w.tenant_id LIKE :p AND t.status = 'succeeded'"), {"p": like})}
                dead += [(region, r[0], r[1]) for r in conn.execute(text(
                    "SELECT submission_id, reason FROM dead_letters"))]
                rejected += [(region, r[0], r[1]) for r in conn.execute(text(
                    "SELECT submission_id, rejection FROM outbox WHERE rejected_at IS NOT NULL"))]
        finally:
            engine.dispose()
    return {"runs": runs, "tasks": tasks, "dead_letters": dead, "outbox_rejected": rejected, "created": created}


def print_table(v: Verdict, seed: int) -> None:
    def row(name: str, value: Any) -> None:
        print(f"  {name:<34} {value}")

    print(f"\nfault campaign, seed {seed}")
    row("submissions acknowledged", sum(v.submissions.values()))
    for path, n in sorted(v.submissions.items()):
        row(f"  {path}", n)
    row("faults injected", sum(v.faults.values()))
    for kind, n in sorted(v.faults.items()):
        row(f"  {kind}", n)
    row("runs (distinct tenant/key)", v.runs)
    row("step tasks with an effect", v.step_effects)
    row("lost", len(v.lost))
    row("duplicated (runs + effects)", v.duplicated)
    row("missing effects", len(v.missing_effects))
    row("crash re-runs", sum(v.crash_reruns.values()))
    for kind, n in sorted(v.crash_reruns.items()):
        row(f"  after {kind}", n)
    row("stuck", len(v.stuck))
    row("verify", "identical" if v.identical else "DIFFERENT")
    row("apply errors (not network)", len(v.apply_errors))
    row("dead letters (bad)", f"{v.dead_letters} ({len(v.bad_dead_letters)})")
    row("outbox entries rejected", len(v.outbox_rejected))
    row("re-sent by producers", f"{sum(v.resent.values())} {v.resent}")
    row("  run created after the re-send", f"{sum(v.created_after_resend.values())} {v.created_after_resend}")
    for line in v.violations[:30]:
        print(f"  VIOLATION {line}")
