"""The ``regionmesh`` command line. Thin: parse, call one function, print."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from regionmesh.config import DEFAULT_CONFIG_PATH, ENV_CONFIG, ENV_REGION, MeshConfig, load_config
from regionmesh.errors import RegionmeshError

console = Console()
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


# -- dev mesh ---------------------------------------------------------------
@cli.group()
def dev() -> None:
    """A local multi-region mesh: PostgreSQL >= 16 and Redis per region."""


DIR_OPTION = click.option(
    "--dir", "root", envvar="REGIONMESH_DEV_DIR", show_envvar=True, default=".regionmesh",
    show_default=True, help="Folder holding the mesh file, state, data and logs.",
)


@dev.command("up")
@click.option(
    "--regions", envvar="REGIONMESH_DEV_REGIONS", show_envvar=True, default=None,
    help="Comma-separated region names. Default: the running mesh's, else us-east,eu-west,ap-south.",
)
@DIR_OPTION
def dev_up(regions: str | None, root: str) -> None:
    """Start (or reuse) every region's servers, migrate them, write the mesh file."""
    from regionmesh.devmesh import DevMesh

    started = time.monotonic()
    mesh = DevMesh(root)
    wanted = [r.strip() for r in regions.split(",") if r.strip()] if regions else None
    config = mesh.up(wanted)
    table = Table(title=f"regionmesh dev mesh ({time.monotonic() - started:.1f}s) - {mesh.mesh_file}")
    for col in ("region", "postgres", "redis (broker)", "queues"):
        table.add_column(col)
    for name, region in config.regions.items():
        table.add_row(
            name, region.redacted_database_url.replace(":***", ""), region.redacted_broker_url.replace(":***", ""),
            f"rm.{name}.submit, rm.{name}.steps",
        )
    console.print(table)
    console.print(f"export {ENV_CONFIG}={mesh.mesh_file}")


@dev.command("down")
@click.option("--purge", is_flag=True, help="Also delete data, logs, secrets and the mesh file.")
@DIR_OPTION
def dev_down(purge: bool, root: str) -> None:
    """Stop exactly what 'dev up' started."""
    from regionmesh.devmesh import DevMesh

    stopped = DevMesh(root).down(purge=purge)
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@dev.command("status")
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dev_status(root: str, as_json: bool) -> None:
    """Health per region; exits 1 if any part is down."""
    import dataclasses
    import json

    from regionmesh.devmesh import DevMesh

    health = DevMesh(root).status()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(h) | {"ok": h.ok} for h in health], indent=2))
    else:
        table = Table(title="regionmesh dev mesh status")
        for col in ("region", "postgres", "redis", "revision", "ok"):
            table.add_column(col)
        for h in health:
            table.add_row(
                h.region, f"{h.pg_port}: {h.pg_detail}", f"{h.redis_port}: {h.redis_detail}", h.revision or "-",
                "[green]yes[/]" if h.ok else "[red]NO[/]",
            )
        console.print(table)
    if not health:
        err_console.print("no regions recorded; run 'regionmesh dev up'")
        sys.exit(1)
    if not all(h.ok for h in health):
        sys.exit(1)


# -- schema -----------------------------------------------------------------
@cli.command()
@click.option("--check", is_flag=True, help="Only report revisions and compatibility; change nothing.")
@pass_ctx
def migrate(ctx: Context, check: bool) -> None:
    """Upgrade every region of the mesh file to the head revision."""
    from regionmesh.migrate import check_compatible, head, revisions, upgrade_all

    table = Table(title=f"schema revisions (head {head()})")
    for col in ("region", "before", "after"):
        table.add_column(col)
    if check:
        revs = revisions(ctx.config)
        check_compatible(revs)
        for name, rev in revs.items():
            table.add_row(name, rev or "(empty)", rev or "(empty)")
    else:
        for r in upgrade_all(ctx.config):
            table.add_row(r.region, r.before or "(empty)", r.after or "(empty)")
    console.print(table)


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
        err_console.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
