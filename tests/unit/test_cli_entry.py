"""The README's first command runs ``python3 -m regionmesh``: it must be the CLI."""

from __future__ import annotations

import subprocess
import sys


def test_python_m_regionmesh_is_the_cli() -> None:
    res = subprocess.run([sys.executable, "-m", "regionmesh", "--help"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    for command in ("demo", "dev", "migrate", "replication", "verify", "failover", "restore", "submit-batch"):
        assert command in res.stdout
