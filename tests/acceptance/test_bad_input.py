"""Malformed messages published straight to a region's Redis never stop its workers.

Real PostgreSQL, Redis and ``celery worker`` processes: raw kombu messages (bodies that are not
Celery triples, other content types, invalid UTF-8, protocol v1, NUL and lone surrogates in input,
a 2 MiB input, forged field types, an unknown workflow — also one forwarded from another region)
are mixed with valid submissions. Every worker process keeps its pid, every malformed message is a
dead letter with a reason and its task id, every valid submission completes, a forwarded rejection
comes back to the forwarder's outbox, and no input value reaches a worker log.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from regionmesh.broker import broker_options
from regionmesh.client import submit
from regionmesh.models import outbox
from regionmesh.models.engine import make_engine
from regionmesh.models.registry import registry_entry, set_home
from regionmesh.names import SUBMIT_TASK, submit_queue
from tests.conftest import Mesh
from tests.support.helpers import wait_until

HOME = "us-east"
FORWARDER = "eu-west"
TENANT = "badinput"
MARKER = f"INPUT-MARKER-{uuid.uuid4().hex[:12]}"
WORKER_ENV = {"REGIONMESH_RECONCILE_INTERVAL_S": "0.3", "REGIONMESH_FORWARD_CONFIRM_S": "5"}


class Side:
    def __init__(self, mesh: Mesh, region: str) -> None:
        self.region = region
        self.url = mesh.config.regions[region].broker_url
        self.settings = mesh.config.settings
        self.engine: Engine = make_engine(mesh.config.regions[region].database_url, region=region)

    def publish(self, body: bytes, *, content_type: str = "application/json", encoding: str = "utf-8",
                headers: dict[str, Any] | None = None) -> None:
        with Connection(self.url, transport_options=broker_options(self.settings)) as conn:
            conn.Producer().publish(body, routing_key=submit_queue(self.region), content_type=content_type,
                                    content_encoding=encoding, headers=headers or {}, declare=[])

    def dead_letters(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM dead_letters WHERE task_id IS NOT NULL")).mappings().all()
        return {r["task_id"]: dict(r) for r in rows}


@pytest.fixture(scope="module")
def sides(mesh: Mesh) -> Iterator[dict[str, Side]]:
    home, fwd = Side(mesh, HOME), Side(mesh, FORWARDER)
    set_home(home.engine, TENANT, HOME, "pin", "bad input tests")
    wait_until(lambda: (registry_entry(fwd.engine, TENANT) or (None, None))[1] == HOME, 30,
               f"the pin of {TENANT} to replicate to {FORWARDER}")
    started = []
    for side, concurrency in ((home, 2), (fwd, 1)):
        mesh.dev.start_worker(side.region, concurrency=concurrency, extra_env=WORKER_ENV)
        started.append(side.region)
    yield {HOME: home, FORWARDER: fwd}
    for region in started:
        for w in mesh.dev.workers(region):
            mesh.dev.stop_worker(region, w.name)
    home.engine.dispose()
    fwd.engine.dispose()


def worker_pids(mesh: Mesh, region: str) -> set[int]:
    pids: set[int] = set()
    for w in mesh.dev.workers(region):
        main = psutil.Process(w.pid)
        pids |= {main.pid, *(c.pid for c in main.children(recursive=True))}
    return pids


def v2(kwargs: Any, task_id: str, *, task: str = SUBMIT_TASK, args: Any = None) -> tuple[bytes, dict[str, Any]]:
    body = json.dumps([[] if args is None else args, kwargs, {"callbacks": None, "errbacks": None,
                                                               "chain": None, "chord": None}]).encode()
    return body, {"task": task, "id": task_id, "lang": "py", "argsrepr": "()", "kwargsrepr": "{}"}


def sub_kwargs(sid: str, data: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {"v": 1, "tenant_id": TENANT, "workflow": "onboard", "input": data, "idempotency_key": sid,
            "submission_id": sid} | change


def test_malformed_messages_are_dead_lettered_and_never_stop_a_worker(mesh: Mesh, sides: dict[str, Side]) -> None:
    home, fwd = sides[HOME], sides[FORWARDER]
    pids_before = worker_pids(mesh, HOME) | worker_pids(mesh, FORWARDER)
    assert len(pids_before) >= 5  # two mains, three pool processes

    bad: dict[str, tuple[bytes, str, str, dict[str, Any] | None]] = {}  # task id -> body, type, encoding, headers

    def plain(name: str, body: bytes, content_type: str = "application/json", encoding: str = "utf-8") -> None:
        tid = f"bad-{name}-{uuid.uuid4().hex[:8]}"
        bad[tid] = (body, content_type, encoding, {"task": SUBMIT_TASK, "id": tid, "lang": "py"})

    def kw(name: str, kwargs: Any, **opts: Any) -> None:
        tid = f"bad-{name}-{uuid.uuid4().hex[:8]}"
        body, hdrs = v2(kwargs, tid, **opts)
        bad[tid] = (body, "application/json", "utf-8", hdrs)

    plain("five", b"5")
    plain("null", b"null")
    plain("string", b'"x"')
    plain("utf8", b'[[], {"input": "' + MARKER.encode() + b'\xff\xfe"}, {}]')
    plain("data", json.dumps([[], sub_kwargs("d1", {"m": MARKER}), {}]).encode(), content_type="application/data")
    kw("nul", sub_kwargs("nul-1", {"m": MARKER + "\x00"}))
    kw("surrogate", sub_kwargs("sur-1", {"m": MARKER + "\ud800"}))
    kw("big", sub_kwargs("big-1", {"m": MARKER + "x" * (2 << 20)}))
    kw("hops", sub_kwargs("hops-1", {"m": MARKER}, hops="9"))
    kw("sid", sub_kwargs("sid-1", {"m": MARKER}, submission_id=12345))
    kw("workflow", sub_kwargs("wf-1", {"m": MARKER}, workflow="no_such_workflow"))
    kw("positional", sub_kwargs("pos-1", {"m": MARKER}), args=[MARKER])
    kw("tenant", sub_kwargs("ten-1", {"m": MARKER}, tenant_id=TENANT + "\n"))
    v1_id = f"bad-v1-{uuid.uuid4().hex[:8]}"
    bad[v1_id] = (json.dumps({"task": SUBMIT_TASK, "id": v1_id, "args": [], "kwargs": sub_kwargs("v1", {"m": MARKER})})
                  .encode(), "application/json", "utf-8", {"id": v1_id})

    valid = []
    for body, ctype, enc, hdrs in bad.values():
        home.publish(body, content_type=ctype, encoding=enc, headers=hdrs)
        for _ in range(2):
            valid.append(submit(TENANT, "onboard", {"email": f"{MARKER}-{len(valid)}@example.com"}, f"ok-{MARKER}-{len(valid)}",
                                region=HOME, config=mesh.config, resolve_home=False).run_id)
    # An unknown workflow sent through the forwarder: the home rejects it and says so.
    fwd_receipt = submit(TENANT, "no_such_workflow", {"m": MARKER}, f"fwd-{MARKER}", region=FORWARDER,
                         config=mesh.config, resolve_home=False)
    while len(valid) < 30:
        valid.append(submit(TENANT, "onboard", {"email": f"{MARKER}-{len(valid)}@example.com"}, f"ok-{MARKER}-{len(valid)}",
                            region=HOME, config=mesh.config, resolve_home=False).run_id)

    def every_letter() -> dict[str, dict[str, Any]] | None:
        found = home.dead_letters()
        return found if set(bad) <= set(found) else None

    letters = wait_until(every_letter, 45, "a dead letter for every malformed message")
    for tid in bad:
        assert letters[tid]["reason"], tid
        assert MARKER not in letters[tid]["reason"], letters[tid]["reason"]
    big_tid = next(t for t in bad if t.startswith("bad-big-"))
    big_body = bad[big_tid][0]
    assert letters[big_tid]["payload_size"] == len(big_body)
    assert letters[big_tid]["payload_sha256"] == hashlib.sha256(big_body).hexdigest()
    assert len(letters[big_tid]["payload"]) <= 64 * 1024 + 8 and letters[big_tid]["submission_id"] == "big-1"
    five = next(t for t in bad if t.startswith("bad-five-"))
    # Nobody can tell whose "5" is: size, digest and reason only (a zoned tenant's input could be anywhere in it).
    assert letters[five]["payload"] is None and letters[five]["payload_size"] == 1
    assert "not an [args, kwargs, embed] triple" in letters[five]["reason"]

    def all_done() -> bool:
        with home.engine.connect() as conn:
            done = conn.execute(text("SELECT count(*) FROM workflow_runs WHERE id = ANY(:ids) AND status = 'succeeded'"),
                                {"ids": valid}).scalar_one()
        return int(done) == len(valid)

    wait_until(all_done, 45, f"all {len(valid)} valid submissions to succeed")

    rejected = wait_until(lambda: [r for r in outbox.rejected(fwd.engine, 50) if r["run_id"] == fwd_receipt.run_id],
                          30, "the forwarder's outbox to record the home's rejection")
    assert f"rejected by {HOME}" in rejected[0]["rejection"] and "unknown workflow" in rejected[0]["rejection"]
    assert outbox.due(fwd.engine) == [] or all(e["run_id"] != fwd_receipt.run_id for e in outbox.due(fwd.engine))
    with fwd.engine.connect() as conn:  # kept for good, so without its input (the home's dead letter has it)
        kept = conn.execute(text("SELECT payload FROM outbox WHERE run_id = :r"), {"r": fwd_receipt.run_id}).scalar_one()
    assert not {"input", "idempotency_key"} & set(kept) and kept["tenant_id"] == TENANT, kept

    assert worker_pids(mesh, HOME) | worker_pids(mesh, FORWARDER) == pids_before, "a worker process died"
    for region in (HOME, FORWARDER):
        for w in mesh.dev.workers(region):
            log = Path(w.log).read_text(encoding="utf-8", errors="replace")
            assert MARKER not in log, f"input reached {w.log}"
            assert "Unrecoverable error" not in log
