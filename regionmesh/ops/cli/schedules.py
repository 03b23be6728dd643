"""``regionmesh schedules`` (a tenant's schedules: fired once per tick by the region that places it)
and ``regionmesh signal`` (a signal to a run's ``WaitFor`` step)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import click
from rich.table import Table

from regionmesh.ops.cli.base import Context, cli, console, pass_ctx
from regionmesh.workers import schedule_api as api
from regionmesh.workers.schedule_spec import tick_text


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is not JSON: {exc}") from None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (tick_text(v) if hasattr(v, "astimezone") else str(v) if isinstance(v, uuid.UUID) else
                [tick_text(t) for t in v] if k == "next" else v) for k, v in row.items()}


def _when(row: dict[str, Any]) -> str:
    if row["cron"] is not None:
        return f"cron {row['cron']} ({row['tz']})"
    return f"every {row['every_s']:g}s"


@cli.group()
def schedules() -> None:
    """A tenant's schedules: a workflow run per tick, fired once by the region that places the tenant."""


@schedules.command("add")
@click.argument("tenant")
@click.argument("name")
@click.option("--cron", default=None, help='A cron expression, e.g. "0 2 * * *" (read in --tz).')
@click.option("--every", default=None, help="An interval: 30s, 5m, 2h, 1d (ticks at multiples of it since 1970, UTC).")
@click.option("--tz", default="UTC", show_default=True, help="IANA time zone of --cron.")
@click.option("--workflow", required=True, help="The workflow each tick runs.")
@click.option("--input", "input_", default="{}", show_default=True, help="The run's input, a JSON object.")
@click.option("--overlap", type=click.Choice(["skip", "buffer-one", "allow"]), default="skip", show_default=True,
              help="A tick while the previous run still runs: dropped, the newest kept until it ends, or run.")
@click.option("--catch-up", "catch_up", type=click.Choice(["none", "latest", "all"]), default="latest",
              show_default=True, help="Ticks missed while no region could fire them: none, the newest, or all.")
@click.option("--jitter", "jitter_s", type=float, default=0.0, show_default=True,
              help="Delay each tick's firing by a fixed fraction of this many seconds (not its key).")
@pass_ctx
def schedules_add(ctx: Context, tenant: str, name: str, cron: str | None, every: str | None, tz: str, workflow: str,
                  input_: str, overlap: str, catch_up: str, jitter_s: float) -> None:
    """Create or replace TENANT's schedule NAME (written at --region, or in the tenant's zone)."""
    d = api.add_schedule(ctx.config, tenant, name, workflow=workflow, input=_json(input_, "--input"), cron=cron,
                         every=every, tz=tz, overlap=overlap, catch_up=catch_up, jitter_s=jitter_s, via=ctx.region)
    console.print(f"schedule {tenant}/{name}: {_when(d.__dict__)}, workflow {d.workflow}, overlap {d.overlap}, "
                  f"catch-up {d.catch_up}")


@schedules.command("list")
@click.argument("tenant", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def schedules_list(ctx: Context, tenant: str | None, as_json: bool) -> None:
    """TENANT's schedules (every tenant's without it), as --region's copy holds them."""
    rows = api.list_schedules(ctx.config, tenant, ctx.region)
    if as_json:
        click.echo(json.dumps([_plain(r) for r in rows], default=str))
        return
    table = Table("tenant", "name", "when", "workflow", "paused", "last tick", "fired in")
    for r in rows:
        table.add_row(r["tenant_id"], r["name"], _when(r), r["workflow"], "yes" if r["paused"] else "",
                      tick_text(r["last_tick"]) if r["last_tick"] else "-", r["fired_region"] or "-")
    console.print(table)


@schedules.command("show")
@click.argument("tenant")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def schedules_show(ctx: Context, tenant: str, name: str, as_json: bool) -> None:
    """One schedule, its tick state and its next fire times (UTC)."""
    row = _plain(api.show_schedule(ctx.config, tenant, name, ctx.region))
    if as_json:
        click.echo(json.dumps(row, default=str))
        return
    for k in ("tenant_id", "name", "workflow", "input", "overlap", "catch_up", "jitter_s", "paused", "note",
              "zone", "last_tick", "last_run_id", "buffered_tick", "fired_region", "fired_at"):
        console.print(f"{k}: {row[k]}", markup=False)
    console.print(f"when: {_when(row)}", markup=False)
    console.print("next: " + ", ".join(row["next"]), markup=False)


@schedules.command("pause")
@click.argument("tenant")
@click.argument("name")
@click.option("--note", default=None, help="Why (shown by list and show).")
@pass_ctx
def schedules_pause(ctx: Context, tenant: str, name: str, note: str | None) -> None:
    """Stop firing ticks (replicated: every region stops)."""
    api.set_paused(ctx.config, tenant, name, True, note, ctx.region)
    console.print(f"schedule {tenant}/{name} paused")


@schedules.command("resume")
@click.argument("tenant")
@click.argument("name")
@pass_ctx
def schedules_resume(ctx: Context, tenant: str, name: str) -> None:
    """Fire ticks again (ticks missed while paused follow the catch-up policy)."""
    api.set_paused(ctx.config, tenant, name, False, None, ctx.region)
    console.print(f"schedule {tenant}/{name} resumed")


@schedules.command("delete")
@click.argument("tenant")
@click.argument("name")
@pass_ctx
def schedules_delete(ctx: Context, tenant: str, name: str) -> None:
    """Delete the schedule; its ticks stop in every region."""
    api.delete_schedule(ctx.config, tenant, name, ctx.region)
    console.print(f"schedule {tenant}/{name} deleted")


@schedules.command("trigger")
@click.argument("tenant")
@click.argument("name")
@pass_ctx
def schedules_trigger(ctx: Context, tenant: str, name: str) -> None:
    """Submit one run of the schedule now (a run of its own, not a tick)."""
    run_id = api.trigger(ctx.config, tenant, name, ctx.region)
    console.print(f"submitted run {run_id}")


@cli.command("signal")
@click.argument("tenant")
@click.argument("run")
@click.argument("name")
@click.option("--key", default=None, help="Idempotency key: sending again with it is the same signal.")
@click.option("--payload", default="null", show_default=True, help="The signal's payload, JSON.")
@click.option("--run-key", "run_key", default=None,
              help="Name the run by the idempotency key it was submitted with (give RUN as '-').")
@pass_ctx
def signal(ctx: Context, tenant: str, run: str, name: str, key: str | None, payload: str,
           run_key: str | None) -> None:
    """Send signal NAME to TENANT's run RUN (a run id, or '-' with --run-key), through --region: idempotent
    by --key, buffered until the run's WaitFor step takes it."""
    if (run == "-") != (run_key is not None):
        raise click.UsageError("give RUN as a run id, or RUN '-' with --run-key")
    try:
        run_id = None if run == "-" else uuid.UUID(run)
    except ValueError:
        raise click.BadParameter(f"RUN {run!r} is not a run id (a UUID); name a run by its key with --run-key") from None
    rid, used = api.send_signal(ctx.config, tenant, run_id, name, payload=_json(payload, "--payload"), key=key,
                                idempotency_key=run_key, via=ctx.region)
    console.print(f"signal {name} to run {rid} sent (key {used})")
