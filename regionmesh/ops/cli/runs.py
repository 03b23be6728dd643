"""Runs: ``submit``, ``submit-batch``, ``runs``, ``dead-letters``."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from regionmesh.batch import count_lines, run_ids, submit_batch
from regionmesh.client import submit as do_submit
from regionmesh.errors import RunNotFound
from regionmesh.models.residency import run_summary
from regionmesh.models.runs import dead_letters as fetch
from regionmesh.models.runs import get_run, list_runs, statuses, submission_fates
from regionmesh.ops.cli.base import Context, _engine_for, _needs, cli, console, pass_ctx
from regionmesh.replication.retention import prune
from regionmesh.routing.membership import with_mesh_zones
from regionmesh.workers.definitions import Registry


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
@click.option("--priority", type=click.Choice(["low", "normal", "high"]), default=None,
              help="Priority band (default: normal); used by fair dispatch.")
@pass_ctx
def submit(ctx: Context, tenant: str, workflow: str, input_: str, idempotency_key: str | None,
           to_region: str | None, wait_s: float, priority: str | None = None) -> None:
    """Submit a workflow run for TENANT; prints its run id."""

    data = _json_arg(input_)
    receipt = do_submit(tenant, workflow, data, idempotency_key, region=to_region, config=ctx.config,
                        priority=priority)
    console.print(f"run_id={receipt.run_id} submitted_to={receipt.region} home={receipt.home_region} "
                  f"submission_id={receipt.submission_id}")
    if wait_s > 0:
        run = _wait_for_run(ctx, receipt.region, receipt.run_id, wait_s)  # replicated: readable where submitted
        console.print(f"status={run['status'] if run else 'not found'}")
        if run is None or run["status"] != "succeeded":
            sys.exit(1)


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


@runs.command("submission")
@click.argument("submission_ids", nargs=-1, required=True)
@click.option("--region", "region", default=None, help="Read this region's copy (default: the local region).")
@pass_ctx
def runs_submission(ctx: Context, submission_ids: tuple[str, ...], region: str | None) -> None:
    """What became of each submission id: the run it created, the run it was found to duplicate,
    or its dead letter; 'no record' while this region has none (it may still be in a broker or an
    outbox, or not replicated here yet)."""

    engine = _engine_for(ctx, region)
    fates = submission_fates(engine, list(submission_ids))
    engine.dispose()
    table = Table(title="submissions")
    for col in ("submission", "became", "run", "region"):
        table.add_column(col)
    for sid in submission_ids:
        for outcome, run_id, where in fates[sid] or [("no record", None, "")]:
            table.add_row(sid, outcome, str(run_id or ""), where)
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
@click.option("--priority", type=click.Choice(["low", "normal", "high"]), default="low", show_default=True,
              help="Priority band of the batch's runs (a line's own priority wins); used by fair dispatch.")
@pass_ctx
def submit_batch_cmd(ctx: Context, file: Any, to_region: str | None, wait_s: float, priority: str) -> None:
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

        result = submit_batch(ctx.config, file, region=to_region, on_progress=advance, priority=priority)
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
    held_in = list(with_mesh_zones(ctx.config).zones.get(summary["zone"], ()))
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
