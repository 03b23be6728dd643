"""The console's web application: routes, the login and CSRF checks, security headers.

Sync endpoints (Starlette runs them in its thread pool) because the repository is synchronous.
Every page is a Jinja2 template with autoescaping on: a tenant id or a dead letter's reason holding
HTML is shown as text. The Content-Security-Policy allows scripts and styles from this origin only,
so even a value that escaped escaping could not run.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from regionmesh.config import MeshConfig
from regionmesh.models.engine import engine_for
from regionmesh.ops.console import actions, auth, dag, timeline, trends, views
from regionmesh.ops.console.auth import Decision, Identity, Policy

HERE = Path(__file__).resolve().parent
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it a browser sends 'Origin: null' with a form post, which the origin
    # check refuses; same-origin keeps the console's URLs from other sites and the Origin intact.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DEFAULT_REFRESH_S = 5


def template_env() -> Environment:
    """The pages' templates, autoescaped whatever their name (an .svg or .txt one too)."""
    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))


@dataclass
class State:
    console: views.Console
    policy: Policy
    refresh_s: int = DEFAULT_REFRESH_S
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    runtimes: dict[str, Any] = field(default_factory=dict)
    templates: Environment = field(default_factory=lambda: template_env())
    history: trends.History | None = None
    prometheus: trends.Prometheus | None = None


def _headers(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def _refused(decision: Decision) -> Response:
    if decision is Decision.CHALLENGE:
        return _headers(HTMLResponse("login required", status_code=401,
                                     headers={"WWW-Authenticate": f'Basic realm="{auth.REALM}", charset="UTF-8"'}))
    return _headers(HTMLResponse(
        '<!doctype html><title>refused</title><p id="refused">Cancel and retry need the operator login: '
        '<a href="/login">log in</a>, then go back to the run.</p>', status_code=403))


def _who(request: Request, *, act: bool = False) -> Identity | Response:
    st: State = request.app.state.console
    identity = auth.identify(st.policy, request.headers.get("authorization"))
    decision = auth.decide(identity, act=act)
    if decision is not Decision.ALLOW or identity is None:
        return _refused(decision)
    return identity


def _page(request: Request, template: str, identity: Identity, status: int = 200, **context: Any) -> Response:
    st: State = request.app.state.console
    c = st.console
    html = st.templates.get_template(template).render(
        region=c.region, zone=c.zone, mesh=c.config.name, lag=views.view_lag(c), user=identity.user,
        may_act=identity.may_act, actions_configured=st.policy.operator is not None,
        csrf=auth.csrf_token(st.secret, identity.user), refresh_s=st.refresh_s, dag=dag, timeline=timeline,
        path=request.url.path,
        **context)
    return _headers(HTMLResponse(html, status_code=status))


def runs_list(request: Request) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    data = views.runs_list(request.app.state.console.console, dict(request.query_params))
    return _page(request, "runs.html", who, **data)


def _run_id(request: Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.path_params["run_id"])
    except ValueError:
        return None


def run_detail(request: Request) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    run_id = _run_id(request)
    data = None if run_id is None else views.run_page(request.app.state.console.console, run_id)
    if data is None:
        return _page(request, "missing.html", who, status=404, run_id=request.path_params["run_id"])
    message = request.query_params.get("message")
    return _page(request, "run.html", who, run_id=run_id, message=message, **data)


async def run_action(request: Request) -> Response:
    """POST /runs/{id}/{action}: operator login, same origin, the page's CSRF token; then the action."""
    who = _who(request, act=True)
    if isinstance(who, Response):
        return who
    st: State = request.app.state.console
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    run_id = _run_id(request)
    action = request.path_params["action"]
    if not auth.same_origin(request.headers.get("origin"), request.headers.get("host")) \
            or not auth.csrf_ok(st.secret, who.user, form.get("csrf")):
        await run_in_threadpool(actions.record, st.console, user=who.user, action=action[:40],
                                target=request.path_params["run_id"][:80], tenant_id=None, acted_region=None,
                                outcome="refused", detail="the form's CSRF token or origin did not match")
        return _headers(HTMLResponse("refused: the form's CSRF token or origin does not match; reload the run page",
                                     status_code=403))
    if run_id is None or action not in actions.ACTIONS:
        return _headers(HTMLResponse("no such action", status_code=404))
    _done, message = await run_in_threadpool(actions.act, st.console, action, run_id, who.user, st.runtimes)
    return _headers(RedirectResponse(f"/runs/{run_id}?{urlencode({'message': message})}", status_code=303))


def mesh(request: Request) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    return _page(request, "mesh.html", who, **views.mesh_page(request.app.state.console.console))


def tenants(request: Request) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    return _page(request, "tenants.html", who, **views.tenants_page(request.app.state.console.console))


def audit(request: Request) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    return _page(request, "audit.html", who, **views.audit_page(request.app.state.console.console))


def trends_page(request: Request) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    st: State = request.app.state.console
    return _page(request, "trends.html", who, **views.trends_page(st.history, st.prometheus))


def login(request: Request) -> Response:
    """Asks for the operator login (a viewer's is not enough), then goes back to ``next``: the way
    to log in where pages are open, so the browser sends the login with later actions."""
    st: State = request.app.state.console
    identity = auth.identify(st.policy, request.headers.get("authorization"))
    if identity is None or not identity.may_act:  # anyone else is asked, a viewer too (to switch)
        return _refused(Decision.CHALLENGE)
    target = request.query_params.get("next", "/")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"  # never a redirect off the console
    return _headers(RedirectResponse(target, status_code=303))


def static(request: Request) -> Response:
    who = _who(request)
    if isinstance(who, Response):
        return who
    name = request.path_params["name"]
    if name not in STATIC:
        return _headers(HTMLResponse("not found", status_code=404))
    return _headers(FileResponse(HERE / "static" / name, media_type=STATIC[name]))


def create_app(config: MeshConfig, policy: Policy, *, refresh_s: int = DEFAULT_REFRESH_S,
               prometheus_url: str | None = None) -> Starlette:
    """The console for ``config``'s local region (the engine is made once, here). Its plots come
    from ``prometheus_url`` when given, else from the bounded history ``State.history`` (filled by
    :func:`start_sampling`)."""
    app = Starlette(routes=[
        Route("/", runs_list),
        Route("/runs", runs_list),
        Route("/runs/{run_id}", run_detail),
        Route("/runs/{run_id}/{action}", run_action, methods=["POST"]),
        Route("/mesh", mesh),
        Route("/tenants", tenants),
        Route("/audit", audit),
        Route("/trends", trends_page),
        Route("/login", login),
        Route("/static/{name}", static),
    ])
    console = views.Console(config, engine_for(config, config.local.name))
    history = None if prometheus_url else trends.History(lambda: views.trend_sample(console))
    app.state.console = State(console, policy, refresh_s=refresh_s, history=history,
                              prometheus=trends.Prometheus(prometheus_url, console.region) if prometheus_url else None)
    return app


def start_sampling(app: Starlette, every_s: float) -> threading.Event:
    """Sample the console's history every ``every_s`` seconds in a daemon thread (nothing with a
    Prometheus configured). Set the returned event to stop it."""
    stop = threading.Event()
    history = app.state.console.history
    if history is not None and every_s > 0:
        def loop() -> None:
            while not stop.is_set():
                history.sample()
                stop.wait(every_s)
        threading.Thread(target=loop, name="console-history", daemon=True).start()
    return stop


def serve(config: MeshConfig, policy: Policy, *, bind: str, port: int, refresh_s: int = DEFAULT_REFRESH_S,
          prometheus_url: str | None = None) -> None:
    """Serve the console until stopped (SIGINT or SIGTERM)."""
    app = create_app(config, policy, refresh_s=refresh_s, prometheus_url=prometheus_url)
    stop = start_sampling(app, max(refresh_s, 1))
    try:
        uvicorn.run(app, host=bind, port=port, log_level="warning", server_header=False, access_log=False)
    finally:
        stop.set()
