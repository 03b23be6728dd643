"""The ``regionmesh`` command line. Thin: parse, call one function, print.

One module per group of commands; each adds its commands to the root group (``base.cli``)
when it is imported here.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from regionmesh.errors import RegionmeshError
from regionmesh.ops.cli import console, dev, mesh, observe, placement, runs, schedules, shares, tenants, zones
from regionmesh.ops.cli.base import cli, err_console

COMMAND_MODULES = (console, dev, mesh, observe, placement, runs, schedules, shares, tenants, zones)
__all__ = ["COMMAND_MODULES", "cli", "main"]


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="regionmesh", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except RegionmeshError as exc:
        # The message is printed as it is: '[dev]' in an install line is not markup.
        err_console.print("error:", style="red", end=" ")
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
