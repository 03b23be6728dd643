"""Routing and the registry: ``route`` and ``tenants``."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from regionmesh.models.engine import engine_for
from regionmesh.models.fairness import shares as fair_shares
from regionmesh.models.registry import history as registry_history
from regionmesh.models.registry import list_entries
from regionmesh.ops.cli.base import Context, _engine_for, _needs, cli, console, pass_ctx
from regionmesh.replication.erasure import erase as erase_tenant
from regionmesh.replication.erasure import reenable as erasure_reenable
from regionmesh.replication.erasure import status as erasure_status
from regionmesh.routing.hashing import score
from regionmesh.routing.membership import with_mesh_zones
from regionmesh.routing.router import Router


# -- routing ----------------------------------------------------------------
@cli.command()
@click.argument("tenant")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def route(ctx: Context, tenant: str, as_json: bool) -> None:
    """Print TENANT's home region and why (hash, or registry row and epoch), as the local region sees it."""
    cfg = ctx.config
    via = cfg.local.name if cfg.local_region else next(iter(cfg.regions))
    engine = engine_for(cfg, via)
    placement = Router(engine, list(cfg.regions)).place(tenant)
    shares = fair_shares(engine, tenant)
    engine.dispose()
    if as_json:
        click.echo(json.dumps({"tenant": tenant, "home": placement.region, "reason": placement.reason,
                               "epoch": placement.epoch, "seen_from": via,
                               "scores": {r: score(tenant, r) for r in cfg.regions},
                               "shares": shares and {k: v for k, v in shares.items() if k != "updated_at"}},
                              default=str))
        return
    console.print(f"{tenant} -> {placement.region} ({placement.explain()}; seen from {via})")
    if shares is not None:
        console.print(f"  weight {shares['weight']:g}, concurrency {shares['max_running'] or '-'}, "
                      f"rate {shares['rate_per_s'] or '-'}/s (issue 22: tenants weight / limit)")


@cli.group()
def tenants() -> None:
    """The tenant registry: pins and moves override the hash."""


@tenants.command("pin")
@click.argument("tenant")
@click.argument("region_name")
@click.option("--note", default=None, help="Why (data residency, ...).")
@pass_ctx
def tenants_pin(ctx: Context, tenant: str, region_name: str, note: str | None) -> None:
    """Pin TENANT's new runs to REGION: written at the region that places it now, which stops first."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.failover import set_intent

    if region_name not in ctx.config.regions:
        raise click.BadParameter(f"unknown region {region_name!r}; known: {', '.join(ctx.config.regions)}")
    at, epoch = set_intent(ctx.config, tenant, region_name, "pin", note, _via(ctx))
    console.print(f"{tenant} pinned to {region_name} at epoch {epoch} (written at {at})")


@tenants.command("unpin")
@click.argument("tenant")
@pass_ctx
def tenants_unpin(ctx: Context, tenant: str) -> None:
    """Remove TENANT's pin: the hash places it again (the row stays, with a higher epoch)."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.failover import set_intent

    at, epoch = set_intent(ctx.config, tenant, None, "hash", "unpinned", _via(ctx))
    console.print(f"{tenant} unpinned at epoch {epoch} (written at {at})")


@tenants.command("move")
@click.argument("tenant")
@click.option("--to", "to_region", required=True, help="The new home region.")
@pass_ctx
def tenants_move(ctx: Context, tenant: str, to_region: str) -> None:
    """Move TENANT's new runs to TO: written at the region that places it now, which stops before TO
    starts (TO places it once the row has replicated to it); runs in flight finish where they are."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.failover import set_intent

    at, epoch = set_intent(ctx.config, tenant, to_region, "move", None, _via(ctx))
    console.print(f"{tenant} moved from {at} to {to_region} at epoch {epoch}")


@tenants.command("zone")
@click.argument("tenant")
@click.argument("zone")
@click.option("--wait", "wait_s", type=float, default=60.0, show_default=True, envvar="REGIONMESH_ZONE_WAIT_S",
              show_envvar=True, help="Seconds to wait for every region to apply the binding (0: do not wait).")
@pass_ctx
def tenants_zone(ctx: Context, tenant: str, zone: str, wait_s: float) -> None:
    """Bind TENANT to ZONE (a zone of the mesh: 'regionmesh zones list'): its runs are placed only in
    the zone's regions and their inputs and outputs are held only there. Written at the region that
    places it; then waits until every region has applied it. Exit status 1 when some region has not
    by the deadline (the binding stays written; it names them and what that means)."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.residency import bind_zone, wait_applied

    at, epoch = bind_zone(ctx.config, tenant, zone, _via(ctx))
    members = with_mesh_zones(ctx.config, at).zones.get(zone, ())
    console.print(f"{tenant} bound to zone {zone} ({', '.join(members)}) at epoch {epoch} (written at {at})")
    if wait_s <= 0:
        return
    done = wait_applied(ctx.config, tenant, zone, epoch, timeout=wait_s)
    if done.everywhere:
        console.print(f"applied in every region ({', '.join(done.applied)})")
        return
    missing = [f"{r} (not replicated there yet)" for r in done.pending]
    missing += [f"{r} (did not answer: {why})" for r, why in done.unreachable.items()]
    outside = [r for r in (*done.pending, *done.unreachable) if r not in members]
    console.print(f"[yellow]after {wait_s:g}s not applied in: {'; '.join(missing)}[/yellow]")
    if outside:
        console.print(f"Until they apply it, {', '.join(outside)} (outside the zone) may still accept {tenant}'s "
                      "submissions and forward them into the zone, keeping their input in the outbox; each drops "
                      "that input one reconciler pass after the binding arrives. Run this command again to wait "
                      "again (it binds the same zone at a new epoch).")
    raise SystemExit(1)


def _via(ctx: Context) -> str:
    cfg = ctx.config
    return cfg.local.name if cfg.local_region else next(iter(cfg.regions))


@tenants.command("history")
@click.argument("tenant")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def tenants_history(ctx: Context, tenant: str, as_json: bool) -> None:
    """Every change of TENANT's intent (epoch, home, reason, where it was written), and where it is
    placed now, as the local region sees it."""
    engine = _engine_for(ctx, None)
    rows = registry_history(engine, tenant)
    placement = Router(engine, list(ctx.config.regions)).place(tenant, fresh=True)
    if as_json:
        click.echo(json.dumps({"tenant": tenant, "history": rows, "intent": placement.intent,
                               "placed": placement.region, "reason": placement.reason}, default=str, indent=2))
        return
    table = Table(title=f"{tenant}: intent history")
    for col in ("epoch", "home", "reason", "note", "written in", "at"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["epoch"]), r["home_region"], r["reason"], r["note"] or "", r["written_in"], str(r["at"]))
    console.print(table)
    console.print(f"now: intent {placement.intent} ({placement.reason}), placed in {placement.region} "
                  f"({placement.explain()})")


@tenants.command("list")
@pass_ctx
def tenants_list(ctx: Context) -> None:
    """Registry rows (overrides) as the local region sees them."""

    engine = _engine_for(ctx, None)
    rows = list_entries(engine)
    table = Table(title="tenant registry")
    for col in ("tenant", "home", "reason", "epoch", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["tenant_id"], r["home_region"], r["reason"], str(r["epoch"]), r["note"] or "")
    console.print(table)


@tenants.command("erase")
@click.argument("tenant")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--status", "show_status", is_flag=True, help="Only show which regions have confirmed; exit 1 until all have.")
@click.option("--reenable", is_flag=True, help="Accept the erased tenant's submissions again (the receipt is kept).")
@click.option("--force", is_flag=True, help="With --reenable: even while a region has not confirmed the erasure.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def tenants_erase(ctx: Context, tenant: str, yes: bool, show_status: bool, reenable: bool, force: bool,
                  as_json: bool) -> None:
    """Remove every row of TENANT in every region through the delete rule (regions that are down
    erase when they return), keep a receipt (the tenant's SHA-256, time, regions confirmed), and
    refuse its submissions until --reenable."""
    cfg = ctx.config
    if show_status:
        result = erasure_status(cfg, tenant)
    elif reenable:
        result = erasure_reenable(cfg, tenant, _via(ctx), force=force)
    else:
        if not yes and not click.confirm(f"Erase every row of {tenant} in every region? This cannot be undone",
                                         default=False):
            raise click.Abort()
        result = erase_tenant(cfg, tenant, _via(ctx))
    if as_json:
        click.echo(json.dumps(result.as_dict(), default=str, indent=2))
    elif result.state == "none":
        console.print(f"no erasure receipt for this tenant (sha256 {result.tenant_hash[:16]}…)")
    else:
        console.print(f"receipt sha256 {result.tenant_hash}: {result.state} (epoch {result.epoch}), "
                      f"asked at {result.requested_at} in {result.requested_region}", markup=False)
        table = Table(title="erasure confirmations")
        for col in ("region", "confirmed at", "rows removed", "removed by this command"):
            table.add_column(col)
        for region in result.regions:
            c = result.confirmed.get(region)
            now = result.removed_now.get(region)
            table.add_row(region, str(c["confirmed_at"]) if c else
                          ("not yet (does not answer: erases when it returns)" if region in result.unreachable
                           else "not yet"), str(c["rows_removed"]) if c else "-",
                          ", ".join(f"{t} {n}" for t, n in now.items()) if now else "-")
        console.print(table)
        console.print("complete: every region confirmed" if result.complete
                      else f"waiting for {', '.join(result.pending)}")
    if show_status and not result.complete:
        sys.exit(1)
