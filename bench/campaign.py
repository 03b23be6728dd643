"""The fault campaign (issue 12): a three-region mesh under mixed load while a seeded schedule
injects faults, then an independent checker (bench/campaign_checker.py) decides.

    python -m bench.campaign --seed S --minutes M [--regions 3] [--drain 300] [--keep]

Load, for M minutes, on every region (one worker ×2 each; short timers as in the partition test):
direct submissions to the tenant's home, forwarded ones sent to another region, ``submit-batch``
files (regionmesh.batch.submit_batch) and a non-Python producer that publishes raw protocol-2 JSON
messages with kombu (task ``regionmesh.submit``, the README's wire kwargs). A submission counts as
acknowledged once its publish returned; every producer closes the documented pop-before-unacked
gap as the README's durability table asks of producers (direct/forwarded: ``client.Journal`` and
``confirm``; batch: re-running the missing lines; raw: publishing the same message again), and
each re-send is counted.

Faults, one at a time (random.Random(seed)), each after the mesh is healthy again (every region
holds its lease): pool-process SIGKILL (preferably one running a step), worker main-process
SIGKILL (restarted), Redis SIGKILL and restart, PostgreSQL SIGKILL (postmaster and backends) and
restart, a replication cut for 10–60 s through TCP proxies (one region cut off both ways, deaf,
unheard, or one pair of regions), a broker link cut for 10–60 s (forwarders reach other regions'
Redis through proxies), a region SIGKILLed, failed over once its lease expired, brought back
and restored, and a graceful tenant move. Step handlers append to an external effect ledger.

After M minutes the producers stop, the mesh drains (everything must finish within ``--drain``
seconds), and the checker prints a table and writes bench/results/campaign-<seed>.json; exit 1
on any violation, printing the seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
from kombu import Connection  # type: ignore[attr-defined]
from sqlalchemy import Engine, text

from bench.campaign_checker import (
    Ack,
    Fault,
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
from bench.common import RESULTS, ROOT, scratch_mesh, write_json
from regionmesh.batch import submit_batch
from regionmesh.broker import broker_options
from regionmesh.client import Journal, confirm, home_region, submit
from regionmesh.config import MeshConfig, load_config
from regionmesh.models import replication as repl
from regionmesh.models.engine import make_engine
from regionmesh.names import SUBMIT_TASK, submit_queue, subscription_name
from regionmesh.ops.devmesh import DevMesh
from regionmesh.ops.failover import FailoverRefused, failover, lease_status, restore, set_intent
from regionmesh.replication.setup import conninfo
from regionmesh.replication.verify import verify
from regionmesh.routing.hashing import home_by_hash
from regionmesh.testing.proxy import Proxy

ALL_REGIONS = ["us-east", "eu-west", "ap-south", "sa-east", "af-south"]
LEASE_S, DRIFT, MARGIN_S = 4.0, 0.01, 1.0
PROMISE_S = LEASE_S * (1 + DRIFT) + MARGIN_S
RESEND_AFTER_S = 30.0
KINDS = ["pool_kill", "worker_kill", "redis_kill", "pg_kill", "repl_cut", "broker_cut", "region_failover", "move"]
SETTINGS_ENV = {"REGIONMESH_RECONCILE_INTERVAL_S": "0.3", "REGIONMESH_LEASE_S": str(LEASE_S),
                "REGIONMESH_CLOCK_DRIFT": str(DRIFT), "REGIONMESH_LEASE_MARGIN_S": str(MARGIN_S),
                "REGIONMESH_FORWARD_CONFIRM_S": "5", "REGIONMESH_REQUEUE_AFTER_S": "5"}


def _port(conninfo_or_url: str) -> int:
    if "port=" in conninfo_or_url:
        return int(conninfo_or_url.split("port=")[1].split()[0])
    return int(conninfo_or_url.rsplit(":", 1)[1].split("/")[0])


@dataclass
class Sent:
    """A producer's record of one acknowledged submission (and how to send it again)."""

    ack: Ack
    sid: str
    resend: Any  # a callable publishing the same submission again, or None (the journal does it)
    last_sent: float
    sends: int = 1
    held: bool = False
    first_resend: float | None = None


@dataclass
class Stats:
    refused: Counter[str] = field(default_factory=Counter)  # publishes that raised (not acknowledged)
    resent: Counter[str] = field(default_factory=Counter)


class Campaign:
    def __init__(self, seed: int, minutes: float, n_regions: int = 3, log: Any = print) -> None:
        self.seed, self.minutes, self.log = seed, minutes, log
        self.rng = random.Random(seed)
        self.regions = ALL_REGIONS[:n_regions]
        self.dev: DevMesh = scratch_mesh()
        self.root = self.dev.root
        self.ledger_dir = self.root / "ledger"
        self.prefix = f"cmp{seed}-"
        self.tenants = [f"{self.prefix}{i}" for i in range(8 * n_regions)]
        self.faults: list[Fault] = []
        self.notes: list[str] = []
        self.sent: list[Sent] = []
        self.sent_lock = threading.Lock()
        self.stats = Stats()
        self.down: set[str] = set()  # regions whose broker a producer should not try now
        self.stop = threading.Event()
        self.repl_proxies: dict[tuple[str, str], Proxy] = {}  # (subscriber, publisher)
        self.broker_proxies: dict[tuple[str, str], Proxy] = {}  # (from region, to region's broker)
        self.engines: dict[str, Engine] = {}
        self.config: MeshConfig | None = None
        self.counter = 0
        self.counter_lock = threading.Lock()

    # -- the mesh --------------------------------------------------------------------------------
    def worker_env(self, region: str) -> dict[str, str]:
        return SETTINGS_ENV | {"REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows",
                               "PYTHONPATH": str(ROOT), "RM_TEST_LEDGER": str(self.ledger_dir),
                               "REGIONMESH_CONFIG": str(self.root / f"campaign-{region}.toml")}

    def up(self) -> None:
        os.environ.update(SETTINGS_ENV)  # the operator side (failover, restore) runs the same lease settings
        self.ledger_dir.mkdir()
        os.chmod(self.ledger_dir, 0o777)
        self.config = self.dev.up(self.regions, workers=0)
        self.engines = {r: make_engine(self.config.regions[r].database_url, region=r) for r in self.regions}
        for sub in self.regions:
            for pub in self.regions:
                if sub == pub:
                    continue
                port = _port(self.config.regions[pub].peer_conninfo)
                proxy = self.repl_proxies[(sub, pub)] = Proxy(port)
                info = conninfo(self.config, pub, sub).replace(f"port={port}", f"port={proxy.port}")
                repl.set_subscription_connection(self.engines[sub], subscription_name(sub, pub), info)
                self.broker_proxies[(sub, pub)] = Proxy(_port(self.config.regions[pub].broker_url))
        self._write_worker_mesh_files()
        for r in self.regions:
            self.dev.start_worker(r, extra_env=self.worker_env(r))
        self.wait_healthy(90)

    def _write_worker_mesh_files(self) -> None:
        """mesh.toml as each region's workers see it: peers' brokers through this region's proxies."""
        lines = self.dev.mesh_file.read_text().splitlines()
        for me in self.regions:
            out, section = [], None
            for line in lines:
                if line.startswith("[regions."):
                    section = line[len("[regions."):-1]
                if section and section != me and line.startswith("broker_url"):
                    port = _port(line.split('"')[1])
                    line = line.replace(f":{port}/", f":{self.broker_proxies[(me, section)].port}/")
                out.append(line)
            (self.root / f"campaign-{me}.toml").write_text("\n".join(out) + "\n")

    def restart_servers(self) -> None:
        """Start whatever server is down (PostgreSQL, Redis) without touching the subscriptions
        (``up``'s migrate step would point them back at the direct addresses)."""
        assert self.config is not None
        self.dev.up(migrate=False)
        config = load_config(str(self.dev.mesh_file))
        for (_sub, pub), proxy in self.repl_proxies.items():
            proxy.target = (proxy.target[0], _port(config.regions[pub].peer_conninfo))
        for (_frm, to), proxy in self.broker_proxies.items():
            proxy.target = (proxy.target[0], _port(config.regions[to].broker_url))
        for e in self.engines.values():
            e.dispose()

    def leases(self) -> dict[str, bool]:
        assert self.config is not None
        return {s.region: s.held for s in lease_status(self.config)}

    def wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(self.leases().values()) and all(self.dev.workers(r) for r in self.regions):
                    return True
            except Exception as exc:  # a region answering slowly: ask again
                self.log(f"  (lease status: {type(exc).__name__})")
            time.sleep(0.5)
        self.notes.append(f"{time.time():.1f}: mesh not healthy after {timeout:.0f}s: {self.leases()}")
        return False

    def close(self, keep: bool) -> None:
        for p in [*self.repl_proxies.values(), *self.broker_proxies.values()]:
            p.close()
        for e in self.engines.values():
            e.dispose()
        self.dev.down(purge=not keep)  # stop every process either way; keep the folder on request
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- producers ---------------------------------------------------------------------------------
    def _next(self, path: str) -> str:
        with self.counter_lock:
            self.counter += 1
            return f"{path}-{self.seed}-{self.counter}"

    def _workload(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        steps = "abcd" if rng.random() < 0.8 else "amd"
        sleep = {s: round(rng.uniform(0.01, 0.2), 3) for s in steps}
        if rng.random() < 0.15:  # a long step, likely in flight when a fault lands
            sleep[rng.choice(steps)] = round(rng.uniform(1.0, 3.0), 2)
        if steps == "amd":
            return "t_ledger_map", {"sleep": sleep, "items": rng.randint(2, 4)}
        return "t_ledger", {"sleep": sleep}

    def _alive(self) -> list[str]:
        return [r for r in self.regions if r not in self.down] or list(self.regions)

    def _home(self, tenant: str, rng: random.Random) -> str:
        assert self.config is not None
        return home_region(self.config, tenant, rng.choice(self._alive())) or home_by_hash(tenant, self.regions)

    def _record(self, sent: Sent) -> None:
        with self.sent_lock:
            self.sent.append(sent)

    def produce_client(self, path: str, rng: random.Random) -> None:
        """direct (to the tenant's home) or forwarded (to another region), journaled."""
        assert self.config is not None
        journal = self._journals[path] = Journal(self.root / f"journal-{path}.jsonl")
        next_confirm = time.monotonic() + 10
        while not self.stop.is_set():
            tenant = rng.choice(self.tenants)
            home = self._home(tenant, rng)
            via = home if path == "direct" else rng.choice([r for r in self._alive() if r != home] or self.regions)
            workflow, data = self._workload(rng)
            key = self._next(path)
            try:
                submit(tenant, workflow, data, key, region=via, config=self.config, submission_id=key,
                       resolve_home=False, journal=journal)
                self._record(Sent(Ack(path, tenant, key, via, time.time()), key, None, time.time()))
            except Exception:  # not acknowledged: the producer was told it failed
                self.stats.refused[path] += 1
            if time.monotonic() > next_confirm:
                self.stats.resent[path] += self._confirm(journal)
                next_confirm = time.monotonic() + 10
            self.stop.wait(rng.uniform(0.2, 0.8))

    def _confirm(self, journal: Journal) -> int:
        assert self.config is not None
        try:
            return confirm(journal, self.config, resend_after_s=RESEND_AFTER_S, max_sends=50).resent
        except Exception as exc:  # a region away mid-pass: next pass
            self.notes.append(f"{time.time():.1f}: confirm: {type(exc).__name__}")
            return 0

    def produce_batch(self, rng: random.Random) -> None:
        assert self.config is not None
        n_file = 0
        while not self.stop.wait(rng.uniform(8, 16)):
            n_file += 1
            lines, tenants = [], []
            for _ in range(rng.randint(10, 25)):
                tenant = rng.choice(self.tenants)
                workflow, data = self._workload(rng)
                doc: dict[str, Any] = {"tenant_id": tenant, "workflow": workflow, "input": data}
                if rng.random() < 0.7:
                    doc["idempotency_key"] = self._next("batch")
                lines.append(json.dumps(doc))
                tenants.append(tenant)
            path = self.root / f"batch-{n_file}.jsonl"
            path.write_text("\n".join(lines) + "\n")
            via = rng.choice(self._alive())
            result = submit_batch(self.config, path, region=via)
            failed = {n for n, _ in result.failures}
            self.stats.refused["batch"] += len(failed)
            ok_lines = [i for i in range(len(lines)) if i + 1 not in failed]
            for i, receipt in zip(ok_lines, result.submitted, strict=True):
                single = {**json.loads(lines[i]), "idempotency_key": receipt.idempotency_key}

                def again(doc: dict[str, Any] = single, via: str = via) -> None:
                    one = self.root / f"batch-resend-{uuid.uuid4().hex[:8]}.jsonl"
                    one.write_text(json.dumps(doc) + "\n")
                    res = submit_batch(self.config, one, region=via)  # type: ignore[arg-type]
                    if res.failures:
                        raise RuntimeError(res.failures[0][1])

                self._record(Sent(Ack("batch", tenants[i], receipt.idempotency_key, via, time.time()),
                                  receipt.submission_id, again, time.time()))

    def produce_raw(self, rng: random.Random) -> None:
        """A producer in another language: a protocol-2 JSON message straight onto the queue."""
        assert self.config is not None
        conns: dict[str, Connection] = {}
        try:
            while not self.stop.is_set():
                tenant = rng.choice(self.tenants)
                via = rng.choice(self._alive())
                workflow, data = self._workload(rng)
                key = self._next("raw")
                sid = str(uuid.uuid4())
                kwargs = {"v": 1, "tenant_id": tenant, "workflow": workflow, "input": data,
                          "idempotency_key": key, "submission_id": sid, "submitted_region": via}
                body = json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
                headers = {"lang": "go", "task": SUBMIT_TASK, "id": sid, "root_id": sid, "parent_id": None,
                           "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
                           "argsrepr": "()", "kwargsrepr": f"{{'tenant_id': '{tenant}', 'workflow': '{workflow}'}}"}

                def publish(via: str = via, body: str = body, headers: dict[str, Any] = headers) -> None:
                    conn = conns.get(via)
                    if conn is None:
                        conn = conns[via] = Connection(self.config.regions[via].broker_url,  # type: ignore[union-attr]
                                                       transport_options=broker_options(self.config.settings),  # type: ignore[union-attr]
                                                       connect_timeout=5)
                    try:
                        conn.Producer().publish(body.encode(), routing_key=submit_queue(via),
                                                content_type="application/json", content_encoding="utf-8",
                                                headers=headers, declare=[], retry=True,
                                                retry_policy={"max_retries": 2, "interval_start": 0.2,
                                                              "interval_step": 0.5})
                    except Exception:
                        conns.pop(via, None)
                        conn.release()
                        raise

                try:
                    publish()
                    self._record(Sent(Ack("raw", tenant, key, via, time.time()), sid, publish, time.time()))
                except Exception:
                    self.stats.refused["raw"] += 1
                self.stop.wait(rng.uniform(0.3, 1.0))
        finally:
            for c in conns.values():
                c.release()

    def resend_missing(self) -> None:
        """The batch and raw producers' gap-closer: what the region it was sent to does not hold
        (no run, no dead letter) after RESEND_AFTER_S is sent again, same key and submission id."""
        now = time.time()
        with self.sent_lock:
            todo = [s for s in self.sent if s.resend is not None and not s.held and now - s.last_sent > RESEND_AFTER_S]
        by_via: dict[str, list[Sent]] = {}
        for s in todo:
            by_via.setdefault(s.ack.via, []).append(s)
        for via, items in by_via.items():
            try:
                with self.engines[via].connect() as conn:
                    held = {(r[0], r[1]) for r in conn.execute(text(
                        "SELECT tenant_id, idempotency_key FROM workflow_runs WHERE idempotency_key = ANY(:k)"),
                        {"k": [s.ack.key for s in items]})}
                    dead = set(conn.execute(text("SELECT submission_id FROM dead_letters WHERE submission_id = ANY(:s)"),
                                            {"s": [s.sid for s in items]}).scalars())
            except Exception:  # the region is away: its submissions wait with it
                continue
            for s in items:
                if (s.ack.tenant, s.ack.key) in held or s.sid in dead:
                    s.held = True
                    continue
                try:
                    s.first_resend = s.first_resend or time.time()
                    s.resend()
                    s.sends += 1
                    s.last_sent = time.time()
                    self.stats.resent[s.ack.path] += 1
                except Exception as exc:  # the broker is away: next pass
                    self.notes.append(f"{time.time():.1f}: re-send to {via}: {type(exc).__name__}")

    # -- faults ----------------------------------------------------------------------------------
    def _fault(self, kind: str, region: str | None, t0: float, t1: float, detail: str = "",
               regions: tuple[str, ...] = ()) -> None:
        self.faults.append(Fault(kind, region, t0, t1, regions, detail))
        self.log(f"  [{t0 - self.started:6.1f}s] {kind} {region or ','.join(regions)} ({t1 - t0:.1f}s) {detail}")

    def pool_kill(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        pid = None
        with self.engines[region].connect() as conn:
            holder = conn.execute(text("SELECT worker FROM step_tasks WHERE status = 'running' AND executed_region = :r "
                                       "AND worker IS NOT NULL ORDER BY random() LIMIT 1"), {"r": region}).scalar()
        mains = {w["pid"] for w in self.dev.workers(region)}
        if holder and holder.rsplit(":", 1)[1].isdigit():
            pid = int(holder.rsplit(":", 1)[1])
            if pid in mains or not psutil.pid_exists(pid):
                pid = None
        what = "running a step"
        if pid is None:
            children = [c.pid for m in mains for c in psutil.Process(m).children()]
            pid, what = (rng.choice(children), "idle or between steps") if children else (None, "")
        if pid is None:
            self.notes.append(f"{time.time():.1f}: pool_kill: no pool process in {region}")
            return
        t0 = time.time()
        psutil.Process(pid).kill()
        self._fault("pool_kill", region, t0, t0 + 0.5, f"pid {pid} {what}")

    def worker_kill(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        worker = rng.choice(self.dev.workers(region))
        t0 = time.time()
        self.dev.stop_worker(region, worker["name"], kill=True)  # the main process first, then its pool
        self.stop.wait(rng.uniform(1, 5))
        self.dev.start_worker(region, extra_env=self.worker_env(region))
        self._fault("worker_kill", region, t0, time.time(), f"main pid {worker['pid']}, restarted")

    def redis_kill(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        pid = self.dev.state.load()["regions"][region]["redis"]["pid"]
        self.down.add(region)
        t0 = time.time()
        proc = psutil.Process(pid)
        proc.kill()
        proc.wait(10)
        self.stop.wait(rng.uniform(1, 5))
        self.restart_servers()
        self.down.discard(region)
        self._fault("redis_kill", region, t0, time.time(), f"pid {pid}, restarted")

    def pg_kill(self, rng: random.Random) -> None:
        region = rng.choice(self.regions)
        datadir = Path(self.dev.state.load()["regions"][region]["pg"]["datadir"])
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        t0 = time.time()
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        self.stop.wait(rng.uniform(2, 8))
        self.restart_servers()
        self.wait_healthy(60)
        self._fault("pg_kill", region, t0, time.time(), f"postmaster {pid} and {len(procs) - 1} backends, restarted")

    def repl_cut(self, rng: random.Random, seconds: float) -> None:
        region = rng.choice(self.regions)
        others = [r for r in self.regions if r != region]
        mode = rng.choice(["isolated", "deaf", "unheard", "pair"])
        links = {"isolated": [(region, o) for o in others] + [(o, region) for o in others],
                 "deaf": [(region, o) for o in others],  # it hears no one
                 "unheard": [(o, region) for o in others],  # no one hears it
                 "pair": [(region, others[0]), (others[0], region)]}[mode]
        t0 = time.time()
        for link in links:
            self.repl_proxies[link].sever()
        self.stop.wait(seconds)
        for link in links:
            self.repl_proxies[link].heal()
        self.wait_healthy(60)
        hit = (region, others[0]) if mode == "pair" else (region,)
        self._fault("repl_cut", None, t0, time.time(), f"{mode} {region}{'-' + others[0] if mode == 'pair' else ''} "
                    f"for {seconds:.0f}s", regions=hit)

    def broker_cut(self, rng: random.Random, seconds: float) -> None:
        region = rng.choice(self.regions)
        links = [(o, region) for o in self.regions if o != region]
        t0 = time.time()
        for link in links:
            self.broker_proxies[link].sever()
        self.stop.wait(seconds)
        for link in links:
            self.broker_proxies[link].heal()
        self._fault("broker_cut", region, t0, time.time(), f"forwarders cannot reach {region}'s Redis for {seconds:.0f}s")

    def region_failover(self, rng: random.Random) -> None:
        assert self.config is not None
        victim = rng.choice(self.regions)
        heir = rng.choice([r for r in self.regions if r != victim])
        self.down.add(victim)
        t0 = time.time()
        self.dev.kill_region(victim)
        report = None
        deadline = time.monotonic() + 120
        while report is None:
            try:
                report = failover(self.config, victim, heir, timeout_s=60)
            except FailoverRefused as exc:
                if time.monotonic() > deadline:
                    raise
                self.notes.append(f"{time.time():.1f}: failover refused, retrying: {exc}")
                time.sleep(1)
        failed_over = time.time()
        self.stop.wait(rng.uniform(5, 20))
        self.restart_servers()
        self.dev.start_worker(victim, extra_env=self.worker_env(victim))
        deadline = time.monotonic() + 180
        while True:
            try:
                restore(self.config, victim, timeout_s=20)
                break
            except Exception as exc:  # not caught up yet, or its database still starting
                if time.monotonic() > deadline:
                    raise RuntimeError(f"restore of {victim} kept failing: {exc}") from exc
                time.sleep(1)
        self.down.discard(victim)
        self.wait_healthy(60)
        self._fault("region_failover", victim, t0, time.time(),
                    f"killed, failed over to {heir} after {failed_over - t0:.1f}s ({report.runs_adopted} runs adopted), "
                    "back and restored")

    def move(self, rng: random.Random) -> None:
        assert self.config is not None
        tenant = rng.choice(self.tenants)
        to = rng.choice(self.regions)
        t0 = time.time()
        where, epoch = set_intent(self.config, tenant, to, "move", "campaign", rng.choice(self.regions))
        self._fault("move", None, t0, time.time(), f"{tenant} to {to} (written at {where}, epoch {epoch})")

    def schedule(self) -> None:
        """Seeded faults until the campaign's end: first every kind once in a seeded order (even if
        that takes longer than the campaign), then at random."""
        rng = random.Random(self.seed * 7919 + 1)
        order = KINDS[:]
        rng.shuffle(order)
        end = self.started + self.minutes * 60
        while (time.time() < end or order) and not self.stop.is_set():
            self.wait_healthy(90)
            kind = order.pop(0) if order else rng.choice(KINDS)
            left = end - time.time()
            # Cuts last 10-60 s; while kinds are still owed in a short campaign, they leave them ~15 s each.
            seconds = max(10.0, min(rng.uniform(10, 60), left - 15 * len(order)))
            try:
                if kind in ("repl_cut", "broker_cut"):
                    getattr(self, kind)(rng, seconds)
                else:
                    getattr(self, kind)(rng)
            except Exception as exc:  # a fault that could not be injected is reported, not hidden
                self.notes.append(f"{time.time():.1f}: {kind} failed to inject: {type(exc).__name__}: {exc}")
                self.log(f"  {kind} failed to inject: {type(exc).__name__}: {exc}")
            self.stop.wait(rng.uniform(2, 6))

    # -- the campaign ----------------------------------------------------------------------------
    def run(self, drain_s: float) -> tuple[Verdict, dict[str, Any]]:
        assert self.config is not None
        self._journals: dict[str, Journal] = {}
        errors_before = apply_error_counts({r: self.config.regions[r].database_url for r in self.regions})
        offsets = log_offsets(self.root / "logs")
        self.started = time.time()
        threads = [threading.Thread(target=self.produce_client, args=(p, random.Random(f"{self.seed}-{p}")), name=p)
                   for p in ("direct", "forwarded")]
        threads += [threading.Thread(target=self.produce_batch, args=(random.Random(f"{self.seed}-batch"),)),
                    threading.Thread(target=self.produce_raw, args=(random.Random(f"{self.seed}-raw"),))]
        for t in threads:
            t.start()
        resender = threading.Thread(target=self._resend_loop, daemon=True)
        resender.start()
        try:
            self.schedule()
        finally:
            self.stop.set()
            for t in threads:
                t.join(120)
        faults_end = time.time()
        self.log(f"  faults stopped after {faults_end - self.started:.0f}s; {len(self.sent)} submissions acknowledged; "
                 f"draining (at most {drain_s:.0f}s)")
        self.wait_healthy(120)
        drained = self.drain(drain_s)
        self.log(f"  drained: {drained} after {time.time() - faults_end:.0f}s")
        identical = False
        for _ in range(3):
            try:
                identical = verify(self.config, timeout=60).identical
            except Exception as exc:
                self.notes.append(f"verify: {type(exc).__name__}: {exc}")
            if identical:
                break
            time.sleep(5)
        urls = {r: self.config.regions[r].database_url for r in self.regions}
        got = gather(urls, self.prefix)
        resent_at = self._journal_resends()
        errors_after = apply_error_counts(urls)
        history = History(
            regions=self.regions, faults=self.faults, runs=got["runs"], created=got["created"],
            acks=[replace(s.ack, resent_at=s.first_resend or resent_at.get(s.sid)) for s in self.sent],
            tasks=got["tasks"], ledger=read_ledger(self.ledger_dir), identical=identical,
            apply_errors=scan_pg_logs(self.root / "logs", offsets),
            apply_error_count_delta={k: v - errors_before.get(k, 0) for k, v in errors_after.items()
                                     if v != errors_before.get(k, 0)},
            dead_letters=got["dead_letters"], valid_submission_ids={s.sid for s in self.sent},
            outbox_rejected=got["outbox_rejected"])
        verdict = evaluate(history)
        extra = {"seed": self.seed, "minutes": self.minutes, "regions": self.regions,
                 "faults_s": round(faults_end - self.started, 1), "drain_s": round(time.time() - faults_end, 1),
                 "drained": drained, "refused_publishes": dict(self.stats.refused),
                 "resent_by_producers": dict(self.stats.resent),
                 "faults": [asdict(f) | {"t0": round(f.t0 - self.started, 2), "t1": round(f.t1 - self.started, 2)}
                            for f in self.faults],
                 "notes": self.notes}
        return verdict, extra

    def _journal_resends(self) -> dict[str, float]:
        """submission id -> when its journal first sent it again (the second 'sent' line)."""
        out: dict[str, float] = {}
        seen: set[str] = set()
        for path in self._journals:
            for line in (self.root / f"journal-{path}.jsonl").read_text().splitlines():
                entry = json.loads(line)
                if entry["op"] != "sent":
                    continue
                if entry["sid"] in seen:
                    out.setdefault(entry["sid"], entry["at"])
                seen.add(entry["sid"])
        return out

    def _resend_loop(self) -> None:
        while True:
            time.sleep(5)
            try:
                self.resend_missing()
            except Exception as exc:
                self.notes.append(f"{time.time():.1f}: resend: {type(exc).__name__}: {exc}")

    def drain(self, timeout: float) -> bool:
        """Until every run of the campaign succeeded in every region and every acknowledged
        submission has its run (producers keep confirming meanwhile)."""
        deadline = time.monotonic() + timeout
        wanted = {(s.ack.tenant, s.ack.key) for s in self.sent}
        next_confirm = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() > next_confirm:
                for path, journal in self._journals.items():
                    self.stats.resent[path] += self._confirm(journal)
                next_confirm = time.monotonic() + 10
            try:
                done = True
                for r in self.regions:
                    with self.engines[r].connect() as conn:
                        rows = conn.execute(text("SELECT tenant_id, idempotency_key, status FROM workflow_runs "
                                                 "WHERE tenant_id LIKE :p"), {"p": self.prefix + "%"}).all()
                    have = {(t, k) for t, k, _ in rows}
                    if not wanted <= have or any(s != "succeeded" for _, _, s in rows):
                        done = False
                        break
                if done:
                    return True
            except Exception as exc:  # a region still coming back
                self.log(f"  (drain: {type(exc).__name__})")
            time.sleep(1)
        return False


def run_campaign(seed: int, minutes: float, *, n_regions: int = 3, drain_s: float = 300, keep: bool = False,
                 out: str | None = None, log: Any = print) -> tuple[Verdict, dict[str, Any]]:
    campaign = Campaign(seed, minutes, n_regions, log=log)
    log(f"fault campaign: seed {seed}, {minutes:g} min, regions {campaign.regions}, mesh in {campaign.root}")
    try:
        campaign.up()
        verdict, extra = campaign.run(drain_s)
    except BaseException:
        campaign.close(keep=True)
        log(f"campaign aborted (seed {seed}); mesh kept in {campaign.root}")
        raise
    # A failed campaign keeps its folder (logs, ledger, journals) for whoever looks into it.
    campaign.close(keep or not verdict.ok)
    extra["mesh_folder"] = str(campaign.root) if keep or not verdict.ok else None
    print_table(verdict, seed)
    print(f"  re-sent by producers: {extra['resent_by_producers']}; publishes refused: {extra['refused_publishes']}")
    write_json(out or str(RESULTS / f"campaign-{seed}.json"), extra | {"verdict": verdict.as_json()})
    return verdict, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--drain", type=float, default=300, help="seconds allowed for everything to finish")
    parser.add_argument("--keep", action="store_true", help="keep the mesh folder (logs, ledger) for inspection")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    verdict, _ = run_campaign(args.seed, args.minutes, n_regions=args.regions, drain_s=args.drain, keep=args.keep,
                              out=args.out)
    if not verdict.ok:
        print(f"campaign FAILED (seed {args.seed}): {len(verdict.violations)} violation(s)")
        sys.exit(1)
    print(f"campaign passed (seed {args.seed})")


if __name__ == "__main__":
    main()
