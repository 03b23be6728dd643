"""What every benchmark shares: a scratch mesh folder the PostgreSQL user can reach, and the JSON."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from regionmesh.ops.devmesh import DevMesh

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def check_code_root() -> None:
    """Refuse to run when the product's subpackages load from somewhere other than this tree (a
    snapshot run without ``bench.snapshot``'s links picks up the editable install's working tree
    for ``regionmesh.workers`` and the rest: a mixed build, whose results mean nothing)."""
    import sys

    import regionmesh.workers.app  # noqa: F401 - imports what a worker imports

    for name, module in sorted(sys.modules.items()):
        if name != "regionmesh" and not name.startswith("regionmesh."):
            continue
        where = Path(getattr(module, "__file__", None) or ROOT).resolve()
        if not where.is_relative_to(ROOT):
            raise RuntimeError(f"{name} loads from {where}, outside {ROOT}: make the run's tree with "
                               f"'python -m bench.snapshot DEST' and run it with PYTHONPATH=DEST (a module the "
                               f"tree lacks but the editable install's working tree has is a commit missing a file)")


def scratch_mesh() -> DevMesh:
    """A dev mesh in a new folder under /tmp (``down(purge=True)`` removes it)."""
    root = Path(tempfile.mkdtemp(prefix="rm-bench-", dir="/tmp"))
    os.chmod(root, 0o755)
    return DevMesh(root)


def write_json(path: str, data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2))
    print(f"  wrote {path}")
