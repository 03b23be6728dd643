"""How long ``regionmesh verify`` takes on 1,000,000 runs across three regions.

    python -m bench.verify_scale [--runs 1000000]

Writes the runs in one region (in batches, through the normal stamp trigger),
waits for replication, then times verify (drain wait + bucket hashing in all
regions in parallel + drill-down), once identical and once with one planted
difference. Writes bench/results/verify_scale.json.
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy import text

from bench.common import ROOT, scratch_mesh, write_json
from regionmesh.models.engine import make_engine
from regionmesh.replication.verify import verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "verify_scale.json"))
    args = parser.parse_args()
    dev = scratch_mesh()
    try:
        config = dev.up(["us-east", "eu-west", "ap-south"], workers=0)
        src = make_engine(config.regions["us-east"].database_url, region="us-east")
        started = time.perf_counter()
        batch = 100_000
        for lo in range(0, args.runs, batch):
            with src.begin() as conn:
                conn.execute(text(
                    """INSERT INTO workflow_runs (id, tenant_id, idempotency_key, workflow, input, status, owner_region,
                                                  submission_id, output)
                       SELECT md5('bench' || g)::uuid, 't' || (g % 1000), 'k' || g, 'etl', '{"n": 3}', 'succeeded',
                              'us-east', 's' || g, '{"loaded": 3}'
                         FROM generate_series(:lo, :hi) AS g"""
                ), {"lo": lo, "hi": min(lo + batch, args.runs) - 1})
        written = time.perf_counter() - started
        first = verify(config, timeout=900)
        assert first.identical, "mesh did not converge"
        second = verify(config, timeout=60)
        planted = make_engine(dev.admin_url("ap-south", "regionmesh"), region="ap-south", pool_size=1)
        with planted.begin() as conn:
            conn.execute(text("SELECT pg_replication_origin_create('bench_plant')"))
            conn.execute(text("SELECT pg_replication_origin_session_setup('bench_plant')"))
            conn.execute(text("UPDATE workflow_runs SET status = 'failed' WHERE id = md5('bench7')::uuid"))
            conn.execute(text("SELECT pg_replication_origin_session_reset()"))
        planted.dispose()
        third = verify(config, timeout=60)
        assert not third.identical and list(third.differences["workflow_runs"]) == [
            str(__import__("uuid").UUID(__import__("hashlib").md5(b"bench7").hexdigest()))]
        src.dispose()
    finally:
        dev.down(purge=True)
    out = {
        "runs": args.runs, "write_s": written,
        "first_verify": {"waited_s": first.waited_s, "compare_s": first.compare_s},
        "identical_verify": {"waited_s": second.waited_s, "compare_s": second.compare_s},
        "one_difference_verify": {"waited_s": third.waited_s, "compare_s": third.compare_s},
    }
    print(f"\nverify on {args.runs:,} runs x 3 regions (runs written in {written:.1f}s)")
    print(f"  first verify (waits for replication of the load): waited {first.waited_s:.1f}s, compared in {first.compare_s:.2f}s")
    print(f"  verify, identical:      {second.waited_s + second.compare_s:.2f}s (compare {second.compare_s:.2f}s)")
    print(f"  verify, one difference: {third.waited_s + third.compare_s:.2f}s (found and named the key)")
    write_json(args.out, out)


if __name__ == "__main__":
    main()
