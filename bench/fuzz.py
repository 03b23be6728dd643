"""Fuzz: malformed messages published straight to every region's broker, mixed with valid traffic.

    python -m bench.fuzz [--messages 10000] [--seed 1] [--valid-every 10] [--regions 3]

Starts a scratch mesh (one worker per region), then publishes, seeded: protocol-1 and -2 bodies
that are not task messages, other content types and encodings, invalid UTF-8, NUL and lone
surrogates (input, tenant, key), 2 MiB inputs, nesting from 65 to 5,000 levels, kwargs of the
wrong type, missing fields, forged ``hops``/``submission_id``, bad headers, unknown tasks and
malformed ``run_step``/``rejected`` messages; and every ``--valid-every``-th message a valid
submission through ``regionmesh.client.submit`` (some also carrying extra fields, which are
tolerated). Pass: the workers keep their pids, every malformed message is a dead letter with a
reason (matched by its Celery task id), every valid submission's run succeeds. Prints a table per
kind and writes bench/results/fuzz.json; exit 1 on any failure (it prints the seed).
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from kombu import Connection
from sqlalchemy import Engine, text

from bench.common import RESULTS, scratch_mesh, write_json
from regionmesh.broker import broker_options
from regionmesh.client import submit
from regionmesh.config import MeshConfig
from regionmesh.models.engine import make_engine
from regionmesh.names import REJECTED_TASK, RUN_STEP_TASK, SUBMIT_TASK, submit_queue
from regionmesh.ops.devmesh import DevMesh
from regionmesh.workers.submission import run_id_for

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
BIG = 2 << 20  # 2 MiB


@dataclass(frozen=True)
class Case:
    """One malformed message: what is published raw, and the task id its dead letter must carry."""

    kind: str
    task_id: str
    body: bytes
    content_type: str = "application/json"
    encoding: str = "utf-8"
    headers: dict[str, Any] = field(default_factory=dict)


def _kw(rng: random.Random, sid: str, **change: Any) -> dict[str, Any]:
    base = {"v": 1, "tenant_id": f"fz-{rng.randrange(30)}", "workflow": "onboard", "input": {"email": "x@example.com"},
            "idempotency_key": sid, "submission_id": sid}
    for k, v in change.items():
        if v is _DROP:
            base.pop(k, None)
        else:
            base[k] = v
    return base


_DROP = object()


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _v2(tid: str, kwargs: Any, *, task: str = SUBMIT_TASK, args: Any = None, raw_kwargs: str | None = None,
        **headers: Any) -> tuple[bytes, dict[str, Any]]:
    kw = raw_kwargs if raw_kwargs is not None else json.dumps(kwargs)
    body = f"[{json.dumps([] if args is None else args)}, {kw}, {json.dumps(EMBED)}]".encode()
    return body, {"task": task, "id": tid, "lang": "py", "argsrepr": "()", "kwargsrepr": "{}"} | headers


def _makers() -> dict[str, Callable[[random.Random, str], Case]]:
    """kind -> a function of (rng, task id) building one malformed message of that kind."""
    def v2(kind: str, kwargs_of: Callable[[random.Random, str], Any], **opts: Any) -> Callable[[random.Random, str], Case]:
        def make(rng: random.Random, tid: str) -> Case:
            body, headers = _v2(tid, kwargs_of(rng, tid), **opts)
            return Case(kind, tid, body, headers=headers)
        return make

    def raw(kind: str, body_of: Callable[[random.Random, str], bytes], content_type: str = "application/json",
            encoding: str = "utf-8", **headers: Any) -> Callable[[random.Random, str], Case]:
        def make(rng: random.Random, tid: str) -> Case:
            return Case(kind, tid, body_of(rng, tid), content_type, encoding,
                        {"task": SUBMIT_TASK, "id": tid, "lang": "py"} | headers)
        return make

    def nested(kind: str, depth_of: Callable[[random.Random], int]) -> Callable[[random.Random, str], Case]:
        def make(rng: random.Random, tid: str) -> Case:
            kw = json.dumps(_kw(rng, tid)).replace('"input": {"email": "x@example.com"}',
                                                   f'"input": {_nested(depth_of(rng))}')
            body, headers = _v2(tid, None, raw_kwargs=kw)
            return Case(kind, tid, body, headers=headers)
        return make

    def v1(rng: random.Random, tid: str) -> Case:
        body = json.dumps({"task": SUBMIT_TASK, "id": tid, "args": [], "kwargs": _kw(rng, tid)}).encode()
        return Case("protocol v1 body", tid, body, headers={"id": tid})

    scalars = [b"5", b"null", b'"x"', b"true", b"{}", b"[]", b"[1, 2]", b"[[], {}]", b"[[], {}, {}, {}]",
               b'[{}, [], {}]', b"[[], [], {}]", b"[[], null, {}]", b"", b"[", b"\x00", b"1e999999"]
    return {
        "not a [args, kwargs, embed] triple": raw("not a [args, kwargs, embed] triple",
                                                   lambda rng, tid: rng.choice(scalars)),
        "protocol v1 body": v1,
        "content type application/data": raw("content type application/data",
                                              lambda rng, tid: json.dumps([[], _kw(rng, tid), EMBED]).encode(),
                                              "application/data", "binary"),
        "content type pickle": raw("content type pickle",
                                   lambda rng, tid: pickle.dumps(([], _kw(rng, tid), EMBED)),
                                   "application/x-python-serialize", "binary"),
        "content type yaml/text": raw("content type yaml/text", lambda rng, tid: b"- []\n- {}\n- {}\n",
                                      "application/x-yaml"),
        "encoding latin-1 / utf-16": raw("encoding latin-1 / utf-16",
                                         lambda rng, tid: json.dumps([[], _kw(rng, tid), EMBED]).encode("utf-16"),
                                         encoding="utf-16"),
        "invalid UTF-8": raw("invalid UTF-8",
                             lambda rng, tid: b'[[], {"input": "' + bytes([0xff, 0xfe, 0xc3]) + b'"}, {}]'),
        "compression header, not compressed": raw("compression header, not compressed",
                                                  lambda rng, tid: b"[[], {}, {}]", compression="application/x-gzip"),
        "NUL in input": v2("NUL in input", lambda rng, tid: _kw(rng, tid, input={"m": "a\x00b"})),
        "NUL in tenant / key": v2("NUL in tenant / key", lambda rng, tid: _kw(
            rng, tid, **rng.choice([{"tenant_id": "t\x00"}, {"idempotency_key": "k\x00"}]))),
        "lone surrogate": v2("lone surrogate", lambda rng, tid: _kw(
            rng, tid, **rng.choice([{"input": {"m": "\ud800"}}, {"input": {"\udfff": 1}},
                                    {"idempotency_key": "k\udc00"}]))),
        "2 MiB input": v2("2 MiB input", lambda rng, tid: _kw(rng, tid, input={"m": "x" * BIG})),
        "nesting 65-200 levels": nested("nesting 65-200 levels", lambda rng: rng.randint(65, 200)),
        "nesting 1,000-5,000 levels": nested("nesting 1,000-5,000 levels", lambda rng: rng.randint(1000, 5000)),
        "wrong kwarg types": v2("wrong kwarg types", lambda rng, tid: _kw(rng, tid, **rng.choice([
            {"tenant_id": 7}, {"workflow": ["onboard"]}, {"input": "x"}, {"input": [1]}, {"input": None},
            {"idempotency_key": {"k": 1}}, {"v": "1"}, {"v": 2}, {"v": True}, {"submitted_region": 5},
            {"input": {"n": 1e308 * 10}}]))),
        "missing fields": v2("missing fields", lambda rng, tid: _kw(
            rng, tid, **{k: _DROP for k in rng.sample(["tenant_id", "workflow", "input"], rng.randint(1, 3))})),
        "forged hops": v2("forged hops", lambda rng, tid: _kw(
            rng, tid, hops=rng.choice(["9", -1, 1.5, True, None, [3], {"n": 1}]))),
        "forged submission_id": v2("forged submission_id", lambda rng, tid: _kw(
            rng, tid, submission_id=rng.choice([12345, "", "a b", "x\n", "é" * 3, "s" * 129, ["s"]]),
            idempotency_key=rng.choice([None, "k"]))),
        "unknown workflow": v2("unknown workflow", lambda rng, tid: _kw(rng, tid, workflow=f"no_such_{rng.randrange(9)}")),
        "positional args": v2("positional args", lambda rng, tid: _kw(rng, tid), args=[1]),
        "bad headers": v2("bad headers", lambda rng, tid: _kw(rng, tid), **rng_headers()),
        "unknown task": v2("unknown task", lambda rng, tid: _kw(rng, tid), task="regionmesh.no_such_task"),
        "run_step without a task id": v2("run_step without a task id", lambda rng, tid: rng.choice([
            {}, {"task_id": "not-a-uuid"}, {"task_id": 5}, {"task_id": None}]), task=RUN_STEP_TASK),
        "malformed rejection notice": v2("malformed rejection notice", lambda rng, tid: rng.choice([
            {}, {"region": 5}, {"region": "nowhere", "reason": "x"}]), task=REJECTED_TASK),
    }


def rng_headers() -> dict[str, Any]:
    # Chosen once per maker: a header Celery's main process reads, of the wrong type.
    return {"eta": "not-a-date", "timelimit": "x"}


def make_cases(seed: int, n: int) -> list[Case]:
    """``n`` malformed messages, reproducible from ``seed``. 2 MiB inputs are at most 1 in 200."""
    rng = random.Random(seed)
    makers = _makers()
    kinds = list(makers)
    cases = []
    for i in range(n):
        kind = rng.choice(kinds)
        while kind == "2 MiB input" and rng.random() > 0.1:
            kind = rng.choice(kinds)
        cases.append(makers[kind](rng, f"fz-{seed}-{i}-{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}"))
    return cases


@dataclass
class FuzzResult:
    seed: int
    by_kind: dict[str, dict[str, int]]
    valid_sent: int
    valid_succeeded: int
    tolerated_extra_fields: int
    workers_same: bool
    publish_s: float
    settle_s: float
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def worker_pids(dev: DevMesh, regions: list[str]) -> set[int]:
    pids: set[int] = set()
    for region in regions:
        for w in dev.workers(region):
            main = psutil.Process(w.pid)
            pids |= {main.pid, *(c.pid for c in main.children(recursive=True))}
    return pids


def _dead_letters(engines: dict[str, Engine], prefix: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for engine in engines.values():
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT task_id, reason FROM dead_letters WHERE task_id LIKE :p"),
                                {"p": prefix + "%"}).all()
        found.update({r[0]: r[1] for r in rows})
    return found


def _succeeded(engines: dict[str, Engine], run_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    done: set[uuid.UUID] = set()
    for engine in engines.values():
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id FROM workflow_runs WHERE id = ANY(:ids) AND status = 'succeeded'"),
                                {"ids": run_ids}).all()
        done |= {r[0] for r in rows}
    return done


def run_fuzz(dev: DevMesh, config: MeshConfig, *, messages: int, seed: int, valid_every: int = 10,
             timeout: float = 600, log: Callable[[str], None] = print) -> FuzzResult:
    """Publish the fuzz traffic to the running mesh ``dev`` (workers already started) and check it."""
    regions = list(config.regions)
    engines = {r: make_engine(config.regions[r].database_url, region=r) for r in regions}
    rng = random.Random(seed ^ 0x5EED)
    cases = make_cases(seed, messages)
    pids_before = worker_pids(dev, regions)
    valid: list[uuid.UUID] = []
    tolerated = 0
    tag = uuid.uuid4().hex[:8]
    conns = {r: Connection(config.regions[r].broker_url, transport_options=broker_options(config.settings))
             for r in regions}
    producers = {r: conns[r].Producer() for r in regions}
    started = time.monotonic()
    try:
        for i, case in enumerate(cases):
            region = regions[i % len(regions)]
            producers[region].publish(case.body, routing_key=submit_queue(region), content_type=case.content_type,
                                      content_encoding=case.encoding, headers=case.headers, declare=[])
            if i % valid_every == 0:
                via = regions[rng.randrange(len(regions))]
                extra = rng.random() < 0.2  # forward-compatible extra fields are tolerated, not refused
                key = f"fzv-{tag}-{i}"
                workflow = rng.choice(["onboard", "etl"])
                data: dict[str, Any] = {"email": f"v{i}@example.com"} if workflow == "onboard" else {"n": 2}
                tenant = f"fzv-{rng.randrange(40)}"
                if extra:  # published raw: kwargs this version does not know
                    kwargs = {"v": 1, "tenant_id": tenant, "workflow": workflow, "input": data,
                              "idempotency_key": key, "submission_id": key, "x_added_later": {"a": [1]}}
                    body, headers = _v2(key, kwargs)
                    producers[via].publish(body, routing_key=submit_queue(via), content_type="application/json",
                                           content_encoding="utf-8", headers=headers, declare=[])
                    valid.append(run_id_for(tenant, key))
                else:
                    valid.append(submit(tenant, workflow, data, key, region=via, config=config,
                                        resolve_home=False).run_id)
                tolerated += extra
        publish_s = time.monotonic() - started
        log(f"  published {len(cases)} malformed and {len(valid)} valid messages in {publish_s:.1f}s")
        prefix = f"fz-{seed}-"
        deadline = time.monotonic() + timeout
        letters: dict[str, str] = {}
        done: set[uuid.UUID] = set()
        while time.monotonic() < deadline:
            letters = _dead_letters(engines, prefix)
            done = _succeeded(engines, valid)
            if len(letters) >= len(cases) and len(done) == len(valid):
                break
            if not worker_pids(dev, regions) >= pids_before:
                break  # a worker died: no point waiting
            time.sleep(0.5)
        settle_s = time.monotonic() - started
    finally:
        for c in conns.values():
            c.release()
        for e in engines.values():
            e.dispose()
    by_kind: dict[str, Counter[str]] = {}
    failures: list[str] = []
    for case in cases:
        row = by_kind.setdefault(case.kind, Counter())
        row["sent"] += 1
        reason = letters.get(case.task_id)
        if reason is None:
            row["missing"] += 1
            if len(failures) < 20:
                failures.append(f"no dead letter for {case.task_id} ({case.kind})")
        elif not reason.strip():
            row["no reason"] += 1
            failures.append(f"dead letter without a reason for {case.task_id} ({case.kind})")
        else:
            row["dead-lettered"] += 1
    workers_same = worker_pids(dev, regions) == pids_before
    if not workers_same:
        failures.append("a worker process died or was replaced")
    if len(done) != len(valid):
        failures.append(f"{len(valid) - len(done)} of {len(valid)} valid submissions did not succeed")
    return FuzzResult(seed, {k: dict(v) for k, v in by_kind.items()}, len(valid), len(done), tolerated, workers_same,
                      publish_s, settle_s, failures)


def print_table(result: FuzzResult) -> None:
    width = max(len(k) for k in result.by_kind)
    print(f"\nfuzz, seed {result.seed}: malformed messages by kind")
    print(f"  {'kind':<{width}}  {'sent':>6}  {'dead letter':>11}  {'missing':>7}")
    for kind, row in sorted(result.by_kind.items()):
        print(f"  {kind:<{width}}  {row.get('sent', 0):>6}  {row.get('dead-lettered', 0):>11}  {row.get('missing', 0):>7}")
    total = sum(r.get("sent", 0) for r in result.by_kind.values())
    dead = sum(r.get("dead-lettered", 0) for r in result.by_kind.values())
    print(f"  {'total':<{width}}  {total:>6}  {dead:>11}  {total - dead:>7}")
    print(f"  valid submissions: {result.valid_succeeded} of {result.valid_sent} succeeded "
          f"({result.tolerated_extra_fields} with extra fields); workers kept their pids: {result.workers_same}")
    print(f"  published in {result.publish_s:.1f}s, all settled after {result.settle_s:.1f}s "
          f"({total / max(result.settle_s, 1e-9):.0f} malformed messages/s)")
    for line in result.failures:
        print(f"  FAIL {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--valid-every", type=int, default=10)
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", default=str(RESULTS / "fuzz.json"))
    args = parser.parse_args()
    dev = scratch_mesh()
    regions = ["us-east", "eu-west", "ap-south", "sa-east", "af-south"][: args.regions]
    try:
        config = dev.up(regions, workers=1, concurrency=args.concurrency)
        result = run_fuzz(dev, config, messages=args.messages, seed=args.seed, valid_every=args.valid_every,
                          timeout=args.timeout)
        logs = [Path(w.log) for r in regions for w in dev.workers(r)]
        crashed = [str(p) for p in logs if "Unrecoverable error" in p.read_text(errors="replace")]
        if crashed:
            result.failures.append(f"'Unrecoverable error' in {crashed}")
    finally:
        dev.down(purge=True)
    print_table(result)
    write_json(args.out, {"args": vars(args), "seed": result.seed, "by_kind": result.by_kind,
                          "valid_sent": result.valid_sent, "valid_succeeded": result.valid_succeeded,
                          "tolerated_extra_fields": result.tolerated_extra_fields,
                          "workers_same": result.workers_same, "publish_s": result.publish_s,
                          "settle_s": result.settle_s, "failures": result.failures, "ok": result.ok})
    if not result.ok:
        print(f"fuzz FAILED (seed {args.seed})")
        sys.exit(1)


if __name__ == "__main__":
    main()
