"""The operator console in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium) against the shared three-region mesh, a real ``celery worker`` in us-east running the demo's
workflows, and ``regionmesh console`` started as its own process, as an operator would.

Screenshots of the pages land in a temporary folder printed at the start (``RM_CONSOLE_SHOTS`` names
another), as the tier's artefacts.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from regionmesh.client import submit
from regionmesh.models.engine import make_engine
from regionmesh.models.registry import set_home
from regionmesh.models.runs import record_dead_letter
from regionmesh.models.subscribing import set_subscription_enabled
from regionmesh.names import subscription_name
from regionmesh.replication.status import mesh_status
from regionmesh.testing.workflows import TEST_TABLES
from tests.conftest import Mesh
from tests.support.helpers import run_row, scalar, wait_finished, wait_until

pytestmark = pytest.mark.browser

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402 - after the skip when Selenium is missing

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
REGION = "us-east"
TENANTS = ("console-a", "console-b")
OPERATOR = ("oncall", "op-pass:with-colon")
REPO_ROOT = str(Path(__file__).resolve().parents[2])
WORKER_ENV = {
    "REGIONMESH_WORKFLOWS": "regionmesh.workers.examples,regionmesh.testing.workflows",
    "PYTHONPATH": REPO_ROOT,
    "REGIONMESH_RECONCILE_INTERVAL_S": "0.2",
    "REGIONMESH_REQUEUE_AFTER_S": "1",
}


@dataclass
class Site:
    mesh: Mesh
    engine: Engine
    base: str  # http://127.0.0.1:PORT
    driver: Any
    shots: Path

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def texts(self, css: str) -> list[str]:
        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css)]

    def submit(self, tenant: str, workflow: str, data: dict[str, Any], key: str | None = None) -> uuid.UUID:
        return submit(tenant, workflow, data, key, region=REGION, config=self.mesh.config).run_id


def wait_for_text(site: Site, needle: str, timeout: float, what: str) -> None:
    """Wait until the page shows ``needle``; on timeout, fail with the page and the console's log."""
    try:
        wait_until(lambda: needle in site.driver.page_source, timeout, what)
    except AssertionError as exc:
        log = (site.mesh.dev.root / "console.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"{exc}\npage: {site.driver.current_url}\n{site.driver.page_source[:3000]}\n"
                             f"console log:\n{log}") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _chromium() -> Any:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def site(mesh: Mesh) -> Iterator[Site]:
    engine = make_engine(mesh.config.regions[REGION].database_url, region=REGION)
    with engine.begin() as conn:
        conn.execute(text(TEST_TABLES))
    for tenant in TENANTS:
        set_home(engine, tenant, REGION, "pin", "console browser tests")
    worker = mesh.dev.start_worker(REGION, concurrency=2, extra_env=WORKER_ENV)
    shots = Path(os.environ.get("RM_CONSOLE_SHOTS") or tempfile.mkdtemp(prefix="rm-console-shots-"))
    shots.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {shots}")
    port = _free_port()
    log = open(mesh.dev.root / "console.log", "ab")  # noqa: SIM115 - the child owns it
    env = dict(os.environ, REGIONMESH_CONFIG=str(mesh.dev.mesh_file), REGIONMESH_REGION=REGION,
               REGIONMESH_CONSOLE_OPERATOR_AUTH=":".join(OPERATOR), PYTHONUNBUFFERED="1")
    env.pop("REGIONMESH_CONSOLE_AUTH", None)
    proc = subprocess.Popen([sys.executable, "-m", "regionmesh", "console", "--port", str(port), "--refresh", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    driver = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is not None or _answers(base + "/runs"), 30, "the console to answer")
        assert proc.poll() is None, (mesh.dev.root / "console.log").read_text()
        driver = _chromium()
        yield Site(mesh, engine, base, driver, shots)
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        mesh.dev.stop_worker(REGION, worker.name)
        engine.dispose()
        if os.environ.get("RM_CONSOLE_SHOTS_COPY"):
            shutil.copytree(shots, os.environ["RM_CONSOLE_SHOTS_COPY"], dirs_exist_ok=True)


@pytest.fixture(scope="module")
def demo_runs(site: Site) -> dict[str, Any]:
    """The demo's workflows (onboard, etl) for two tenants, each under its own idempotency key."""
    tag = uuid.uuid4().hex[:8]
    ids: dict[str, Any] = {
        "a-onboard-1": site.submit("console-a", "onboard", {"email": "a1@example.com"}, f"{tag}-a1"),
        "a-onboard-2": site.submit("console-a", "onboard", {"email": "a2@example.com"}, f"{tag}-a2"),
        "a-etl": site.submit("console-a", "etl", {"n": 3}, f"{tag}-a3"),
        "b-etl": site.submit("console-b", "etl", {"n": 4}, f"{tag}-b1"),
    }
    for run_id in ids.values():
        assert wait_finished(site.engine, run_id, 60)["status"] == "succeeded"
    return ids | {"tag": tag}


def test_the_runs_list_filters_on_the_server(site: Site, demo_runs: dict[str, Any]) -> None:
    site.open("/runs?tenant=console-a")
    assert set(site.texts("#runs td.tenant")) == {"console-a"}
    assert len(site.texts("#runs tr.run")) >= 3
    # The form: tenant and workflow together, as an operator types them.
    site.driver.find_element(By.ID, "f-workflow").send_keys("onboard")
    site.driver.find_element(By.ID, "f-apply").click()
    wait_until(lambda: "workflow=onboard" in site.driver.current_url, 10, "the filtered list")
    assert set(site.texts("#runs td.workflow")) == {"onboard"} and set(site.texts("#runs td.tenant")) == {"console-a"}
    site.shot("runs-filtered")
    # An idempotency key names one run.
    site.open(f"/runs?key={demo_runs['tag']}-b1")
    assert site.texts("#runs td.key") == [f"{demo_runs['tag']}-b1"]
    assert site.texts("#runs td.tenant") == ["console-b"]
    # Status and owner region: none of these runs failed.
    site.open("/runs?tenant=console-a&status=failed&owner=us-east")
    assert site.texts("#runs tr.run") == [] and site.driver.find_element(By.ID, "no-runs")
    # Pages of one: the next page is another run, of the same filter.
    site.open("/runs?tenant=console-a&workflow=onboard&limit=1")
    first = site.texts("#runs td.key")
    site.driver.find_element(By.ID, "next-page").click()
    wait_until(lambda: "after=" in site.driver.current_url, 10, "the next page")
    second = site.texts("#runs td.key")
    assert len(first) == len(second) == 1 and first != second
    assert set(first + second) == {f"{demo_runs['tag']}-a1", f"{demo_runs['tag']}-a2"}
    # A bad value is reported, not a failed page.
    site.open("/runs?status=<b>nope</b>")
    assert "ignored: status: one of running, succeeded, failed, cancelled" in site.driver.page_source


def test_a_run_page_draws_its_dag_and_the_region_of_each_attempt(site: Site, demo_runs: dict[str, Any]) -> None:
    run_id = demo_runs["b-etl"]
    site.open(f"/runs/{run_id}")
    steps = {g.get_attribute("data-step"): g for g in site.driver.find_elements(By.CSS_SELECTOR, "#dag g.step")}
    assert sorted(steps) == ["extract", "load", "transform"]
    assert {g.get_attribute("data-status") for g in steps.values()} == {"succeeded"}
    assert steps["transform"].get_attribute("data-fan-out") == "4"  # the map step over four items
    assert "map ×4 (4 done)" in steps["transform"].text
    regions = site.texts("#attempts td.attempt-region")
    tasks = int(scalar(site.engine, "SELECT count(*) FROM step_tasks WHERE run_id = :r", r=run_id))
    assert len(regions) >= tasks == 6 and set(regions) == {REGION}
    assert site.driver.find_element(By.ID, "run-owner").text == REGION
    assert '"n": 4' in site.driver.find_element(By.ID, "run-input").text
    site.shot("run-etl")


def _basic(login: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(login).encode()).decode()


def _get_status(url: str, login: tuple[str, str] | None) -> int:
    """The status of GET ``url`` (redirects followed) with ``login`` or none."""
    request = urllib.request.Request(url)
    if login:
        request.add_header("Authorization", _basic(login))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _post(url: str, data: bytes, login: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url, data=data, method="POST")
    if login:
        request.add_header("Authorization", _basic(login))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_an_action_works_only_with_the_operator_login_and_the_pages_token(site: Site) -> None:
    run_id = site.submit("console-a", "t_cancel", {"seconds": 15})
    wait_until(lambda: scalar(site.engine, "SELECT count(*) FROM step_tasks WHERE run_id = :r AND status = 'running'",
                              r=run_id), 20, "the slow step to start")
    site.open(f"/runs/{run_id}")
    site.driver.find_element(By.ID, "cancel").click()  # no login: refused, with where to log in
    wait_until(lambda: site.driver.find_elements(By.ID, "refused"), 10, "the refusal")
    assert run_row(site.engine, run_id)["status"] == "running"  # type: ignore[index]
    # Not from a browser: the operator's login without the page's token, or a viewer's guess, changes nothing.
    action = f"{site.base}/runs/{run_id}/cancel"
    assert _post(action, b"csrf=forged", OPERATOR) == 403
    assert _post(action, b"csrf=forged", ("oncall", "wrong")) == 401
    assert run_row(site.engine, run_id)["status"] == "running"  # type: ignore[index]
    # /login asks for the operator's login (a browser shows its prompt) and then goes back to the run.
    login = f"{site.base}/login?next=/runs/{run_id}"
    assert _get_status(login, None) == 401 and _get_status(login, ("oncall", "wrong")) == 401
    assert _get_status(login, OPERATOR) == 200
    # The browser sends the operator's login from now on (as it does once its prompt was answered;
    # headless Chromium has no prompt, so the header is set through the DevTools protocol).
    site.driver.execute_cdp_cmd("Network.enable", {})
    site.driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": _basic(OPERATOR)}})
    site.open(f"/runs/{run_id}")
    wait_for_text(site, "(operator)", 10, "the operator's login")
    site.driver.find_element(By.ID, "cancel").click()
    wait_for_text(site, "cancelled in us-east", 15, "the cancel's outcome")
    assert run_row(site.engine, run_id)["status"] == "cancelled"  # type: ignore[index]
    site.shot("run-cancelled")
    # Retry from failure: a run that failed for want of a flag succeeds once it is set and retried.
    failed = site.submit("console-a", "t_retry", {})
    assert wait_finished(site.engine, failed, 30)["status"] == "failed"
    with site.engine.begin() as conn:
        conn.execute(text("INSERT INTO test_flags VALUES (:n)"), {"n": str(failed)})
    site.open(f"/runs/{failed}")
    site.driver.find_element(By.ID, "retry").click()
    wait_for_text(site, "retrying in us-east: 1 task(s) queued", 15, "the retry's outcome")
    assert wait_finished(site.engine, failed, 30)["status"] == "succeeded"
    # Each attempt's end and outcome: the failed one with its error text, then the retried one.
    site.open(f"/runs/{failed}")
    wait_until(lambda: "succeeded" in site.texts("#attempts td.attempt-outcome"), 10, "the retried attempt's outcome")
    rows = site.driver.find_elements(By.CSS_SELECTOR, "#attempts tr.attempt")
    outcomes = [r.get_attribute("data-outcome") for r in rows]
    assert "failed" in outcomes and outcomes[-1] == "succeeded", outcomes
    failed_row = rows[outcomes.index("failed")]
    assert failed_row.find_element(By.CSS_SELECTOR, "td.attempt-error").text  # the handler's error, as text
    assert {b.get_attribute("data-outcome") for b in site.driver.find_elements(By.CSS_SELECTOR, "#timeline g.bar")} \
        >= {"failed", "succeeded"}
    site.shot("run-attempts")
    site.open(f"/runs/{run_id}")
    assert "cancelled" in site.texts("#attempts td.attempt-outcome")  # the slow step's attempt, cut short
    # The audit trail: both actions, and the forged post refused, by the operator's login, from us-east.
    site.open("/audit")
    rows = [r.text for r in site.driver.find_elements(By.CSS_SELECTOR, "#audit tr.audit-row")]
    assert any("cancel" in r and str(run_id) in r and "done" in r and "oncall" in r for r in rows), rows
    assert any("retry" in r and str(failed) in r and "done" in r for r in rows), rows
    assert any("cancel" in r and str(run_id) in r and "refused" in r and "CSRF" in r for r in rows), rows
    site.shot("audit")


def test_a_tenant_id_holding_html_renders_as_text(site: Site) -> None:
    """Submissions refuse such ids, but the registry (and a URL) can hold one: shown as text."""
    evil = 'evil<img src=x onerror="window.__pwned=5"><script>window.__pwned=6</script>'
    set_home(site.engine, evil, REGION, "pin", "<b>note</b>")
    site.open("/tenants")
    row = site.driver.find_element(By.CSS_SELECTOR, "#tenants tr[data-tenant^='evil']")
    assert evil in row.text and "<b>note</b>" in row.text
    site.open("/runs?" + urllib.parse.urlencode({"tenant": evil}))
    assert site.driver.find_element(By.ID, "f-tenant").get_attribute("value") == evil
    assert site.driver.execute_script("return window.__pwned === undefined")
    assert not site.driver.find_elements(By.CSS_SELECTOR, "main img, main b")
    with site.engine.begin() as conn:  # leave no stray tenant to the tiers after this one
        conn.execute(text("UPDATE tenant_registry SET deleted_at = clock_timestamp() WHERE tenant_id = :t"), {"t": evil})


def test_a_dead_letter_holding_script_renders_as_text(site: Site) -> None:
    reason = "bad input: <script>window.__pwned = 1</script>"
    tenant = "<b>console-b</b>"
    body = '{"note": "<script>window.__pwned = 2</script><img src=x onerror=\\"window.__pwned=3\\">"}'
    record_dead_letter(site.engine, region=REGION, task_name="regionmesh.submit", reason=reason,
                       submission_id=f"console-{uuid.uuid4()}", tenant_id=tenant, payload=body)
    letter = int(scalar(site.engine, "SELECT max(id) FROM dead_letters"))
    site.open("/mesh")
    row = site.driver.find_element(By.CSS_SELECTOR, f"#dead-letters tr.dead-letter[data-id='{letter}'][data-region='{REGION}']")
    assert row.find_element(By.CSS_SELECTOR, ".dl-reason").text == reason
    assert row.find_element(By.CSS_SELECTOR, ".dl-tenant").text == tenant
    assert "<script>window.__pwned = 2</script>" in row.find_element(By.CSS_SELECTOR, ".dl-body").text
    assert site.driver.execute_script("return window.__pwned === undefined")
    scripts = site.driver.find_elements(By.TAG_NAME, "script")
    assert [s.get_attribute("src") for s in scripts] == [f"{site.base}/static/console.js"]
    assert not site.driver.find_elements(By.CSS_SELECTOR, "#dead-letters img, #dead-letters b")
    site.shot("mesh")


def test_the_mesh_page_shows_every_region_and_link_and_updates_itself(site: Site) -> None:
    site.open("/mesh")
    regions = {e.get_attribute("data-region"): e.get_attribute("data-status")
               for e in site.driver.find_elements(By.CSS_SELECTOR, "#leases tr.region")}
    assert set(regions) == set(site.mesh.config.regions) and "unreachable" not in regions.values()
    cells = site.driver.find_elements(By.CSS_SELECTOR, "#links td.link")
    assert len(cells) == len(regions) * (len(regions) - 1)
    # Live updates: the page's content is fetched again and swapped in (the script runs under the CSP).
    wait_until(lambda: site.driver.find_element(By.TAG_NAME, "body").get_attribute("data-refreshed"), 15,
               "a live update of the page")
    assert "mesh" in site.driver.title.lower()


def _lag(site: Site, publisher: str, subscriber: str) -> float | None:
    """The lag in seconds the mesh page shows now for one link (the page updates itself)."""
    value = _link_cell(site, publisher, subscriber, "data-lag-s")
    return float(value) if value else None


def _link_cell(site: Site, publisher: str, subscriber: str, attribute: str | None = None) -> str:
    """One link cell's attribute (or text), "" while the page is being swapped under us."""
    try:
        cell = site.driver.find_element(By.CSS_SELECTOR, f"#links td.link[data-from='{publisher}'][data-to='{subscriber}']")
        return str((cell.get_attribute(attribute) if attribute else cell.text) or "")
    except (StaleElementReferenceException, NoSuchElementException):
        return ""


def test_the_mesh_page_shows_a_cut_links_lag_growing(site: Site) -> None:
    """us-east -> ap-south cut (its subscription disabled in ap-south): the page, left open, shows that
    link's lag in seconds growing and the link's problem, while the other links stay current."""
    admin = make_engine(site.mesh.dev.admin_url("ap-south", "regionmesh"), pool_size=1)
    link = subscription_name("ap-south", "us-east")
    site.open("/mesh")
    wait_until(lambda: (_lag(site, "us-east", "ap-south") or 99) < 3, 20, "the link to be current first")
    set_subscription_enabled(admin, link, False)
    try:
        first = wait_until(lambda: (lag := _lag(site, "us-east", "ap-south")) is not None and lag > 3 and lag, 30,
                           "the cut link's lag to pass 3 s on the open page")
        wait_until(lambda: (_lag(site, "us-east", "ap-south") or 0) > first + 2, 20, "the lag to keep growing")
        assert (_lag(site, "eu-west", "ap-south") or 99) < 3  # the other link into ap-south is current
        wait_until(lambda: "subscription disabled" in _link_cell(site, "us-east", "ap-south"), 10, "the link's problem")
        site.shot("mesh-cut-link")
    finally:
        set_subscription_enabled(admin, link, True)
        admin.dispose()
    wait_until(lambda: (_lag(site, "us-east", "ap-south") or 99) < 3, 60, "the link to catch up once restored")


def test_the_trends_page_plots_the_consoles_own_history(site: Site) -> None:
    """No Prometheus configured: the console samples every refresh (1 s here) and plots lag per peer,
    throughput and waiting work as inline SVG, updating itself."""
    site.open("/trends")

    def lag_lines() -> set[str]:
        try:
            fig = site.driver.find_element(By.CSS_SELECTOR, "figure.plot[data-title^='replication lag']")
            return {p.get_attribute("data-label") or "" for p in fig.find_elements(By.CSS_SELECTOR, "polyline.series")}
        except (NoSuchElementException, StaleElementReferenceException):
            return set()

    wait_until(lambda: lag_lines() == {"eu-west", "ap-south"}, 20, "a lag line per peer")
    titles = [f.get_attribute("data-title") for f in site.driver.find_elements(By.CSS_SELECTOR, "figure.plot")]
    assert any(t.startswith("throughput") for t in titles) and any(t.startswith("waiting") for t in titles)
    assert not site.driver.find_elements(By.CSS_SELECTOR, "script[src^='http'], link[href^='http'], img[src^='http']")
    site.shot("trends")


def test_the_tenants_page_says_where_and_why(site: Site, demo_runs: dict[str, Any]) -> None:
    site.open("/tenants")
    row = site.driver.find_element(By.CSS_SELECTOR, "#tenants tr[data-tenant='console-a']")
    assert row.find_element(By.CSS_SELECTOR, ".home").text == REGION
    assert "tenant registry: pin" in row.text
    site.shot("tenants")


def _cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REGIONMESH_CONFIG=str(site.mesh.dev.mesh_file))
    return subprocess.run([sys.executable, "-m", "regionmesh", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def _region_cells(site: Site, region: str) -> tuple[str, str]:
    """(status as its own database says, status in the console region's registry) of ``region``."""
    try:
        row = site.driver.find_element(By.CSS_SELECTOR, f"#leases tr.region[data-region='{region}']")
        return (row.get_attribute("data-status") or "",
                row.find_element(By.CSS_SELECTOR, "td.status-here").get_attribute("data-status-here") or "")
    except (NoSuchElementException, StaleElementReferenceException):
        return ("", "")


def test_the_mesh_page_shows_a_region_down_and_failed_over_instead_of_failing(site: Site) -> None:
    """ap-south's PostgreSQL stopped, then ap-south failed over to eu-west: the mesh page, left open,
    shows it unreachable and then failed over in us-east's registry, the other regions as they are;
    ap-south comes back and is restored (the mesh is left as the other tiers expect it)."""
    dev = site.mesh.dev
    site.open("/mesh")
    assert _region_cells(site, "ap-south") == ("active", "active")
    dev.stop_pg("ap-south")
    try:
        wait_until(lambda: _region_cells(site, "ap-south")[0] == "unreachable", 20, "ap-south unreachable")
        assert _region_cells(site, "us-east") == ("active", "active")
        # The failover waits out ap-south's lease as its peers granted it.
        wait_until(lambda: _cli(site, "failover", "ap-south", "--to", "eu-west").returncode == 0, 60, "the failover")
        wait_until(lambda: _region_cells(site, "ap-south") == ("unreachable", "failed_over"), 20,
                   "ap-south failed over on the page")
        assert "unreachable" in site.driver.find_element(By.CSS_SELECTOR, "#leases").text
        site.shot("mesh-failed-over")
    finally:
        dev.up()
    wait_until(lambda: _cli(site, "restore", "ap-south").returncode == 0, 90, "ap-south restored")
    wait_until(lambda: _region_cells(site, "ap-south") == ("active", "active"), 60, "ap-south active on the page")
    links = lambda: mesh_status(site.mesh.config)[0]  # noqa: E731
    wait_until(lambda: all(link.ok for link in links()), 60, "every link streaming again")
