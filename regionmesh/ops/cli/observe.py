"""What an operator watches: ``outbox`` and ``metrics serve``."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import click
from rich.table import Table

from regionmesh.models.engine import engine_for
from regionmesh.models.outbox import depth, rejected_count
from regionmesh.models.outbox import rejected as outbox_rejected
from regionmesh.ops.cli.base import Context, _needs, cli, console, pass_ctx


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
