"""``regionmesh zones``: the mesh's zones (data residency), replicated, changeable while it runs."""

from __future__ import annotations

import json

import click
from rich.table import Table

from regionmesh.ops.cli.base import Context, _needs, cli, console, pass_ctx
from regionmesh.ops.zones import ZoneChange, list_zones, set_zone


def _via(ctx: Context) -> str:
    cfg = ctx.config
    return cfg.local.name if cfg.local_region else next(iter(cfg.regions))


def _report(change: ZoneChange) -> None:
    what = {"set": f"zone {change.zone}: {', '.join(change.regions)}", "unchanged": f"zone {change.zone}: unchanged",
            "removed": f"zone {change.zone} removed"}[change.outcome]
    console.print(f"{what} (epoch {change.epoch}, written at {change.written_at}); payload publications updated in "
                  f"{', '.join(change.published_in) or 'no region'}")
    if change.unreachable:
        console.print(f"[yellow]not reached: {', '.join(change.unreachable)}: run 'regionmesh replication setup' "
                      "once they are back, before binding tenants to the zone[/yellow]")


@cli.group()
def zones() -> None:
    """The mesh's zones: sets of regions that a bound tenant's runs and payloads never leave."""


@zones.command("set")
@click.argument("zone")
@click.argument("regions", nargs=-1, required=True)
@pass_ctx
def zones_set(ctx: Context, zone: str, regions: tuple[str, ...]) -> None:
    """Define ZONE as REGIONS on the running mesh (written at --region, replicated everywhere; running
    workers place with it as soon as their region applied it). Refused for a zone tenants are bound
    to, whose regions stay as they are."""
    _needs("server")
    _report(set_zone(ctx.config, zone, list(regions), _via(ctx)))


@zones.command("remove")
@click.argument("zone")
@pass_ctx
def zones_remove(ctx: Context, zone: str) -> None:
    """Remove ZONE (refused while tenants are bound to it)."""
    _needs("server")
    _report(set_zone(ctx.config, zone, [], _via(ctx)))


@zones.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def zones_list(ctx: Context, as_json: bool) -> None:
    """The zones as --region's copy holds them, with the tenants bound to each."""
    _needs("server")
    rows = list_zones(ctx.config, _via(ctx))
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table(title=f"zones at {_via(ctx)}")
    for col in ("zone", "regions", "bound tenants", "epoch", "written at"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["name"]), ", ".join(r["regions"]) or "(removed)", str(r["bound"]), str(r["epoch"]),
                      str(r["origin_region"]))
    console.print(table)
