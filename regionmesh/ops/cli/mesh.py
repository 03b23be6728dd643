"""Schema and replication: ``migrate``, ``replication``, ``verify``, ``region add/resync``."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.table import Table

from regionmesh.ops.cli.base import DIR_OPTION, Context, _needs, cli, console, err_console, pass_ctx
from regionmesh.replication.join import add_region
from regionmesh.replication.setup import setup
from regionmesh.replication.status import acknowledge, mesh_status
from regionmesh.replication.verify import verify as run_verify


# -- schema -----------------------------------------------------------------
@cli.command()
@click.option("--check", is_flag=True, help="Only report revisions and compatibility; change nothing.")
@click.option("--plan", "show_plan", is_flag=True, help="Print what migrate will do, in which region, in which order; change nothing.")
@pass_ctx
def migrate(ctx: Context, check: bool, show_plan: bool) -> None:
    """Upgrade every region of a running mesh to the head revision: apply paused everywhere, the
    DDL and conflict-trigger regeneration in each region, new tables published, apply resumed."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.migrate import check_compatible, head, plan, revisions, upgrade_live

    if show_plan:
        steps = plan(ctx.config)
        if not steps:
            console.print(f"every region is at head ({head()}): nothing to do")
        for step in steps:
            console.print(f"{step.order}. [{step.region}] {step.action}", highlight=False)
        return
    table = Table(title=f"schema revisions (head {head()})")
    for col in ("region", "before", "after"):
        table.add_column(col)
    if check:
        revs = revisions(ctx.config)
        check_compatible(revs)
        for name, rev in revs.items():
            table.add_row(name, rev or "(empty)", rev or "(empty)")
    else:
        report = upgrade_live(ctx.config, say=lambda line: console.print(line, highlight=False))
        for r in report.regions:
            table.add_row(r.region, r.before or "(empty)", r.after or "(empty)")
    console.print(table)


# -- replication ------------------------------------------------------------
@cli.group()
def replication() -> None:
    """Full-mesh logical replication: setup and status."""


@replication.command("setup")
@pass_ctx
def replication_setup(ctx: Context) -> None:
    """Publication in every region, a subscription from every region to every peer. Idempotent."""

    table = Table(title="replication links")
    for col in ("subscription", "from", "to", "result"):
        table.add_column(col)
    for link in setup(ctx.config):
        table.add_row(link.subscription, link.publisher, link.subscriber, link.result)
    console.print(table)


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n:.1f} TB"


@replication.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.option("--error-window", "error_window", type=float, default=30.0, show_default=True,
              envvar="REGIONMESH_STATUS_ERROR_WINDOW_S", show_envvar=True,
              help="A link whose apply error count grew within this many seconds is erroring.")
@pass_ctx
def replication_status(ctx: Context, as_json: bool, error_window: float) -> None:
    """The from -> to matrix: lag seconds and bytes, retained WAL, state, errors. Exit 1 if any link is down."""


    links, probes = mesh_status(ctx.config, error_window_s=error_window)
    if as_json:
        click.echo(json.dumps({
            "links": [link.as_dict() for link in links],
            "conflicts": {r: p.get("conflicts", {}) for r, p in probes.items()},
        }, indent=2, default=str))
    else:
        table = Table(title="replication: from -> to")
        for col in ("from", "to", "state", "lag s", "lag bytes", "retained WAL", "slot", "errors"):
            table.add_column(col)
        for link in links:
            table.add_row(
                link.publisher, link.subscriber,
                "[green]streaming[/]" if link.ok else f"[red]{link.problem}[/]",
                "-" if link.lag_seconds is None else f"{link.lag_seconds:.2f}",
                _fmt_bytes(link.lag_bytes), _fmt_bytes(link.retained_bytes), link.wal_status or "-",
                str(link.apply_errors),
            )
        console.print(table)
    if not all(link.ok for link in links):
        sys.exit(1)


@replication.command("acknowledge")
@click.argument("subscriber")
@click.option("--from", "publisher", required=True, help="The publishing region of the flagged link.")
@pass_ctx
def replication_acknowledge(ctx: Context, subscriber: str, publisher: str) -> None:
    """Clear a link's "changes skipped" flag once 'regionmesh verify' shows the regions identical."""
    try:
        cleared = acknowledge(ctx.config, subscriber, publisher)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    console.print(f"{publisher} -> {subscriber}: " + ("flag cleared" if cleared else "nothing was flagged"))


@cli.command()
@click.option("--timeout", "timeout_s", type=float, default=30.0, show_default=True,
              help="Seconds to wait for replication to drain before comparing.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def verify(ctx: Context, timeout_s: float, as_json: bool) -> None:
    """Compare every replicated table across all regions (payload tables per zone); exit 0 iff each
    region holds exactly the rows it should and no payload row of a zone it is not in."""


    result = run_verify(ctx.config, timeout=timeout_s)
    if as_json:
        click.echo(json.dumps({
            "identical": result.identical, "drained": result.drained, "waited_s": result.waited_s,
            "compare_s": result.compare_s, "rows": result.rows, "differences": result.differences,
            "outside_zone": result.outside_zone,
        }, indent=2))
    else:
        if not result.drained:
            err_console.print(f"warning: replication did not drain within {timeout_s:g}s; comparing anyway")
        for table_name, diffs in result.differences.items():
            counts = ", ".join(f"{r}={n}" for r, n in result.rows[table_name].items())
            if not diffs:
                console.print(f"{table_name}: identical ({counts})")
                continue
            console.print(f"[red]{table_name}: {len(diffs)} differing key(s)[/] ({counts})")
            for key, per_region in list(diffs.items())[:50]:
                shown = ", ".join(f"{r}={'missing' if h is None else h[:8]}" for r, h in per_region.items())
                console.print(f"  {key}: {shown}", highlight=False)
        for table_name, breaches in result.outside_zone.items():
            for region_name, zones in breaches.items():
                held = ", ".join(f"{n} row(s) of zone {z}" for z, n in sorted(zones.items()))
                console.print(f"[red]{table_name}: {region_name} holds {held}, outside its zone[/]")
        console.print(f"compared in {result.compare_s:.2f}s after waiting {result.waited_s:.2f}s: "
                      + ("[green]identical[/]" if result.identical else "[red]DIFFERENT[/]"))
    if not result.identical:
        sys.exit(1)


@cli.group()
def region() -> None:
    """Regions of the mesh."""


def _admin_url_from(admin_url_env: str | None) -> str:
    """The superuser URL in the environment variable the operator named (never on the command line)."""
    admin_url = os.environ.get(admin_url_env) if admin_url_env else None
    if not admin_url:
        raise click.UsageError("--no-dev needs --admin-url-env naming a set environment variable")
    return admin_url


@region.command("add")
@click.argument("name")
@click.option("--seed", default=None, help="Existing region to copy the data from (default: the first).")
@click.option("--admin-url-env", default=None,
              help="Production: environment variable holding a superuser URL of the new region's database.")
@click.option("--dev/--no-dev", "dev_mode", default=True, show_default=True,
              help="In the local dev mesh (--dir) also start the region's servers.")
@DIR_OPTION
@pass_ctx
def region_add(ctx: Context, name: str, seed: str | None, admin_url_env: str | None, dev_mode: bool, root: str) -> None:
    """Join region NAME to the running mesh: schema, a copy from one peer, subscriptions both ways."""
    if dev_mode:
        _needs("dev")  # imported here: an optional extra
        from regionmesh.ops.devmesh import DevMesh

        report = DevMesh(root).add_region(name, seed=seed)
    else:
        _needs("server")  # imported here: an optional extra
        from regionmesh.ops.migrate import upgrade_all

        admin_url = _admin_url_from(admin_url_env)
        upgrade_all(ctx.config, regions=[name])
        peers = [r for r in ctx.config.regions if r != name]
        report = add_region(ctx.config, name, seed=seed or peers[0], new_admin_url=admin_url)
    console.print(f"region {report.region} joined from {report.seed}: {report.rows_copied} rows copied in {report.seconds:.1f}s")


@region.command("resync")
@click.argument("name")
@click.option("--from", "seed", required=True, help="The region whose copy is taken (it keeps running).")
@click.option("--admin-url-env", default=None,
              help="Production: environment variable holding a superuser URL of NAME's database.")
@click.option("--dev/--no-dev", "dev_mode", default=True, show_default=True,
              help="In the local dev mesh (--dir) take the superuser URL from it.")
@DIR_OPTION
@pass_ctx
def region_resync(ctx: Context, name: str, seed: str, admin_url_env: str | None, dev_mode: bool, root: str) -> None:
    """Rebuild region NAME (lost slots, lost data) from SEED while the others keep writing.
    Stop NAME's workers first; changes NAME made that no peer received are discarded."""
    if dev_mode:
        _needs("dev")  # imported here: an optional extra
        from regionmesh.ops.devmesh import DATABASE, DevMesh

        admin_url = DevMesh(root).admin_url(name, DATABASE)
    else:
        admin_url = _admin_url_from(admin_url_env)
    _needs("server")  # imported here: an optional extra (alembic, for a database that is gone)
    from regionmesh.ops.rebuild import rebuild

    report = rebuild(ctx.config, name, seed=seed, admin_url=admin_url,
                     say=lambda line: console.print(line, highlight=False))
    console.print(f"region {report.region} rebuilt from {report.seed}: dropped {', '.join(report.dropped) or 'nothing'}; "
                  f"{report.rows_copied} rows copied in {report.seconds:.1f}s. Check with 'regionmesh verify'.")
