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


def scratch_mesh() -> DevMesh:
    """A dev mesh in a new folder under /tmp (``down(purge=True)`` removes it)."""
    root = Path(tempfile.mkdtemp(prefix="rm-bench-", dir="/tmp"))
    os.chmod(root, 0o755)
    return DevMesh(root)


def write_json(path: str, data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2))
    print(f"  wrote {path}")
