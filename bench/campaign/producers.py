"""The campaign's load, on every region until ``stop``: three kinds of producer, each closing the
pop-before-unacked gap the way the durability contract asks of producers.

- ``client(path)``: the Python client, ``path`` "direct" (to the tenant's home) or "forwarded" (to
  another region), journaled (``client.Journal``) and confirmed every 10 s (``client.confirm``);
- ``batch``: ``submit-batch`` files (``regionmesh.batch.submit_batch``); the re-sender sends a
  missing line again with the client;
- ``raw``: a producer in another language, protocol-2 JSON straight onto the submit queue with
  kombu; the re-sender publishes the message again.

Every publish carries a submission id of its own, a re-send too (same key, so the same run), and
every acknowledged one is recorded with what was submitted (workflow and input), so the checker
accounts for each by its id and computes the expected work itself.

A submission counts as acknowledged once its publish returned (``Record.add``); a publish that
raised is counted as refused. ``path`` is always the producer path an ``Ack`` names.

With ``Plan.resend`` off (``--no-resend``) no producer publishes anything again: the client
producers still journal but never confirm, and the campaign starts no re-sender (resend.py), so
what the product loses shows as lost by its submission id.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

from kombu import Connection  # type: ignore[attr-defined]

from bench.campaign.mesh import CampaignMesh
from bench.campaign.record import RESEND_AFTER_S, Plan, Record, Sent
from bench.campaign_checker import Ack
from regionmesh.batch import submit_batch
from regionmesh.broker import broker_options
from regionmesh.client import Journal, confirm, home_region, submit
from regionmesh.names import SUBMIT_TASK, submit_queue
from regionmesh.routing.hashing import home_by_hash

CLIENT_PATHS = ("direct", "forwarded")
CONFIRM_EVERY_S = 10.0  # how often a client producer confirms its journal (and sends the missing again)


def workload(rng: random.Random, marker: str | None = None) -> tuple[str, dict[str, Any]]:
    """A workflow and its input: mostly a four-step diamond, sometimes a map; short steps, and now
    and then a long one, likely in flight when a fault lands. ``marker``: a zoned tenant's input
    carries it (and so do the steps' outputs, which echo the input)."""
    workflow, data = _workload(rng)
    if marker is not None:
        data["note"] = f"{marker}{rng.randrange(10**6)}"
    return workflow, data


def _workload(rng: random.Random) -> tuple[str, dict[str, Any]]:
    steps = "abcd" if rng.random() < 0.8 else "amd"
    sleep = {s: round(rng.uniform(0.01, 0.2), 3) for s in steps}
    if rng.random() < 0.15:  # a long step, likely in flight when a fault lands
        sleep[rng.choice(steps)] = round(rng.uniform(1.0, 3.0), 2)
    if steps == "amd":
        return "t_ledger_map", {"sleep": sleep, "items": rng.randint(2, 4)}
    return "t_ledger", {"sleep": sleep}


class Producers:
    def __init__(self, plan: Plan, mesh: CampaignMesh, record: Record, stop: threading.Event) -> None:
        self.plan = plan
        self.mesh = mesh
        self.config = mesh.config
        self.record = record
        self.stop = stop
        self.journals = {path: Journal(mesh.root / f"journal-{path}.jsonl") for path in CLIENT_PATHS}
        self.counter = 0
        self.counter_lock = threading.Lock()

    def threads(self) -> list[threading.Thread]:
        """One thread per producer, each with its own seeded generator."""
        seed = self.plan.seed
        out = [threading.Thread(target=self.client, args=(p, random.Random(f"{seed}-{p}")), name=p)
               for p in CLIENT_PATHS]
        out += [threading.Thread(target=self.batch, args=(random.Random(f"{seed}-batch"),)),
                threading.Thread(target=self.raw, args=(random.Random(f"{seed}-raw"),))]
        return out

    def _next(self, path: str) -> str:
        """A new idempotency key, unique in the campaign, naming the path that sent it."""
        with self.counter_lock:
            self.counter += 1
            return f"{path}-{self.plan.seed}-{self.counter}"

    def _home(self, tenant: str, rng: random.Random) -> str:
        return home_region(self.config, tenant, rng.choice(self.mesh.alive())) or home_by_hash(tenant, self.mesh.regions)

    def client(self, path: str, rng: random.Random) -> None:
        """direct (to the tenant's home) or forwarded (to another region), journaled."""
        journal = self.journals[path]
        next_confirm = time.monotonic() + CONFIRM_EVERY_S
        while not self.stop.is_set():
            tenant = rng.choice(self.plan.tenants)
            home = self._home(tenant, rng)
            via = home if path == "direct" else rng.choice([r for r in self.mesh.alive() if r != home] or self.mesh.regions)
            workflow, data = workload(rng, self.plan.marker(tenant))
            key = self._next(path)
            try:
                submit(tenant, workflow, data, key, region=via, config=self.config, submission_id=key,
                       resolve_home=False, journal=journal)
                self.record.add(Sent(Ack(path, tenant, key, via, time.time(), sid=key, workflow=workflow, input=data),
                                     key, None, time.time()))
            except Exception:  # not acknowledged: the producer was told it failed
                self.record.stats.refused[path] += 1
            if self.plan.resend and time.monotonic() > next_confirm:
                self.record.stats.resent[path] += self._confirm(journal)
                next_confirm = time.monotonic() + CONFIRM_EVERY_S
            self.stop.wait(rng.uniform(0.2, 0.8))

    def _confirm(self, journal: Journal) -> int:
        try:
            done = confirm(journal, self.config, resend_after_s=RESEND_AFTER_S, max_sends=50)
        except Exception as exc:  # a region away mid-pass: next pass
            self.record.note(f"confirm: {type(exc).__name__}")
            return 0
        if done.resent_as:
            with self.record.sent_lock:
                firsts = {s.sid: s.ack for s in self.record.sent if s.sid in dict(done.resent_as)}
            for first, again in done.resent_as:
                if first in firsts:
                    self.record.resent(firsts[first], again)
        return done.resent

    def confirm_journals(self) -> None:
        """One confirm pass over every journal (the drain keeps the client producers' promise);
        nothing when the campaign runs with re-sends off (a confirm pass sends the missing again)."""
        if not self.plan.resend:
            return
        for path, journal in self.journals.items():
            self.record.stats.resent[path] += self._confirm(journal)

    def journal_resends(self) -> dict[str, float]:
        """submission id -> when its journal first sent it again (the second 'sent' line)."""
        out: dict[str, float] = {}
        seen: set[str] = set()
        for journal in self.journals.values():
            if not journal.path.exists():
                continue
            for line in journal.path.read_text().splitlines():
                entry = json.loads(line)
                if entry["op"] != "sent":
                    continue
                if entry["sid"] in seen:
                    out.setdefault(entry["sid"], entry["at"])
                seen.add(entry["sid"])
        return out

    def batch(self, rng: random.Random) -> None:
        n_file = 0
        while not self.stop.wait(rng.uniform(8, 16)):
            n_file += 1
            lines, tenants = [], []
            for _ in range(rng.randint(10, 25)):
                tenant = rng.choice(self.plan.tenants)
                workflow, data = workload(rng, self.plan.marker(tenant))
                doc: dict[str, Any] = {"tenant_id": tenant, "workflow": workflow, "input": data}
                if rng.random() < 0.7:
                    doc["idempotency_key"] = self._next("batch")
                lines.append(json.dumps(doc))
                tenants.append(tenant)
            batch_file = self.mesh.root / f"batch-{n_file}.jsonl"
            batch_file.write_text("\n".join(lines) + "\n")
            via = rng.choice(self.mesh.alive())
            result = submit_batch(self.config, batch_file, region=via)
            failed = {n for n, _ in result.failures}
            self.record.stats.refused["batch"] += len(failed)
            ok_lines = [i for i in range(len(lines)) if i + 1 not in failed]
            for i, receipt in zip(ok_lines, result.submitted, strict=True):
                doc = json.loads(lines[i])

                def again(n: int, doc: dict[str, Any] = doc, key: str = receipt.idempotency_key,
                          sid: str = receipt.submission_id, via: str = via) -> str:
                    # The job sends the missing line again itself, under a fresh id, same key.
                    fresh = f"{sid[:100]}.r{n}"
                    submit(doc["tenant_id"], doc["workflow"], doc["input"], key, region=via, config=self.config,
                           submission_id=fresh, resolve_home=False)
                    return fresh

                self.record.add(Sent(Ack("batch", tenants[i], receipt.idempotency_key, via, time.time(),
                                         sid=receipt.submission_id, workflow=doc["workflow"], input=doc["input"]),
                                     receipt.submission_id, again, time.time()))

    def raw(self, rng: random.Random) -> None:
        """A producer in another language: a protocol-2 JSON message straight onto the queue."""
        conns: dict[str, Connection] = {}
        try:
            while not self.stop.is_set():
                tenant = rng.choice(self.plan.tenants)
                via = rng.choice(self.mesh.alive())
                workflow, data = workload(rng, self.plan.marker(tenant))
                key = self._next("raw")
                sid = str(uuid.uuid4())
                kwargs = {"v": 1, "tenant_id": tenant, "workflow": workflow, "input": data,
                          "idempotency_key": key, "submission_id": sid, "submitted_region": via}

                def publish(n: int = 0, via: str = via, kwargs: dict[str, Any] = kwargs) -> str:
                    """Publish the message (the n-th re-send: under a fresh submission id); returns its id."""
                    sid = kwargs["submission_id"] if n == 0 else f"{kwargs['submission_id']}.r{n}"
                    body = json.dumps([[], kwargs | {"submission_id": sid},
                                       {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
                    headers = {"lang": "go", "task": SUBMIT_TASK, "id": sid, "root_id": sid, "parent_id": None,
                               "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
                               "argsrepr": "()",
                               "kwargsrepr": f"{{'tenant_id': '{kwargs['tenant_id']}', 'workflow': '{kwargs['workflow']}'}}"}
                    conn = conns.get(via)
                    if conn is None:
                        conn = conns[via] = Connection(self.config.regions[via].broker_url,
                                                       transport_options=broker_options(self.config.settings),
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
                    return str(sid)

                try:
                    publish()
                    self.record.add(Sent(Ack("raw", tenant, key, via, time.time(), sid=sid, workflow=workflow, input=data),
                                         sid, publish, time.time()))
                except Exception:
                    self.record.stats.refused["raw"] += 1
                self.stop.wait(rng.uniform(0.3, 1.0))
        finally:
            for c in conns.values():
                c.release()
