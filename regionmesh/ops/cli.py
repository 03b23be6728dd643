"""The ``regionmesh`` command line. Thin: parse, call one function, print."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from regionmesh.batch import count_lines, run_ids, submit_batch
from regionmesh.client import submit as do_submit
from regionmesh.config import DEFAULT_CONFIG_PATH, ENV_CONFIG, ENV_REGION, MeshConfig, load_config
from regionmesh.errors import RegionmeshError, RunNotFound
from regionmesh.extras import require
from regionmesh.models.engine import engine_for
from regionmesh.models.outbox import depth, rejected_count
from regionmesh.models.outbox import rejected as outbox_rejected
from regionmesh.models.registry import history as registry_history
from regionmesh.models.registry import list_entries
from regionmesh.models.residency import run_summary
from regionmesh.models.runs import dead_letters as fetch
from regionmesh.models.runs import get_run, list_runs, statuses
from regionmesh.replication.erasure import erase as erase_tenant
from regionmesh.replication.erasure import reenable as erasure_reenable
from regionmesh.replication.erasure import status as erasure_status
from regionmesh.replication.join import add_region
from regionmesh.replication.retention import prune
from regionmesh.replication.setup import setup
from regionmesh.replication.status import acknowledge, mesh_status
from regionmesh.replication.verify import verify as run_verify
from regionmesh.routing.hashing import score
from regionmesh.routing.router import Router
from regionmesh.workers.definitions import Registry

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
def dev_up(regions: str | None, n_workers: int, concurrency: int, flower: bool, metrics: bool, tls: bool, root: str) -> None:
    """Start (or reuse) every region's servers and workers, migrate, write the mesh file."""
    _needs("dev")  # imported here: an optional extra
    from regionmesh.ops.devmesh import DevMesh

    started = time.monotonic()
    mesh = DevMesh(root)
    wanted = [r.strip() for r in regions.split(",") if r.strip()] if regions else None
    config = mesh.up(wanted, workers=n_workers, concurrency=concurrency, flower=flower, metrics=metrics, tls=tls)
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
        for w in mesh.state.load()["regions"][name].get("workers", []):
            if w.get("name") == "flower":
                console.print(f"flower {name}: http://127.0.0.1:{w['port']} (user admin, password in {mesh.root}/secrets/flower)")
            if w.get("name") == "metrics":
                console.print(f"metrics {name}: http://127.0.0.1:{w['port']}/metrics")
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

        if not admin_url_env or not os.environ.get(admin_url_env):
            raise click.UsageError("--no-dev needs --admin-url-env naming a set environment variable")
        upgrade_all(ctx.config, regions=[name])
        peers = [r for r in ctx.config.regions if r != name]
        report = add_region(ctx.config, name, seed=seed or peers[0], new_admin_url=os.environ[admin_url_env])
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
        if not admin_url_env or not os.environ.get(admin_url_env):
            raise click.UsageError("--no-dev needs --admin-url-env naming a set environment variable")
        admin_url = os.environ[admin_url_env]
    _needs("server")  # imported here: an optional extra (alembic, for a database that is gone)
    from regionmesh.ops.rebuild import rebuild

    report = rebuild(ctx.config, name, seed=seed, admin_url=admin_url,
                     say=lambda line: console.print(line, highlight=False))
    console.print(f"region {report.region} rebuilt from {report.seed}: dropped {', '.join(report.dropped) or 'nothing'}; "
                  f"{report.rows_copied} rows copied in {report.seconds:.1f}s. Check with 'regionmesh verify'.")


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
    placement = Router(engine, list(cfg.regions), zones=cfg.zones).place(tenant)
    engine.dispose()
    if as_json:
        click.echo(json.dumps({"tenant": tenant, "home": placement.region, "reason": placement.reason,
                               "epoch": placement.epoch, "seen_from": via,
                               "scores": {r: score(tenant, r) for r in cfg.regions}}))
        return
    console.print(f"{tenant} -> {placement.region} ({placement.explain()}; seen from {via})")


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
@pass_ctx
def tenants_zone(ctx: Context, tenant: str, zone: str) -> None:
    """Bind TENANT to ZONE (a [zones] entry of the mesh file): its runs are placed only in the zone's
    regions and their inputs and outputs are held only there. Written at the region that places it."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.residency import bind_zone

    at, epoch = bind_zone(ctx.config, tenant, zone, _via(ctx))
    console.print(f"{tenant} bound to zone {zone} ({', '.join(ctx.config.zones[zone])}) at epoch {epoch} "
                  f"(written at {at})")


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


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def outbox(ctx: Context, as_json: bool) -> None:
    """Submissions waiting in each region's outbox for an unreachable home broker."""


    out: dict[str, dict[str, Any]] = {}
    for name in ctx.config.regions:
        engine = engine_for(ctx.config, name)
        try:
            n, oldest, per = depth(engine)
            out[name] = {"depth": n, "oldest_age_s": oldest, "by_target": per, "rejected": rejected_count(engine),
                         "latest_rejections": [
                             {"submission_id": r["submission_id"], "run_id": str(r["run_id"]), "tenant_id": r["tenant_id"],
                              "at": str(r["rejected_at"]), "reason": r["rejection"]}
                             for r in outbox_rejected(engine, 5)]}
        except Exception as exc:  # an unreachable region is reported, not fatal
            out[name] = {"error": str(exc).splitlines()[0]}
        finally:
            engine.dispose()
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    table = Table(title="outboxes")
    for col in ("region", "waiting", "oldest", "for", "rejected"):
        table.add_column(col)
    for name, o in out.items():
        if "error" in o:
            table.add_row(name, "?", "-", o["error"][:60], "?")
        else:
            age = "-" if o["oldest_age_s"] is None else f"{o['oldest_age_s']:.1f}s"
            table.add_row(name, str(o["depth"]), age, ", ".join(f"{k}={v}" for k, v in o["by_target"].items()),
                          str(o["rejected"]))
    console.print(table)
    for name, o in out.items():
        for r in o.get("latest_rejections", []):
            console.print(f"{name}: {r['tenant_id']} submission {r['submission_id']} (run {r['run_id']}): {r['reason']}",
                          markup=False)


@cli.group()
def metrics() -> None:
    """Prometheus metrics."""


@metrics.command("serve")
@click.option("--port", type=int, default=9808, show_default=True, envvar="REGIONMESH_METRICS_PORT", show_envvar=True)
@click.option("--host", default="127.0.0.1", show_default=True, envvar="REGIONMESH_METRICS_HOST", show_envvar=True)
@click.option("--multiproc-dir", default=None, envvar="PROMETHEUS_MULTIPROC_DIR", show_envvar=True,
              help="Where the region's workers write their samples.")
@pass_ctx
def metrics_serve(ctx: Context, port: int, host: str, multiproc_dir: str | None) -> None:
    """Serve the local region's metrics at http://HOST:PORT/metrics until stopped."""

    _needs("server")  # imported here: an optional extra
    from regionmesh.ops.metrics import serve

    serve(ctx.config, port, host, multiproc_dir)
    console.print(f"serving {ctx.config.local.name} metrics on http://{host}:{port}/metrics")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


# -- runs -------------------------------------------------------------------
def _json_arg(value: str) -> Any:

    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from exc


@cli.command()
@click.argument("tenant")
@click.argument("workflow")
@click.option("--input", "input_", default="{}", help="JSON object, or @file.json.")
@click.option("--key", "idempotency_key", default=None, help="Idempotency key (default: a new submission id).")
@click.option("--region", "--to", "to_region", default=None,
              help="Region whose broker receives it (default: the local region); it forwards to the tenant's home.")
@click.option("--wait", "wait_s", type=float, default=0, help="Wait up to this many seconds for the run to finish.")
@pass_ctx
def submit(ctx: Context, tenant: str, workflow: str, input_: str, idempotency_key: str | None,
           to_region: str | None, wait_s: float) -> None:
    """Submit a workflow run for TENANT; prints its run id."""

    data = _json_arg(input_)
    receipt = do_submit(tenant, workflow, data, idempotency_key, region=to_region, config=ctx.config)
    console.print(f"run_id={receipt.run_id} submitted_to={receipt.region} home={receipt.home_region} "
                  f"submission_id={receipt.submission_id}")
    if wait_s > 0:
        run = _wait_for_run(ctx, receipt.region, receipt.run_id, wait_s)  # replicated: readable where submitted
        console.print(f"status={run['status'] if run else 'not found'}")
        if run is None or run["status"] != "succeeded":
            sys.exit(1)


def _engine_for(ctx: Context, region: str | None) -> Any:

    cfg = ctx.config
    target = cfg.regions[region] if region else cfg.local
    return engine_for(cfg, target.name)


def _wait_for_run(ctx: Context, region: str, run_id: Any, timeout: float) -> dict[str, Any] | None:

    engine = _engine_for(ctx, region)
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        run = get_run(engine, run_id)
        if run is not None and run["status"] != "running":
            break
        time.sleep(0.2)
    engine.dispose()
    return run


@cli.group()
def runs() -> None:
    """Inspect, cancel and retry runs."""


def _run_uuid(value: str) -> Any:

    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a run id (UUID)") from exc


@runs.command("list")
@click.option("--tenant", required=True)
@click.option("--region", "region", default=None, help="Read this region's copy (default: the local region).")
@click.option("--limit", default=50, show_default=True)
@pass_ctx
def runs_list(ctx: Context, tenant: str, region: str | None, limit: int) -> None:
    """A tenant's newest runs, from one region's local copy."""

    engine = _engine_for(ctx, region)
    rows = list_runs(engine, tenant, limit)
    engine.dispose()
    table = Table(title=f"runs of {tenant}")
    for col in ("run", "workflow", "status", "owner", "epoch", "created"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["workflow"], r["status"], r["owner_region"], str(r["epoch"]), str(r["created_at"])[:19])
    console.print(table)


def _duration_s(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(value[:-1]) * units[value[-1]] if value[-1:] in units else float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: a number of seconds, or with s, m, h or d (30d)") from None


@runs.command("prune")
@click.option("--older-than", "older_than", required=True,
              help="Delete runs finished longer ago than this (30d, 12h, 90m, or seconds).")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for every region to hold the tombstones before removing them.")
@pass_ctx
def runs_prune(ctx: Context, older_than: str, timeout: float) -> None:
    """Delete finished runs (and their steps, tasks, attempts) everywhere through the delete rule:
    tombstones first, removed once every region holds them. Runs from the local region."""
    cfg = ctx.config
    via = cfg.local.name if cfg.local_region else next(iter(cfg.regions))
    report = prune(cfg, via, _duration_s(older_than), timeout=timeout)
    removed = ", ".join(f"{t} {n}" for t, n in report.removed.items())
    console.print(f"pruned {report.runs} runs from {via} in {report.seconds:.1f}s (removed: {removed or 'nothing'})")


@cli.command("submit-batch")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--region", "to_region", default=None, help="Region whose broker receives them (default: local).")
@click.option("--wait", "wait_s", type=float, default=0, help="Then wait up to this many seconds for the runs to finish.")
@pass_ctx
def submit_batch_cmd(ctx: Context, file: Any, to_region: str | None, wait_s: float) -> None:
    """Submit every line of a JSONL file; rerunning the same file creates no duplicates."""


    total = count_lines(file)
    with Progress(TextColumn("submitting"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]:.0f}/s"), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("submit", total=total, rate=0.0)
        started = time.monotonic()

        def advance(n: int) -> None:
            progress.advance(task, n)
            done = progress.tasks[0].completed
            progress.update(task, rate=done / max(1e-6, time.monotonic() - started))

        result = submit_batch(ctx.config, file, region=to_region, on_progress=advance)
    table = Table(title=f"{len(result.submitted)} submitted in {result.seconds:.1f}s "
                        f"({len(result.submitted) / max(result.seconds, 1e-6):.0f}/s), {len(result.failures)} failed")
    for col in ("home region", "runs"):
        table.add_column(col)
    for home, n in sorted(result.per_home.items()):
        table.add_row(home, str(n))
    console.print(table)
    for number, reason in result.failures[:100]:
        console.print(f"[red]line {number}[/]: {reason}", highlight=False)
    if wait_s > 0 and result.submitted:
        engine = _engine_for(ctx, to_region)
        ids = run_ids(result)
        deadline = time.monotonic() + wait_s
        while True:
            seen = statuses(engine, ids)
            done = sum(1 for st, _ in seen.values() if st != "running")
            if done == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        engine.dispose()

        counts = Counter(st for st, _ in seen.values())
        console.print(f"finished {done}/{len(ids)}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        if done < len(ids) or counts.get("failed"):
            sys.exit(1)
    if result.failures:
        sys.exit(1)


@runs.command("show")
@click.argument("run_id")
@click.option("--region", "--in", "region", default=None,
              help="Read this region's local copy (default: the local region).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def runs_show(ctx: Context, run_id: str, region: str | None, as_json: bool) -> None:
    """A run, its steps and their tasks, from one region's local copy."""


    engine = _engine_for(ctx, region)
    run = get_run(engine, _run_uuid(run_id))
    summary = run_summary(engine, _run_uuid(run_id)) if run is None else None
    engine.dispose()
    if run is None and summary is not None:
        _show_summary(ctx, summary, as_json)
        return
    if run is None:
        raise RunNotFound(run_id)
    if as_json:
        click.echo(json.dumps(run, default=str, indent=2))
        return
    console.print(
        f"run {run['id']}  workflow={run['workflow']} tenant={run['tenant_id']} status={run['status']} "
        f"owner={run['owner_region']} epoch={run['epoch']}"
    )
    if run["error"]:
        console.print(f"error: {run['error']}", highlight=False)
    table = Table()
    for col in ("step", "status", "tasks", "attempts", "error"):
        table.add_column(col)
    for step in run["steps"]:
        tasks = step["tasks"]
        table.add_row(
            step["step_key"], step["status"], str(len(tasks)), str(max((t["attempt"] for t in tasks), default=0)),
            (step["error"] or "")[:80],
        )
    console.print(table)
    console.print(f"output: {json.dumps(run['output'])[:500]}", highlight=False)


def _show_summary(ctx: Context, summary: dict[str, Any], as_json: bool) -> None:
    """A zoned run seen from outside its zone: its metadata, and where its payload is held."""
    held_in = list(ctx.config.zones.get(summary["zone"], ()))
    if as_json:
        click.echo(json.dumps({**summary, "payload_held_in": held_in}, default=str, indent=2))
        return
    console.print(
        f"run {summary['run_id']}  workflow={summary['workflow']} tenant={summary['tenant_id']} "
        f"status={summary['status']} owner={summary['owner_region']} epoch={summary['epoch']}")
    table = Table()
    for col in ("step", "status"):
        table.add_column(col)
    for key, status in sorted(summary["steps"].items()):
        table.add_row(key, status)
    console.print(table)
    console.print(f"input, outputs and errors are held in zone {summary['zone']} only "
                  f"({', '.join(held_in) or 'no region of it in this mesh file'}): "
                  f"regionmesh runs show {summary['run_id']} --in {held_in[0] if held_in else '<region>'}",
                  highlight=False)


def _runtime(ctx: Context) -> Any:
    _needs("server")  # imported here: an optional extra
    from regionmesh.workers.app import create_app

    return create_app(ctx.config, registry=Registry()).rm


@runs.command("cancel")
@click.argument("run_id")
@pass_ctx
def runs_cancel(ctx: Context, run_id: str) -> None:
    """Cancel a running run (in its owner region: --region)."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.workers.lifecycle import cancel

    cancel(_runtime(ctx), _run_uuid(run_id))
    console.print(f"cancelled {run_id}")


@runs.command("retry")
@click.argument("run_id")
@pass_ctx
def runs_retry(ctx: Context, run_id: str) -> None:
    """Retry a failed run from its failed steps (in its owner region: --region)."""
    _needs("server")  # imported here: an optional extra
    from regionmesh.workers.lifecycle import retry

    n = retry(_runtime(ctx), _run_uuid(run_id))
    console.print(f"retrying {run_id}: {n} task(s) queued")


@cli.command("dead-letters")
@click.option("--limit", default=20, show_default=True)
@pass_ctx
def dead_letters(ctx: Context, limit: int) -> None:
    """Messages this region rejected, newest first, with the reason."""

    engine = _engine_for(ctx, None)
    rows = fetch(engine, limit)
    engine.dispose()
    table = Table(title=f"dead letters in {ctx.config.local.name}")
    for col in ("id", "received", "task", "tenant", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), str(r["received_at"])[:19], r["task_name"] or "-", r["tenant_id"] or "-", r["reason"])
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
        # The message is printed as it is: '[dev]' in an install line is not markup.
        err_console.print("error:", style="red", end=" ")
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
