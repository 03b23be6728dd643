"""``python3 -m regionmesh.ops.cli``: the CLI (as ``python3 -m regionmesh``)."""

from regionmesh.ops.cli import main

main()
