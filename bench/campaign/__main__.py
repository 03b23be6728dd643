"""``python -m bench.campaign --seed S --minutes M [--regions 3] [--drain 300] [--keep] [--out FILE]``;
exit 1 on any violation, printing the seed."""

from __future__ import annotations

import argparse
import sys

import bench.campaign
from bench.campaign.run import run_campaign


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.campaign", description=bench.campaign.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
