"""Submit latency, home vs forwarded, and batch submit rate, on a local three-region mesh.

    python -m bench.routing [--n 200] [--batch 3000]

Latency is from the producer's send to the run row existing in the home
region (same host clock), for submissions sent to the home region's broker
and to another region's (which forwards). Batch: ``submit-batch`` of --batch
lines, the producer's rate and the time until every run exists at home.
Writes bench/results/routing.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

from sqlalchemy import text

from bench.common import ROOT, scratch_mesh, write_json
from regionmesh.batch import submit_batch
from regionmesh.client import submit
from regionmesh.models.engine import make_engine
from regionmesh.routing.hashing import home_by_hash
from regionmesh.supervisor import wait_for

REGIONS = ["us-east", "eu-west", "ap-south"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch", type=int, default=3000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "routing.json"))
    args = parser.parse_args()
    dev = scratch_mesh()
    root = dev.root
    out: dict[str, object] = {"args": vars(args)}
    try:
        config = dev.up(REGIONS, workers=1, worker_env={"REGIONMESH_WORKFLOWS": "regionmesh.workers.examples"})
        home = "eu-west"
        engine = make_engine(config.regions[home].database_url, region=home)
        tenants = [t for i in range(5000) if home_by_hash(t := f"lat-{i}", REGIONS) == home][:20]
        for label, via in (("home", home), ("forwarded", "us-east")):
            sent: dict[uuid.UUID, float] = {}
            for i in range(args.n):
                t0 = time.time()
                r = submit(tenants[i % len(tenants)], "onboard", {"email": "l@example.com"}, f"{label}-{i}-{uuid.uuid4()}",
                           region=via, config=config, resolve_home=False)
                sent[r.run_id] = t0
                time.sleep(0.02)
            ids = list(sent)

            def created(ids: list[uuid.UUID] = ids) -> bool:
                with engine.connect() as conn:
                    return int(conn.execute(text("SELECT count(*) FROM workflow_runs WHERE id = ANY(:i)"), {"i": ids}).scalar_one()) == len(ids)

            wait_for(created, 120, f"{label} runs to exist at home")
            with engine.connect() as conn:
                at = dict(conn.execute(text("SELECT id, extract(epoch FROM created_at) FROM workflow_runs WHERE id = ANY(:i)"),
                                       {"i": ids}).all())
            lat = sorted((float(at[k]) - v) * 1000 for k, v in sent.items())
            out[label] = {"p50_ms": statistics.median(lat), "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))], "n": len(lat)}
        batch = root / "batch.jsonl"
        batch.write_text("".join(json.dumps({"tenant_id": f"b-{i % 50}", "workflow": "onboard",
                                             "input": {"email": f"b{i}@example.com"}}) + "\n" for i in range(args.batch)))
        started = time.perf_counter()
        result = submit_batch(config, batch, region="us-east")
        published = time.perf_counter() - started
        ids = [r.run_id for r in result.submitted]
        engines = {r: make_engine(config.regions[r].database_url, region=r) for r in REGIONS}

        def all_created() -> bool:
            n = 0
            for e in engines.values():
                with e.connect() as conn:
                    n += int(conn.execute(text("SELECT count(*) FROM workflow_runs WHERE id = ANY(:i) AND origin_region = owner_region"),
                                          {"i": ids}).scalar_one())
            return n >= len(ids) * 3  # every run, as each region's copy shows it

        wait_for(all_created, 600, "every batch run in every region")
        landed = time.perf_counter() - started
        out["batch"] = {"lines": args.batch, "failures": len(result.failures), "submit_per_s": len(ids) / published,
                        "created_everywhere_per_s": len(ids) / landed, "seconds_to_created_everywhere": landed}
    finally:
        dev.down(purge=True)
    h, f, b = out["home"], out["forwarded"], out["batch"]
    print(f"\nsubmit -> run created at home, 3 regions, 1 worker x2 per region, paced 50/s, n={args.n}")
    print(f"  sent to the home region   p50 {h['p50_ms']:6.1f} ms  p99 {h['p99_ms']:6.1f} ms")  # type: ignore[index]
    print(f"  sent elsewhere, forwarded p50 {f['p50_ms']:6.1f} ms  p99 {f['p99_ms']:6.1f} ms")  # type: ignore[index]
    print(f"  forward overhead p50 {f['p50_ms'] - h['p50_ms']:.1f} ms")  # type: ignore[index]
    print(f"  submit-batch {b['lines']} lines: published {b['submit_per_s']:,.0f}/s; all created and replicated "  # type: ignore[index]
          f"everywhere in {b['seconds_to_created_everywhere']:.1f}s ({b['created_everywhere_per_s']:,.0f} runs/s)")  # type: ignore[index]
    write_json(args.out, out)


if __name__ == "__main__":
    main()
