"""The campaign's mutants (bench/mutants.py) still plant their bug in today's code: every SQL
rewrite matches the function's current text exactly once, and every Python patch replaces the
attribute it names. A mutant that silently plants nothing would let the checker pass unchallenged."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import mutants

ROOT = Path(__file__).resolve().parents[2]
SQL = "\n".join(p.read_text() for p in sorted((ROOT / "models" / "sql").glob("*.sql")))


def source_of(function: str) -> str:
    """The current text of ``function`` as models/sql defines it (for the conflict triggers: the
    template they are generated from)."""
    name = function.split("(")[0]
    if name.startswith("rm_conflict_upd_"):
        return (ROOT / "models" / "sql" / "conflicts.sql").read_text()
    match = re.search(rf"CREATE OR REPLACE FUNCTION {name}\(.*?\$\$;", SQL, flags=re.S)
    assert match, f"{name} is not defined in models/sql"
    return match.group(0)


SQL_PATCHES = [(m.name, p) for m in mutants.MUTANTS.values() for p in m.sql]


@pytest.mark.parametrize(("name", "patch"), SQL_PATCHES, ids=[f"{n}:{p.function}" for n, p in SQL_PATCHES])
def test_sql_mutant_matches_the_current_function_once(name: str, patch: mutants.SqlPatch) -> None:
    before = source_of(patch.function)
    after = mutants.rewrite(before, patch)
    assert after != before, name


def test_a_rewrite_that_no_longer_matches_fails_loudly() -> None:
    patch = mutants.SqlPatch("f()", r"NOT HERE", "x")
    with pytest.raises(ValueError, match="matches 0 times"):
        mutants.rewrite("SELECT 1", patch)


def test_every_mutant_names_a_rule_and_a_class_and_a_way_to_plant_it() -> None:
    assert len(mutants.MUTANTS) >= 8
    for m in mutants.MUTANTS.values():
        assert m.breaks and m.catches, m.name
        assert [bool(m.sql), m.python, m.unfilter].count(True) == 1, f"{m.name}: exactly one way to plant it"


def test_a_mutant_is_caught_by_its_class_or_one_that_shows_the_same_bug() -> None:
    m = mutants.MUTANTS["ack_without_run"]
    assert m.caught({"lost_submission"}) and m.caught({"lost_first_publish", "stuck"})
    assert not m.caught({"stuck"}) and not mutants.MUTANTS["release_before_commit"].caught({"stuck"})


def test_select() -> None:
    assert [m.name for m in mutants.select("no_lease_check, ack_without_run")] == ["no_lease_check", "ack_without_run"]
    # the matrix: every mutant a campaign can show; the others name the test that shows them
    assert [m.name for m in mutants.select("all")] == [m.name for m in mutants.MUTANTS.values() if not m.shown_by]
    assert mutants.select("erasure_lock_dropped")[0].shown_by
    with pytest.raises(ValueError, match="unknown mutant"):
        mutants.select("nope")


def test_worker_env_loads_the_patch_module_only_for_python_mutants() -> None:
    assert mutants.worker_env(None, "w") == {"REGIONMESH_WORKFLOWS": "w"}
    assert mutants.worker_env(mutants.MUTANTS["no_lease_check"], "w") == {"REGIONMESH_WORKFLOWS": "w"}
    env = mutants.worker_env(mutants.MUTANTS["ack_without_run"], "w")
    assert env == {"REGIONMESH_WORKFLOWS": f"w,{mutants.PATCH_MODULE}", mutants.ENV: "ack_without_run"}


PYTHON = [m.name for m in mutants.MUTANTS.values() if m.python]
# What each Python patch replaces, read back after the import (in a fresh interpreter: the patch
# must not leak into this test process).
REPLACED = {
    "keeper_expires_at_once": "regionmesh.workers.lease_keeper:promise_over",
    "reconciler_requeues_running": "regionmesh.workers.deadlines:DeadlineWatch.expired",
    "ack_without_run": "regionmesh.workers.lifecycle:accept",
    "outbox_forgets_sent": "regionmesh.models.outbox:put",
    "keeper_keeps_memory": "regionmesh.workers.lease_keeper:LeaseKeeper.took_lock",
    "outbox_forgets_duplicate": "regionmesh.models.outbox:put",
}


@pytest.mark.parametrize("name", PYTHON)
def test_python_mutant_replaces_what_it_names(name: str) -> None:
    module, _, attr = REPLACED[name].partition(":")
    probe = (f"import importlib, operator; m = importlib.import_module({module!r}); "
             f"get = operator.attrgetter({attr!r}); before = get(m); "
             f"import bench.mutant_patches; print(get(m) is not before)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={"RM_MUTANT": name, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_a_shown_by_test_exists() -> None:
    for m in mutants.MUTANTS.values():
        if m.shown_by:
            path, _, name = m.shown_by.partition("::")
            assert f"def {name}(" in (ROOT / path).read_text(), m.shown_by


def test_an_aimed_mutant_aims_the_fault_it_needs() -> None:
    """The campaign passes a mutant's ``aim`` to its own fault (and to no other)."""
    from bench.campaign.faults import KINDS, Faults
    from bench.campaign.record import Plan, Record

    seen: list[tuple[str, dict[str, object]]] = []

    def run(mutant: mutants.Mutant, kind: str) -> dict[str, object]:
        seen.clear()
        mesh = SimpleNamespace(dev=None, regions=["us-east", "eu-west", "ap-south"])
        faults = Faults(Plan.of(7, 1, 3, mutant), mesh, Record(lambda _: None), None)  # type: ignore[arg-type]
        for k in KINDS:
            setattr(faults, k, lambda *a, k=k, **kw: seen.append((k, {"args": a[1:], **kw})))
        faults.inject(kind, __import__("random").Random(0), 12.0)
        assert [k for k, _ in seen] == [kind]
        return seen[0][1]

    keeper = mutants.MUTANTS["keeper_keeps_memory"]
    assert run(keeper, "handover_failover") == {"args": (), "early_cut": True}
    assert run(keeper, "slow_commit") == {"args": ()}
    assert run(mutants.MUTANTS["lease_checked_at_start_only"], "slow_commit") == {"args": (), "mode": "claim", "cut": True}
    assert run(mutants.MUTANTS["outbox_forgets_duplicate"], "broker_cut") == {"args": (60.0,)}
    assert run(mutants.MUTANTS["outbox_forgets_duplicate"], "repl_cut") == {"args": (12.0,)}


def test_the_campaign_refuses_a_mutant_it_cannot_show(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.campaign.__main__ import main

    monkeypatch.setattr(sys, "argv", ["bench.campaign", "--seed", "7", "--mutant", "erasure_lock_dropped"])
    with pytest.raises(SystemExit, match="test_erasure_serializes"):
        main()
