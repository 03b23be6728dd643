"""Fair sharing (issue 22): ``tenants weight``, ``tenants limit``, ``tenants show``, ``tenants usage``."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from regionmesh.models import fairness as store
from regionmesh.models.engine import engine_for
from regionmesh.ops.cli.base import Context, console, pass_ctx
from regionmesh.ops.cli.tenants import _via, tenants
from regionmesh.routing.router import Router
from regionmesh.workers.fairness import parse_rate


def describe(row: dict[str, Any] | None) -> str:
    """``weight 3, concurrency 20, rate 50/s (burst 50)``; defaults when the tenant has no row."""
    if row is None:
        return "weight 1, no limits"
    parts = [f"weight {row['weight']:g}"]
    if row.get("max_running") is not None:
        parts.append(f"concurrency {row['max_running']}")
    if row.get("rate_per_s") is not None:
        parts.append(f"rate {row['rate_per_s']:g}/s (burst {row.get('burst') or 1})")
    return ", ".join(parts) + ("" if len(parts) > 1 else ", no limits")


@tenants.command("weight")
@click.argument("tenant")
@click.argument("weight", type=float)
@pass_ctx
def tenants_weight(ctx: Context, tenant: str, weight: float) -> None:
    """Set TENANT's share of its home region's worker time (default 1; 3 gets three times a 1's share
    while both wait). A replicated registry fact: every region, and the heir of a failover, use it."""
    if weight <= 0:
        raise click.BadParameter("the weight must be a positive number", param_hint="WEIGHT")
    via = _via(ctx)
    engine = engine_for(ctx.config, via)
    row = store.set_shares(engine, tenant, weight=weight)
    console.print(f"{tenant}: {describe(row)} (written at {via}, epoch {row['epoch']})")


@tenants.command("limit")
@click.argument("tenant")
@click.option("--concurrency", type=int, default=None, help="Tasks of the tenant running at once, mesh-wide.")
@click.option("--rate", default=None, help="Runs started per second or minute: 50/s, 600/min.")
@click.option("--burst", type=int, default=None, help="Runs that may start at once above the rate (default 1).")
@click.option("--clear", is_flag=True, help="Remove both limits.")
@pass_ctx
def tenants_limit(ctx: Context, tenant: str, concurrency: int | None, rate: str | None, burst: int | None,
                  clear: bool) -> None:
    """Set TENANT's concurrency cap and rate limit, checked where its tasks are taken (its home);
    changeable live. Only the limits given change."""
    changes: dict[str, Any] = {}
    if clear:
        changes = {"max_running": None, "rate_per_s": None, "burst": None}
    if concurrency is not None:
        if concurrency <= 0:
            raise click.BadParameter("must be a positive number of tasks", param_hint="--concurrency")
        changes["max_running"] = concurrency
    if rate is not None:
        try:
            changes["rate_per_s"] = parse_rate(rate)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rate") from exc
    if burst is not None:
        if burst <= 0:
            raise click.BadParameter("must be a positive number of runs", param_hint="--burst")
        changes["burst"] = burst
    if not changes:
        raise click.UsageError("give --concurrency, --rate, --burst or --clear")
    via = _via(ctx)
    row = store.set_shares(engine_for(ctx.config, via), tenant, **changes)
    console.print(f"{tenant}: {describe(row)} (written at {via}, epoch {row['epoch']})")


@tenants.command("show")
@click.argument("tenant")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def tenants_show(ctx: Context, tenant: str, as_json: bool) -> None:
    """TENANT's home, weight and limits as the local region's copy holds them."""
    via = _via(ctx)
    engine = engine_for(ctx.config, via)
    placement = Router(engine, list(ctx.config.regions)).place(tenant)
    row = store.shares(engine, tenant)
    if as_json:
        click.echo(json.dumps({"tenant": tenant, "home": placement.region, "epoch": placement.epoch,
                               "shares": row and {k: v for k, v in row.items() if k != "updated_at"},
                               "seen_from": via}, default=str))
        return
    console.print(f"{tenant} -> {placement.region} ({placement.explain()}; seen from {via})")
    console.print(f"  {describe(row)}")


@tenants.command("usage")
@click.option("--region", "region_name", default=None, help="The region to read (default: the local one).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def tenants_usage(ctx: Context, region_name: str | None, as_json: bool) -> None:
    """Per tenant in a region's fair dispatch: waiting and running tasks, runs started, worker time
    received (its share of the region's, against its weight's share), and the limit that held it back."""
    region = region_name or _via(ctx)
    if region not in ctx.config.regions:
        raise click.BadParameter(f"unknown region {region!r}; known: {', '.join(ctx.config.regions)}")
    rows = store.usage(engine_for(ctx.config, region), region)
    total_used = sum(float(r["used_s"]) for r in rows) or 1.0
    total_weight = sum(float(r["weight"]) for r in rows if r["waiting"] or r["running"]) or 1.0
    for r in rows:
        r["share"] = float(r["used_s"]) / total_used
        r["weight_share"] = float(r["weight"]) / total_weight if (r["waiting"] or r["running"]) else 0.0
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    table = Table("tenant", "waiting", "running", "started", "worker-s", "share", "weight", "limits", "held back by",
                  title=f"fair dispatch in {region}")
    for r in rows:
        limits = describe({"weight": r["weight"], "max_running": r["max_running"], "rate_per_s": r["rate_per_s"],
                           "burst": r["burst"]}).split(", ", 1)[1]
        held = f"{r['throttled_by']} ({r['throttled']}x)" if r["throttled_by"] else ""
        table.add_row(r["tenant_id"], str(r["waiting"]), str(r["running"]), str(r["started"]),
                      f"{float(r['used_s']):.1f}", f"{r['share']:.0%}",
                      f"{float(r['weight']):g} ({r['weight_share']:.0%} while waiting)", limits, held)
    console.print(table)
