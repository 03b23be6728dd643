"""``python -m bench.snapshot DEST [REV]``: a fixed copy of the repository (default HEAD) to run long
benchmarks and campaigns from while the working tree keeps changing.

Run from the copy with ``PYTHONPATH=DEST``. The copy links ``models``, ``routing``, ``workers``,
``replication`` and ``migrations`` into its ``regionmesh/`` package the way the wheel lays them
out; without the links an editable install would resolve those subpackages to the working tree,
and the run would mix two builds (``bench.common.check_code_root`` refuses that)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SUBPACKAGES = ("models", "routing", "workers", "replication", "migrations")


def snapshot(dest: Path, rev: str = "HEAD") -> Path:
    root = Path(__file__).resolve().parents[1]
    subprocess.run(["git", "clone", "-q", str(root), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", rev], check=True)
    os.chmod(dest, 0o755)  # the PostgreSQL user reaches the mesh folders' parents, not this, but keep it open
    for name in SUBPACKAGES:
        (dest / "regionmesh" / name).symlink_to(dest / name)
    return dest


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    made = snapshot(Path(sys.argv[1]), *sys.argv[2:])
    print(f"snapshot in {made}: run with PYTHONPATH={made}")
