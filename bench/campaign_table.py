"""``python -m bench.campaign_table SEED...``: the table of several campaigns' verdicts (read from
bench/results/campaign-<seed>.json), printed and written to bench/results/campaign-table.json.

One row per seed and a total: acknowledged publishes, faults, and what the checker reported in
its own words — lost by submission id, lost first publishes closed by a re-send (by hand-off),
first publishes delayed past their re-send, duplicated effects, documented re-runs (by the rule
each satisfied), overlaps, starts past the lease bound, stale completions, stuck runs, residency
findings, and whether the regions were identical."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from bench.common import RESULTS, write_json

COLUMNS = ("acked", "faults", "lost", "lost_first", "delayed_first", "dup_effects", "reruns", "overlaps",
           "lease_overrun", "stale", "stuck", "residency", "identical")


def row(doc: dict[str, Any]) -> dict[str, Any]:
    v = doc["verdict"]
    classes = Counter(line.split(":", 1)[0] for line in v["violations"])
    return {"seed": doc["seed"], "minutes": doc["minutes"], "acked": sum(v["submissions"].values()),
            "faults": sum(v["faults"].values()), "lost": classes["lost_submission"],
            "lost_first": classes["lost_first_publish"], "lost_first_by_hand_off": v["lost_first"],
            "delayed_first": sum(v["delayed_first"].values()), "dup_effects": len(v["duplicated_effects"]),
            "reruns": sum(v["crash_reruns"].values()), "reruns_by_rule": v["crash_reruns"],
            "overlaps": classes["overlap_in_region"] + classes["overlap_across_regions"],
            "lease_overrun": classes["lease_overrun"], "stale": classes["stale_completion"],
            "stuck": len(v["stuck"]), "residency": classes["residency"], "identical": v["identical"],
            "other_violations": sorted({c for c in classes} - {
                "lost_submission", "lost_first_publish", "duplicate_effect", "overlap_in_region",
                "overlap_across_regions", "lease_overrun", "stale_completion", "stuck", "residency"}),
            "fault_kinds": v["faults"], "drained": doc.get("drained")}


def main(seeds: list[int]) -> int:
    rows = [row(json.loads((RESULTS / f"campaign-{s}.json").read_text())) for s in seeds]
    total: dict[str, Any] = {c: sum(int(r[c]) for r in rows) for c in COLUMNS if c != "identical"}
    total["identical"] = all(r["identical"] for r in rows)
    reruns: Counter[str] = Counter()
    for r in rows:
        reruns.update(r["reruns_by_rule"])
    print("  ".join(f"{c:>13}" for c in ("seed", *COLUMNS)))
    for r in [*rows, {"seed": "total", **total}]:
        print(f"{r['seed']!s:>13}  " + "  ".join(f"{r[c]!s:>13}" for c in COLUMNS))
    print("documented re-runs by rule:", dict(reruns))
    write_json(str(RESULTS / "campaign-table.json"), {"seeds": seeds, "rows": rows, "total": total,
                                                     "reruns_by_rule": dict(reruns)})
    return 0 if total["identical"] and not any(
        total[c] for c in ("lost", "dup_effects", "overlaps", "lease_overrun", "stale", "stuck", "residency")) else 1


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main([int(s) for s in sys.argv[1:]]))
