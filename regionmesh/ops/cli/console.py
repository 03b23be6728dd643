"""``regionmesh console``: the operator's web console for one region."""

from __future__ import annotations

import click

from regionmesh.config import console_auth_from_env
from regionmesh.ops.cli.base import Context, _needs, cli, console, pass_ctx


@cli.command("console")
@click.option("--port", type=int, default=8420, show_default=True, envvar="REGIONMESH_CONSOLE_PORT", show_envvar=True)
@click.option("--bind", default="127.0.0.1", show_default=True, envvar="REGIONMESH_CONSOLE_BIND", show_envvar=True,
              help="Address to listen on. Anything but loopback needs $REGIONMESH_CONSOLE_AUTH (user:password).")
@click.option("--region", "region", default=None,
              help="The region whose database the console reads (default: the local region).")
@click.option("--refresh", "refresh_s", type=click.IntRange(0, 3600), default=5, show_default=True,
              help="Seconds between live updates of a page (0: none).")
@click.option("--prometheus", "prometheus_url", default=None, envvar="REGIONMESH_CONSOLE_PROMETHEUS", show_envvar=True,
              help="Base URL of a Prometheus scraping the mesh: the plots come from it (default: the console's "
                   "own bounded history).")
@pass_ctx
def console_cmd(ctx: Context, port: int, bind: str, region: str | None, refresh_s: int,
                prometheus_url: str | None) -> None:
    """Serve the web console (runs, their DAGs and attempts, the mesh, tenants) until stopped.

    Logins come from $REGIONMESH_CONSOLE_AUTH (may view) and $REGIONMESH_CONSOLE_OPERATOR_AUTH (may
    also cancel and retry), each user:password; actions always need the operator login."""
    _needs("server")  # imported here: optional extras
    _needs("console")
    from regionmesh.ops.console import serve
    from regionmesh.ops.console.auth import parse_login, policy_for

    if region is not None:
        ctx.region = region
    viewer, operator = console_auth_from_env()
    policy = policy_for(bind, parse_login(viewer, "REGIONMESH_CONSOLE_AUTH"),
                        parse_login(operator, "REGIONMESH_CONSOLE_OPERATOR_AUTH"))
    cfg = ctx.config
    console.print(f"console of {cfg.local.name} on http://{bind}:{port}/ "
                  f"({'login required' if not policy.open_reads else 'open to this host'}; "
                  f"actions {'need the operator login' if policy.operator else 'off'})", highlight=False)
    serve(cfg, policy, bind=bind, port=port, refresh_s=refresh_s, prometheus_url=prometheus_url)
