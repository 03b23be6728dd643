"""The console's pure parts: filters to SQL parameters, logins and CSRF, what is shown of a value,
the DAG layout, and that the templates escape what they are given."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest

from regionmesh.models.console import MAX_PAGE, RunFilter, runs_page_statement
from regionmesh.ops.console import auth, dag, filters, present, timeline, trends
from regionmesh.ops.console.app import template_env
from regionmesh.ops.console.auth import ConsoleAuthError, Decision, Login

RUN = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


# -- filters -> SQL --------------------------------------------------------------------------------
def test_a_filter_becomes_parameters_and_never_statement_text() -> None:
    hostile = "x' OR 1=1; DROP TABLE workflow_runs; --"
    sql_plain, _ = runs_page_statement(RunFilter())
    sql, params = runs_page_statement(RunFilter(tenant=hostile, workflow="etl", status="failed", owner_region="eu-west",
                                                since=T0, idempotency_key="k1", after=(T0, RUN), limit=10))
    assert sql == sql_plain  # one statement text for every filter: values are only parameters
    assert hostile not in sql
    assert params == {"tenant": hostile, "workflow": "etl", "status": "failed", "owner": "eu-west", "since": T0,
                      "until": None, "key": "k1", "after_at": T0, "after_id": RUN, "limit": 11}


@pytest.mark.parametrize(("asked", "fetched"), [(0, 2), (1, 2), (50, 51), (10_000, MAX_PAGE + 1)])
def test_a_page_fetches_one_row_more_than_it_shows_within_the_cap(asked: int, fetched: int) -> None:
    assert runs_page_statement(RunFilter(limit=asked))[1]["limit"] == fetched


def test_query_parameters_parse_into_a_filter_and_back() -> None:
    query = {"tenant": " acme ", "workflow": "etl", "status": "running", "owner": "us-east",
             "since": "2026-12-07T10:00", "until": "2026-12-08", "key": "order-7", "limit": "20"}
    parsed = filters.parse(query)
    assert parsed.problems == ()
    f = parsed.filter
    assert (f.tenant, f.workflow, f.status, f.owner_region, f.idempotency_key, f.limit) == \
        ("acme", "etl", "running", "us-east", "order-7", 20)
    assert f.since == T0 and f.until == datetime(2026, 12, 8, tzinfo=UTC)
    assert filters.parse(filters.query_of(f)).filter == f


@pytest.mark.parametrize(("query", "problem"), [
    ({"status": "<script>"}, "status: one of running, succeeded, failed, cancelled"),
    ({"since": "yesterday"}, "since: not a date or date-time (2026-12-07T10:00)"),
    ({"limit": "-3"}, f"limit: a whole number from 1 to {MAX_PAGE}"),
    ({"after": "nonsense"}, "after: not a page cursor"),
    ({"tenant": "t" * 201}, "tenant: longer than 200 characters"),
])
def test_a_bad_value_is_reported_and_left_out(query: dict[str, str], problem: str) -> None:
    parsed = filters.parse(query)
    assert parsed.problems == (problem,)
    assert parsed.filter == RunFilter()


def test_the_next_page_keeps_the_filters_and_carries_the_cursor() -> None:
    f = filters.parse({"tenant": "a&b=c", "status": "failed"}).filter
    nxt = filters.parse(dict(parse_qsl(filters.next_page(f, T0, RUN))))
    assert nxt.filter.after == (T0, RUN) and nxt.filter.status == "failed" and nxt.filter.tenant == "a&b=c"


# -- logins and CSRF -------------------------------------------------------------------------------
VIEWER, OPERATOR = Login("viewer", "v-pass"), Login("op", "o:pass")


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("bind", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("10.0.0.5", False), ("::", False), ("console.example.com", False),
])
def test_loopback(bind: str, loopback: bool) -> None:
    assert auth.is_loopback(bind) is loopback


def test_bound_beyond_loopback_without_a_login_it_refuses_to_start() -> None:
    with pytest.raises(ConsoleAuthError, match="refusing to serve on 0.0.0.0 without a login"):
        auth.policy_for("0.0.0.0", None, None)
    assert auth.policy_for("0.0.0.0", VIEWER, None).open_reads is False
    assert auth.policy_for("127.0.0.1", None, OPERATOR).open_reads is True
    assert auth.policy_for("127.0.0.1", VIEWER, OPERATOR).open_reads is False  # a viewer login, once set, is asked


@pytest.mark.parametrize("value", ["nopassword", ":x", "user:", ""])
def test_a_login_is_user_colon_password(value: str) -> None:
    if value == "":
        assert auth.parse_login(value, "V") is None
        return
    with pytest.raises(ConsoleAuthError, match="V must be 'user:password'"):
        auth.parse_login(value, "V")
    assert auth.parse_login("u:p:q", "V") == Login("u", "p:q")


def test_a_login_never_shows_its_password() -> None:
    assert "o:pass" not in repr(OPERATOR) and "o:pass" not in repr(auth.policy_for("::1", None, OPERATOR))


# (binding's policy, Authorization header, act?) -> decision
OPEN = auth.policy_for("127.0.0.1", None, OPERATOR)
CLOSED = auth.policy_for("0.0.0.0", VIEWER, OPERATOR)


@pytest.mark.parametrize(("policy", "hdr", "act", "decision"), [
    (OPEN, None, False, Decision.ALLOW),  # loopback, no viewer login: pages open
    (OPEN, None, True, Decision.FORBID),  # ... but an action needs the operator login (/login asks)
    (OPEN, header("op", "o:pass"), True, Decision.ALLOW),
    (OPEN, header("op", "wrong"), False, Decision.CHALLENGE),  # a wrong login is asked again, even where open
    (CLOSED, None, False, Decision.CHALLENGE),
    (CLOSED, header("viewer", "v-pass"), False, Decision.ALLOW),
    (CLOSED, header("viewer", "v-pass"), True, Decision.FORBID),  # a viewer may not act
    (CLOSED, header("op", "o:pass"), True, Decision.ALLOW),
    (CLOSED, header("viewer", "o:pass"), False, Decision.CHALLENGE),  # another user's password
    (CLOSED, "Bearer abc", False, Decision.CHALLENGE),
    (CLOSED, "Basic !!!notbase64", False, Decision.CHALLENGE),
    (auth.policy_for("127.0.0.1", None, None), header("op", "o:pass"), True, Decision.CHALLENGE),  # no operator set
])
def test_who_may_see_and_who_may_act(policy: auth.Policy, hdr: str | None, act: bool, decision: Decision) -> None:
    assert auth.decide(auth.identify(policy, hdr), act=act) is decision


def test_the_csrf_token_is_the_users_under_this_consoles_secret() -> None:
    secret, other = b"s" * 32, b"t" * 32
    token = auth.csrf_token(secret, "op")
    assert auth.csrf_ok(secret, "op", token)
    assert not auth.csrf_ok(secret, "viewer", token)
    assert not auth.csrf_ok(other, "op", token)  # a restarted console: reload the page
    assert not auth.csrf_ok(secret, "op", None) and not auth.csrf_ok(secret, "op", "")


@pytest.mark.parametrize(("origin", "host", "ok"), [
    (None, "127.0.0.1:8420", True), ("http://127.0.0.1:8420", "127.0.0.1:8420", True),
    ("https://evil.example", "127.0.0.1:8420", False), ("null", "127.0.0.1:8420", False),
])
def test_a_form_post_from_another_origin_is_refused(origin: str | None, host: str, ok: bool) -> None:
    assert auth.same_origin(origin, host) is ok


# -- what is shown of a value ----------------------------------------------------------------------
@pytest.mark.parametrize(("text", "shown"), [
    ("could not connect: postgresql://rm_app:s3cr3t@db:5432/rm", "could not connect: postgresql://rm_app:***@db:5432/rm"),
    ("redis://:hunter2@redis:6379/0 refused", "redis://:***@redis:6379/0 refused"),
    ("host=db password=s3cr3t dbname=rm", "host=db password=*** dbname=rm"),
    ("host=db password='a b' dbname=rm", "host=db password=*** dbname=rm"),
    ("connection refused", "connection refused"),
])
def test_secrets_in_error_texts_are_redacted(text: str, shown: str) -> None:
    assert present.redact(text) == shown


def test_payloads_are_capped() -> None:
    assert present.capped({"a": 1}) == ('{\n  "a": 1\n}', False)
    text, cut = present.capped("x" * 10_000)
    assert cut and len(text) == present.PAYLOAD_CAP


@pytest.mark.parametrize(("tenant", "zoned", "erased", "visible"), [
    ("acme", False, False, True), ("acme", True, False, False), ("acme", False, True, False), (None, False, False, False),
])
def test_a_dead_letters_body_is_shown_only_for_a_known_unzoned_live_tenant(
        tenant: str | None, zoned: bool, erased: bool, visible: bool) -> None:
    assert present.body_visible(tenant, zoned, erased) is visible


def test_a_zoned_runs_payload_is_shown_only_in_its_zone() -> None:
    assert present.payload_visible("", None) and present.payload_visible("eu", "eu")
    assert not present.payload_visible("eu", None) and not present.payload_visible("eu", "us")


# -- the DAG ----------------------------------------------------------------------------------------
def step(key: str, status: str, deps: tuple[str, ...] = (), map_over: str | None = None,
         tasks: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {"step_key": key, "status": status, "depends_on": list(deps), "map_over": map_over, "tasks": tasks or []}


def test_each_step_sits_one_column_right_of_its_deepest_dependency() -> None:
    assert dag.depths({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["a", "d"]}) == \
        {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3}
    assert dag.depths({"x": ["gone"]}) == {"x": 0}


def test_layout_of_a_map_step_shows_its_fan_out_and_where_its_tasks_ran() -> None:
    tasks = [{"status": "succeeded", "attempt": 1, "region": "us-east"},
             {"status": "running", "attempt": 2, "region": "eu-west"}, {"status": "queued", "attempt": 0, "region": None}]
    lay = dag.layout([step("extract", "succeeded"), step("transform", "running", ("extract",), "extract.items", tasks),
                      step("load", "waiting", ("transform",))])
    boxes = {b.key: b for b in lay.boxes}
    assert boxes["extract"].x < boxes["transform"].x < boxes["load"].x
    t = boxes["transform"]
    assert (t.fan_out, t.done, t.attempts, t.regions) == (3, 1, 2, ("eu-west", "us-east"))
    assert boxes["extract"].fan_out is None and boxes["extract"].colour == dag.COLOURS["succeeded"]
    assert len(lay.edges) == 2 and all(e.x1 < e.x2 for e in lay.edges)
    assert lay.width >= boxes["load"].x + dag.BOX_W


# -- the templates escape ---------------------------------------------------------------------------
def audit_row(evil: str) -> dict[str, object]:
    return {"id": RUN, "at": T0, "actor": evil, "action": evil, "target": evil, "tenant_id": evil,
            "console_region": evil, "acted_region": evil, "outcome": "refused", "detail": evil}


def test_the_templates_show_html_in_values_as_text() -> None:
    evil = "<script>alert('x')</script>"
    attempts = [attempt(evil, T0, T0 + timedelta(seconds=2), "failed", error=evil, region=evil)]
    env = template_env()
    lay = dag.layout([step(evil, "failed")])
    html = env.get_template("run.html").render(
        region="us-east", zone=None, mesh="m", lag={"peers": {}, "worst": None}, user="", may_act=False,
        actions_configured=True, csrf="t", refresh_s=0, dag=dag, path="/runs/x", run_id=RUN, message=evil,
        run={"tenant_id": evil, "workflow": evil, "status": "failed", "owner_region": "us-east", "epoch": 1,
             "created_at": T0, "finished_at": None, "idempotency_key": evil, "zone": ""},
        layout=lay, attempts=attempts, payload_shown=True, input=(evil, False), output=None, error=evil,
        step_errors={evil: evil}, timeline=timeline, timeline_layout=timeline.layout(attempts, T0 + timedelta(seconds=9)),
        audit=[audit_row(evil)])
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert html.count("<script") == 1  # the console's own script tag only


def test_the_command_refuses_to_bind_beyond_loopback_without_a_login(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from regionmesh.ops.cli import cli

    monkeypatch.delenv("REGIONMESH_CONSOLE_AUTH", raising=False)
    monkeypatch.delenv("REGIONMESH_CONSOLE_OPERATOR_AUTH", raising=False)
    res = CliRunner().invoke(cli, ["--config", "/nonexistent.toml", "console", "--bind", "0.0.0.0"])
    assert isinstance(res.exception, ConsoleAuthError) and res.exception.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without a login" in str(res.exception)


def test_the_audit_and_trends_pages_show_html_in_values_as_text() -> None:
    evil = "<script>alert('x')</script>"
    env = template_env()
    common = {"region": "us-east", "zone": None, "mesh": "m", "lag": {"peers": {}, "worst": None}, "user": "",
              "may_act": False, "actions_configured": True, "csrf": "t", "refresh_s": 0, "path": "/audit"}
    html = env.get_template("audit.html").render(actions=[audit_row(evil)], limit=200, **common)
    assert "<script>alert" not in html and html.count("<script") == 1
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    p = trends.plot(evil, evil, {evil: [(0.0, 1.0), (10.0, 2.0)]})
    html = env.get_template("trends.html").render(plots=[p], source="prometheus", source_error=evil, **common)
    assert "<script>alert" not in html and html.count("<script") == 1


# -- attempts' timeline ----------------------------------------------------------------------------
def attempt(key: str, start: datetime, end: datetime | None, outcome: str | None, *, error: str | None = None,
            region: str = "us-east", number: int = 1) -> dict[str, object]:
    return {"id": uuid.uuid4(), "task_id": uuid.uuid4(), "attempt": number, "region": region, "worker": "h:1",
            "epoch": 1, "started_at": start, "ended_at": end, "outcome": outcome, "step_key": key, "idx": None,
            "error": error}


def test_the_timeline_puts_each_attempt_on_one_time_axis_coloured_by_outcome() -> None:
    now = T0 + timedelta(seconds=10)
    bars = timeline.layout([
        attempt("a", T0, T0 + timedelta(seconds=2), "worker_lost", region="us-east"),
        attempt("a", T0 + timedelta(seconds=4), T0 + timedelta(seconds=6), "superseded", region="us-east", number=2),
        attempt("a", T0 + timedelta(seconds=6), None, None, region="eu-west", number=2),
    ], now).bars
    left = timeline.LABEL_W + timeline.PAD
    assert [b.x for b in bars] == [left, left + timeline.PLOT_W * 4 // 10, left + timeline.PLOT_W * 6 // 10]
    assert [b.w for b in bars] == [timeline.PLOT_W // 5, timeline.PLOT_W // 5, timeline.PLOT_W * 4 // 10]
    assert [b.outcome for b in bars] == ["worker_lost", "superseded", "running"]  # a running one reaches now
    assert [b.colour for b in bars] == [timeline.COLOURS["worker_lost"], timeline.COLOURS["superseded"],
                                        timeline.COLOURS[None]]
    assert [b.region for b in bars] == ["us-east", "us-east", "eu-west"]
    assert bars[1].label == "a #2" and bars[0].y < bars[1].y < bars[2].y


def test_an_empty_timeline_has_no_bars() -> None:
    assert timeline.layout([], T0).bars == ()


# -- trends ----------------------------------------------------------------------------------------
def test_a_plot_scales_every_series_into_its_box() -> None:
    p = trends.plot("lag", "s", {"eu-west": [(100.0, 0.0), (110.0, 2.0)], "ap-south": [(100.0, 4.0), (120.0, 1.0)]},
                    width=200, height=100)
    assert p.top == 4.0 and p.span_s == 20.0
    lines = {label: points for label, points, _ in p.lines}
    assert lines["eu-west"] == "0.0,100.0 100.0,50.0"
    assert lines["ap-south"] == "0.0,0.0 200.0,75.0"
    assert dict(p.latest) == {"eu-west": 2.0, "ap-south": 1.0}
    assert trends.plot("x", "", {}).lines == ()


def test_rates_of_a_counter_between_samples() -> None:
    assert trends.rates([(0.0, 10.0), (2.0, 30.0), (4.0, 5.0), (4.0, 9.0)]) == [(2.0, 10.0), (4.0, 0.0)]


def test_the_history_is_bounded_and_skips_failed_reads() -> None:
    values = iter([{"runs": 0, "attempts": 0, "queued": 1, "oldest_s": 0.5, "lag": {"eu-west": 0.2}},
                   RuntimeError("database down"),
                   {"runs": 10, "attempts": 40, "queued": 3, "oldest_s": 2.0, "lag": {"eu-west": 1.2}},
                   {"runs": 30, "attempts": 80, "queued": 0, "oldest_s": 0.0, "lag": {"eu-west": 0.1}}])

    def read() -> dict[str, object]:
        v = next(values)
        if isinstance(v, Exception):
            raise v
        return v

    history = trends.History(read, max_samples=2)
    for t in (0.0, 1.0, 2.0, 4.0):
        history.sample(now=t)
    assert len(history) == 2  # the failed read left a gap; the oldest sample fell out of the bound
    lag, throughput, oldest, queued = history.plots()
    assert dict(throughput.latest) == {"runs": 10.0, "attempts": 20.0}
    assert dict(lag.latest) == {"eu-west": 0.1} and dict(queued.latest) == {"queued": 0.0}
    assert oldest.top == 2.0


def test_prometheus_series_are_read_from_query_range(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    body = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"from": "eu-west"}, "values": [[1000, "0.5"], [1010, "1.5"]]}]}}

    class Reply:
        def __enter__(self) -> Reply:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self, *args: object) -> bytes:
            import json
            return json.dumps(body).encode()

    def fake_urlopen(url: str, timeout: float) -> Reply:
        asked.append(url)
        return Reply()

    monkeypatch.setattr(trends, "urlopen", fake_urlopen)
    prom = trends.Prometheus("http://prom:9090/", "us-east")
    series = prom.range(prom.queries()[0][2], "from", now=2000.0)
    assert series == {"eu-west": [(1000.0, 0.5), (1010.0, 1.5)]}
    assert asked[0].startswith("http://prom:9090/api/v1/query_range?query=max+by+%28from%29")
    assert "start=1100.0" in asked[0] and "end=2000.0" in asked[0]
