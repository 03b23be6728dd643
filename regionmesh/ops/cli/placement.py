"""Placement operations and leases: ``failover``, ``drain``, ``restore``, ``fence``, ``lease``."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading

import click
from rich.table import Table

from regionmesh.ops.cli.base import Context, _needs, cli, console, err_console, pass_ctx
from regionmesh.workers.definitions import Registry


@cli.command()
@click.argument("from_region")
@click.option("--to", "to_region", required=True, help="The region that takes over (it must hold a lease).")
@click.option("--timeout", default=None, type=float, help="Seconds to wait for FROM's lease to expire "
              "(default: three lease promises).")
@click.option("--even-if-reachable", is_flag=True,
              help="FROM's database answers from here but it is cut off from its peers. Safe: the failover "
                   "still waits until FROM can hold no lease.")
@click.option("--override-dead-minority", is_flag=True,
              help="UNSAFE unless FROM is really dead: skip the majority rules (a two-region mesh split in two). "
                   "Waits only for TO's own promise; if any other region could still grant FROM a lease, two "
                   "regions may run the same tenants.")
@pass_ctx
def failover(ctx: Context, from_region: str, to_region: str, timeout: float | None, even_if_reachable: bool,
             override_dead_minority: bool) -> None:
    """FROM is down: once it can hold no lease, its tenants go to TO and TO adopts its unfinished runs."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.failover import failover as do_failover

    r = do_failover(ctx.config, from_region, to_region, timeout_s=timeout, even_if_reachable=even_if_reachable,
                    override_dead_minority=override_dead_minority,
                    progress=lambda line: err_console.print(line, markup=False, highlight=False))
    console.print(f"{r.from_region} failed over to {r.to_region} after {r.waited_s:.1f}s (region epoch "
                  f"{r.region_epoch}): {r.runs_adopted} runs adopted, {r.tasks_queued} tasks queued")


@cli.command()
@click.argument("region_name")
@click.option("--to", "to_region", required=True)
@pass_ctx
def drain(ctx: Context, region_name: str, to_region: str) -> None:
    """Stop placing runs in REGION: its tenants' new runs go to TO; runs in flight finish in REGION."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.failover import drain as do_drain

    epoch = do_drain(ctx.config, region_name, to_region)
    console.print(f"{region_name} draining to {to_region} (region epoch {epoch})")


@cli.command()
@click.argument("region_name")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds to wait for REGION to apply every placing peer's current WAL.")
@pass_ctx
def restore(ctx: Context, region_name: str, timeout: float) -> None:
    """REGION is back: once it has applied what its peers wrote, make it active again (written at the
    region that places its tenants now, which stops first)."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.failover import restore as do_restore

    r = do_restore(ctx.config, region_name, timeout_s=timeout)
    console.print(f"{r.region} restored (caught up with {', '.join(r.caught_up_with) or 'no peer'}; written at "
                  f"{r.written_at}); it works again once a majority grants it a lease")


@cli.command("fence")
@click.argument("region_name")
@click.option("--reason", required=True, help="Why; shown by 'lease status' and in the region's log.")
@pass_ctx
def fence_cmd(ctx: Context, region_name: str, reason: str) -> None:
    """Stop REGION from creating, claiming or completing anything until 'unfence'."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.failover import fence as do_fence

    changed = do_fence(ctx.config, region_name, reason)
    console.print(f"{region_name} fenced" + ("" if changed else " (it was already)"))


@cli.command("unfence")
@click.argument("region_name")
@pass_ctx
def unfence_cmd(ctx: Context, region_name: str) -> None:
    """Lower REGION's manual fence: it works again while it holds its lease."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.failover import unfence as do_unfence

    changed = do_unfence(ctx.config, region_name)
    console.print(f"{region_name} unfenced" + ("" if changed else " (it was not fenced)"))


@cli.group("lease")
def lease_group() -> None:
    """Each region's right to work."""


@lease_group.command("keep")
@click.option("--interval", default=None, type=float, help="Seconds between beats (default: the reconcile interval).")
@pass_ctx
def lease_keep(ctx: Context, interval: float | None) -> None:
    """Keep the local region's lease (beat, grant peers, hold) in the foreground until SIGTERM; for a
    region whose workers are down but whose peers need its vote. Workers run the same keeper."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.workers.app import create_app
    from regionmesh.workers.lease_keeper import LeaseLoop

    rt = create_app(ctx.config, registry=Registry()).rm
    loop = LeaseLoop(rt, interval or ctx.config.settings.reconcile_interval_s)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    loop.start()
    console.print(f"keeping {rt.region}'s lease (Ctrl-C to stop)")
    stop.wait()
    loop.stop()
    loop.join(timeout=5)


@lease_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def lease_status_cmd(ctx: Context, as_json: bool) -> None:
    """Per region: status, lease held and for how long, which regions granted it; exit 1 if one holds none."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.failover import lease_status

    rows = lease_status(ctx.config)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    else:
        table = Table(title="leases")
        for col in ("region", "status", "lease", "expires in", "granted by", "grants about it", "why not"):
            table.add_column(col)
        for r in rows:
            table.add_row(r.region, r.status, "held" if r.held else "-",
                          f"{r.remaining_s:.1f}s" if r.held and r.remaining_s is not None else "-",
                          ", ".join(r.granted_by) or "-",
                          ", ".join(f"{g}:{st}" for g, st in sorted(r.grants.items())) or "-", r.reason or "")
        console.print(table)
    if not all(r.held for r in rows):
        sys.exit(1)
