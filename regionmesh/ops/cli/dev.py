"""``regionmesh dev`` (the local mesh) and ``regionmesh demo``."""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import click
from rich.table import Table

from regionmesh.config import ENV_CONFIG
from regionmesh.ops.cli.base import DIR_OPTION, _needs, cli, console, err_console


# -- dev mesh ---------------------------------------------------------------
@cli.group()
def dev() -> None:
    """A local multi-region mesh: PostgreSQL >= 16 and Redis per region."""




def parse_zones(specs: tuple[str, ...]) -> dict[str, list[str]]:
    """``eu=eu-west,eu-central`` (one zone per spec) -> {"eu": ["eu-west", "eu-central"]}.
    Raises click.BadParameter naming the spec that is not NAME=REGION,..."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, _, members = spec.partition("=")
        regions = [r.strip() for r in members.split(",") if r.strip()]
        if not name.strip() or not regions or name.strip() in out:
            raise click.BadParameter(f"{spec!r}: write NAME=REGION,REGION (one zone per --zones, each once)",
                                     param_hint="--zones")
        out[name.strip()] = regions
    return out


@dev.command("up")
@click.option(
    "--regions", envvar="REGIONMESH_DEV_REGIONS", show_envvar=True, default=None,
    help="Comma-separated region names. Default: the running mesh's, else us-east,eu-west,ap-south.",
)
@click.option(
    "--workers", "n_workers", envvar="REGIONMESH_DEV_WORKERS", show_envvar=True, default=1, show_default=True,
    type=click.IntRange(0, 8), help="Celery worker processes per region (0: none).",
)
@click.option(
    "--concurrency", envvar="REGIONMESH_DEV_CONCURRENCY", show_envvar=True, default=2, show_default=True,
    type=click.IntRange(1, 64), help="Pool processes per worker.",
)
@click.option("--flower", is_flag=True, envvar="REGIONMESH_DEV_FLOWER", show_envvar=True,
              help="Also start Flower per region (basic auth: admin / secrets/flower, or $REGIONMESH_FLOWER_AUTH).")
@DIR_OPTION
@click.option("--metrics/--no-metrics", default=True, show_default=True, envvar="REGIONMESH_DEV_METRICS",
              show_envvar=True, help="Start 'regionmesh metrics serve' per region.")
@click.option("--tls", is_flag=True, envvar="REGIONMESH_DEV_TLS", show_envvar=True,
              help="A throwaway CA; PostgreSQL (ssl=on, hostssl only) and Redis (TLS port only), verified by every client.")
@click.option("--zones", "zone_specs", multiple=True, envvar="REGIONMESH_DEV_ZONES", show_envvar=True,
              metavar="NAME=REGION,...", help="A zone and its regions (repeat for more); kept across 'up' "
                                               "(mesh.toml) and defined in the mesh ('regionmesh zones').")
def dev_up(regions: str | None, n_workers: int, concurrency: int, flower: bool, metrics: bool, tls: bool, root: str,
           zone_specs: tuple[str, ...]) -> None:
    """Start (or reuse) every region's servers and workers, migrate, write the mesh file."""
    _needs("dev")  # imported here: an optional extra
    from regionmesh.ops.devmesh import DevMesh

    started = time.monotonic()
    mesh = DevMesh(root)
    wanted = [r.strip() for r in regions.split(",") if r.strip()] if regions else None
    config = mesh.up(wanted, workers=n_workers, concurrency=concurrency, flower=flower, metrics=metrics, tls=tls,
                     zones=parse_zones(zone_specs) if zone_specs else None)
    table = Table(title=f"regionmesh dev mesh ({time.monotonic() - started:.1f}s) - {mesh.mesh_file}")
    for col in ("region", "postgres", "redis (broker)", "queues"):
        table.add_column(col)
    for name, region in config.regions.items():
        table.add_row(
            name, region.redacted_database_url.replace(":***", ""), region.redacted_broker_url.replace(":***", ""),
            f"rm.{name}.submit, rm.{name}.steps",
        )
    console.print(table)
    for name in config.regions:
        for w in mesh.region(name).workers:
            if w.name == "flower":
                console.print(f"flower {name}: http://127.0.0.1:{w.port} (user admin, password in {mesh.root}/secrets/flower)")
            if w.name == "metrics":
                console.print(f"metrics {name}: http://127.0.0.1:{w.port}/metrics")
    console.print(f"export {ENV_CONFIG}={mesh.mesh_file}")


@dev.command("down")
@click.option("--purge", is_flag=True, help="Also delete data, logs, secrets and the mesh file.")
@DIR_OPTION
def dev_down(purge: bool, root: str) -> None:
    """Stop exactly what 'dev up' started."""
    _needs("dev")  # imported here: an optional extra
    from regionmesh.ops.devmesh import DevMesh

    stopped = DevMesh(root).down(purge=purge)
    console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@dev.command("status")
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dev_status(root: str, as_json: bool) -> None:
    """Health per region; exits 1 if any part is down."""

    _needs("dev")  # imported here: an optional extra
    from regionmesh.ops.devmesh import DevMesh

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


@cli.command()
@click.option("--chaos", is_flag=True, help="Also SIGKILL a worker mid-step and fail a region over and back.")
@click.option("--tenants", default=60, show_default=True, help="Tenants to submit for.")
@click.option("--per-tenant", default=3, show_default=True, help="Runs per tenant.")
@DIR_OPTION
def demo(chaos: bool, tenants: int, per_tenant: int, root: str) -> None:
    """Three regions doing real work and converging; exit 1 if anything was lost, duplicated or diverged."""
    _needs("dev")  # imported here: an optional extra
    from regionmesh.ops.demo import run_demo

    result = run_demo(root, tenants=tenants, per_tenant=per_tenant, chaos=chaos, console=console)
    for line in result.events:
        console.print(f"[yellow]chaos:[/] {line}", highlight=False)
    console.print(result.table)
    verdict = "[green]nothing lost, nothing duplicated, all regions identical[/]" if result.ok else (
        f"[red]lost {result.lost}, duplicated {result.duplicated}, identical={result.identical}[/]")
    console.print(f"{verdict} ({result.seconds:.0f}s). The mesh keeps running: 'regionmesh dev status', "
                  "'regionmesh replication status', 'regionmesh dev down'.")
    if not result.ok:
        sys.exit(1)
