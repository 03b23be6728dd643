"""``python3 -m regionmesh``: the CLI, also where the console script is not on PATH yet."""

from regionmesh.ops.cli import main

main()
