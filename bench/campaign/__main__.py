"""``python -m bench.campaign --seed S --minutes M [--regions 3] [--drain 300] [--keep] [--out FILE]``;
exit 1 on any violation, printing the seed.

``--no-resend``: producers never send a submission again, so a lost first publish is reported as
lost by its submission id (the issue's "campaign with producer re-sends off").

``--mutant NAME`` runs the same campaign against a deliberately broken build (bench/mutants.py) and
exits 1 unless the checker reports the violation class that mutant must cause; ``--mutants all``
(or a comma-separated list) runs one campaign per mutant, prints the matrix and writes
bench/results/mutants.json, exit 1 if any mutant went uncaught."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import bench.campaign
from bench import mutants
from bench.campaign.faults import KINDS
from bench.campaign.run import run_campaign
from bench.common import RESULTS, write_json


def _kinds(spec: str, mutant: mutants.Mutant | None) -> tuple[str, ...]:
    """The fault kinds ``--faults`` names (empty: all), with the one ``mutant`` needs."""
    if spec == "all":
        return ()
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    if mutant is not None and mutant.needs in KINDS and mutant.needs not in kinds:
        kinds.append(mutant.needs)
    return tuple(kinds)


def _matrix(args: argparse.Namespace, chosen: list[mutants.Mutant]) -> int:
    rows: list[dict[str, Any]] = []
    for m in chosen:
        began = time.monotonic()
        verdict, _ = run_campaign(args.seed, args.minutes, n_regions=args.regions, drain_s=args.drain,
                                  keep=args.keep, mutant=m, kinds=_kinds(args.faults, m), resend=args.resend)
        rows.append({"mutant": m.name, "breaks": m.breaks, "must_report": m.catches,
                     "caught": m.caught(verdict.classes), "reported": sorted(verdict.classes),
                     "seconds": round(time.monotonic() - began)})
    print(f"\n{'mutant':30} {'must report':22} {'caught':7} reported")
    for r in rows:
        print(f"{r['mutant']:30} {r['must_report']:22} {'yes' if r['caught'] else 'NO':7} {', '.join(r['reported'])}")
    write_json(str(RESULTS / "mutants.json"), {"seed": args.seed, "minutes": args.minutes, "regions": args.regions,
                                               "mutants": rows})
    return 0 if all(r["caught"] for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.campaign", description=bench.campaign.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--regions", type=int, default=3)
    parser.add_argument("--drain", type=float, default=300, help="seconds allowed for everything to finish")
    parser.add_argument("--keep", action="store_true", help="keep the mesh folder (logs, ledger) for inspection")
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-resend", dest="resend", action="store_false",
                        help="producers never publish a submission again (no journal confirm, no re-sender): "
                             "a lost first publish stays lost and is reported by its submission id")
    parser.add_argument("--faults", default="all",
                        help=f"'all' or a comma-separated list of fault kinds: {', '.join(KINDS)} "
                             "(a mutant's own fault is always among them)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--mutant", default=None, help=f"one planted bug: {', '.join(mutants.MUTANTS)}")
    group.add_argument("--mutants", default=None, help="'all' or a comma-separated list: one campaign per mutant")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.mutants:
        sys.exit(_matrix(args, mutants.select(args.mutants)))
    mutant = mutants.select(args.mutant)[0] if args.mutant else None
    if mutant is not None and mutant.shown_by:
        raise SystemExit(f"mutant {mutant.name}: the campaign cannot show it ({mutant.breaks}); "
                         f"it is shown by {mutant.shown_by}")
    verdict, _ = run_campaign(args.seed, args.minutes, n_regions=args.regions, drain_s=args.drain, keep=args.keep,
                              out=args.out, mutant=mutant, kinds=_kinds(args.faults, mutant), resend=args.resend)
    if mutant is not None:
        caught = mutant.caught(verdict.classes)
        print(f"mutant {mutant.name}: {'caught' if caught else 'NOT caught'} "
              f"(must report {mutant.catches}; reported {sorted(verdict.classes) or 'nothing'})")
        sys.exit(0 if caught else 1)
    if not verdict.ok:
        print(f"campaign FAILED (seed {args.seed}): {len(verdict.violations)} violation(s)")
        sys.exit(1)
    print(f"campaign passed (seed {args.seed})")


if __name__ == "__main__":
    main()
