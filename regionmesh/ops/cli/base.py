"""What every command shares: the root group, the context, the consoles, the extras check."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console

from regionmesh.config import DEFAULT_CONFIG_PATH, ENV_CONFIG, ENV_REGION, MeshConfig, load_config
from regionmesh.extras import require
from regionmesh.models.engine import engine_for

# Piped output (CI logs, files) gets wide tables rather than 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=130)
err_console = Console(stderr=True)


class Context:
    """What every command shares: the mesh file path and the lazily loaded config."""

    def __init__(self, config_path: str | None, region: str | None) -> None:
        self.config_path = config_path
        self.region = region
        self._config: MeshConfig | None = None

    @property
    def config(self) -> MeshConfig:
        if self._config is None:
            self._config = load_config(self.config_path, region=self.region)
        return self._config


pass_ctx = click.make_pass_decorator(Context)


def _needs(extra: str) -> None:
    """Commands of a region host or the dev mesh import their modules only after this check,
    so a producer's install (no extras) runs everything else and gets exit 2 with the fix here."""
    require(extra, f"'{click.get_current_context().command_path}'")


@click.group()
@click.option(
    "--config", "config_path", envvar=ENV_CONFIG, show_envvar=True, default=None,
    help=f"Mesh file (TOML). Default: {DEFAULT_CONFIG_PATH}.",
)
@click.option("--region", envvar=ENV_REGION, show_envvar=True, default=None, help="The local region.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, region: str | None) -> None:
    """Multi-master, multi-region workflow execution on Celery, Redis and PostgreSQL."""
    ctx.obj = Context(config_path, region)


DIR_OPTION = click.option(
    "--dir", "root", envvar="REGIONMESH_DEV_DIR", show_envvar=True, default=".regionmesh",
    show_default=True, help="Folder holding the mesh file, state, data and logs.",
)


def _engine_for(ctx: Context, region: str | None) -> Any:

    cfg = ctx.config
    target = cfg.regions[region] if region else cfg.local
    return engine_for(cfg, target.name)
