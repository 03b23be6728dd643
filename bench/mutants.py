"""Mutants: deliberately broken builds the fault campaign must catch (issue 20).

A checker that never says no proves nothing. Each mutant below plants one bug a real regression
could produce, and names the violation class the campaign's checker must report for it. A mutant
is applied only inside the campaign's own mesh, never through a switch in shipped code:

- an SQL mutant rewrites one function as the database holds it (``pg_get_functiondef``) after
  ``migrate``; the rewrite is a regular expression that must match exactly once, so a refactor of
  the function makes the mutant fail loudly instead of silently planting nothing;
- a Python mutant is a monkeypatch in ``bench/mutant_patches.py``, loaded by the campaign's
  workers through their workflow modules (``REGIONMESH_WORKFLOWS``) with ``RM_MUTANT`` naming it;
- a mutant the campaign cannot show (it never does what the bug breaks) names the real-component
  test that shows it instead (``shown_by``), and ``--mutants all`` leaves it out;
- a publication mutant re-lists one per-destination publication's tables without their row
  filter (``unfilter``), in the first region of the campaign's zone, toward the first region
  outside it, once the zoned tenants are bound.

    python -m bench.campaign --mutant NAME ...      one mutant
    python -m bench.campaign --mutants all ...      the matrix
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

PATCH_MODULE = "bench.mutant_patches"
ENV = "RM_MUTANT"


@dataclass(frozen=True)
class SqlPatch:
    """Rewrite ``function`` (a regprocedure signature) by replacing ``pattern`` (a regular
    expression that must match once) with ``replacement``."""

    function: str
    pattern: str
    replacement: str


@dataclass(frozen=True)
class Mutant:
    name: str
    breaks: str  # the rule, in the words of the safety argument
    catches: str  # the checker's violation class that must fire (or one of ``or_else``)
    sql: tuple[SqlPatch, ...] = ()
    python: bool = False  # a monkeypatch in bench/mutant_patches.py, keyed by name
    needs: str = ""  # the campaign fault without which it cannot show
    # Classes that show the same bug where the campaign itself closes it later: a publish acked
    # without a run whose producer's re-send then created the run is a lost *first* publish.
    or_else: tuple[str, ...] = ()
    unfilter: bool = False  # drop the zone filter of one per-destination publication (see apply_unfilter)
    # How the campaign aims ``needs`` in this mutant's run: keyword arguments of that fault's method
    # (bench/campaign/faults.py), e.g. the ordering or cut that gives the planted bug its chance.
    aim: tuple[tuple[str, Any], ...] = ()
    # A mutant the campaign cannot show (it never does what the bug breaks): the real-component
    # test that shows it instead. ``select("all")`` leaves it out of the campaign's matrix.
    shown_by: str = ""

    def caught(self, classes: set[str] | frozenset[str]) -> bool:
        """Whether a verdict that reported ``classes`` caught this mutant."""
        return self.catches in classes or any(c in classes for c in self.or_else)


# Tables whose conflict trigger mutant 7 inverts (the ones a run's outcome lives in).
CONFLICT_TABLES = ("workflow_runs", "workflow_steps", "step_tasks")

_KEEP_OLDER = r"IF verdict = 1 THEN(\s+)RETURN NEW;(\s+)END IF;(\s+)RETURN NULL;"

MUTANTS: dict[str, Mutant] = {m.name: m for m in [
    Mutant("no_lease_check", "a region works only while it holds its lease (rm_may_work)",
           "lease_overrun",
           sql=(SqlPatch("rm_may_work()", r"SELECT NOT EXISTS .*?clock_timestamp\(\)\)", "SELECT true"),
                # the guarded transactions' check at the start and at the commit (0021)
                SqlPatch("rm_lease_left()", r"SELECT held_until .*?WHERE fenced\)", "SELECT interval '1 hour'")),
           needs="cutoff_failover"),
    Mutant("keeper_expires_at_once", "a grantor waits out its promise before it writes 'expired'",
           "lease_overrun", python=True, needs="cutoff_failover"),
    Mutant("completion_ignores_epoch", "a completion counts only at the run's current epoch in its owner",
           "stale_completion", or_else=("duplicate_effect",),
           sql=(SqlPatch("rm_complete_task(uuid,integer,jsonb)",
                         r"\s+AND r\.id = t\.run_id AND r\.owner_region = current_setting\('regionmesh\.region', true\)"
                         r" AND t\.epoch = r\.epoch",
                         "\n     AND r.id = t.run_id"),),
           needs="cutoff_failover"),
    Mutant("reconciler_requeues_running", "a running task is re-queued only after its deadline on two clocks",
           "overlap_in_region", python=True),
    Mutant("ack_without_run", "an acknowledged submission becomes a run, a duplicate or a dead letter",
           "lost_submission", python=True, or_else=("lost_first_publish",)),
    Mutant("outbox_forgets_sent", "a forwarded submission is kept until its run arrives",
           # A sent forward is lost only when the home's Redis loses it (a SIGKILL drops its last
           # second of writes); a broker cut makes the forward fail, which the outbox keeps anyway.
           "lost_submission", python=True, needs="redis_kill", or_else=("lost_first_publish",)),
    Mutant("conflict_keeps_older", "apply keeps the write with the higher (epoch, updated_at, origin)",
           # Two regions writing one row: a live cut-off region and its heir, until the heal.
           "divergence", needs="cutoff_failover",
           sql=tuple(SqlPatch(f"rm_conflict_upd_{t}()", _KEEP_OLDER,
                              r"IF verdict <> 0 THEN\1RETURN NEW;\2END IF;\3RETURN NULL;")
                     for t in CONFLICT_TABLES)),
    Mutant("zone_filter_dropped", "a zoned tenant's payload rows never leave its zone (per-destination row filters)",
           "residency", unfilter=True, needs=""),
    Mutant("keeper_keeps_memory", "a keeper that takes the lease lock (again) counts no promise from a grant it "
           "remembers (issue 21 item 1)",
           # With the victim cut from its heir long before the failover, only the third region's
           # promise holds the heir back; the worker that takes that region's lock back from the
           # keeper that granted last expires the victim at once from its memory of its own older grant.
           "lease_overrun", python=True, needs="handover_failover", aim=(("early_cut", True),)),
    Mutant("lease_checked_at_start_only", "a claim or completion commits only inside the lease: its last lease "
           "check is at its commit, and no lock wait outlasts the lease (issue 21 item 2, 0021)",
           # rm_guard_work still checks at the start (rm_may_work intact), but no longer bounds the
           # lock waits nor marks the transaction for rm_lease_at_commit, the deferred check.
           "lease_overrun",
           sql=(SqlPatch("rm_guard_work()",
                         r"PERFORM set_config\('lock_timeout'.*?PERFORM set_config\('regionmesh\.guarded', 'on', true\);",
                         ""),),
           needs="slow_commit", aim=(("mode", "claim"), ("cut", True))),
    Mutant("erasure_lock_dropped", "an erasure serializes with completions of the tenant's runs (issue 21 item 8, 0022)",
           # The campaign erases nothing: the test plants this in a real PostgreSQL. Since 0025 the
           # race of 0022 (the run's row held) no longer leaks without the lock (a completion ends
           # its attempt, a row the erasure's first statement tombstones, so they meet there); with
           # the task's row held the two wait for each other and PostgreSQL aborts one (a deadlock).
           "erasure_deadlock",
           sql=(SqlPatch("rm_lock_tenant_runs(text,boolean)", r"IF p_tenant IS NULL THEN RETURN; END IF;",
                         "RETURN;  -- mutant: no lock"),),
           shown_by="tests/integration/test_erasure_serializes.py::test_the_race_without_the_lock"),
    Mutant("outbox_forgets_duplicate", "a re-send absorbed by a kept outbox entry is recorded as a duplicate "
           "under its own id (outbox.put)",
           # The forwarder's first publish of a key waits unsent in its outbox (the home's broker cut
           # off); the producer's re-send of it, 30 s later, is absorbed by that entry.
           "lost_submission", python=True, needs="broker_cut", aim=(("seconds", 60.0),)),
    Mutant("release_before_commit", "a step's dependents start after every task of it took effect",
           "order",
           sql=(SqlPatch("rm_complete_task(uuid,integer,jsonb)",
                         r"IF remaining = 0 THEN(\s+)RETURN coalesce\(array\(SELECT rm_step_succeeded\(v_step\)\), '\{\}'\);",
                         r"IF remaining >= 0 THEN\1RETURN coalesce(array(SELECT rm_step_succeeded(v_step)), '{}');"),)),
]}


def rewrite(definition: str, patch: SqlPatch) -> str:
    """``definition`` with the patch applied. Raises ValueError unless it matches exactly once."""
    found = len(re.findall(patch.pattern, definition, flags=re.S))
    if found != 1:
        raise ValueError(f"mutant patch for {patch.function} matches {found} times (expected once): "
                         "the function changed; update bench/mutants.py")
    return re.sub(patch.pattern, patch.replacement, definition, count=1, flags=re.S)


def apply_sql(conn: Connection, mutant: Mutant) -> list[str]:
    """Install the mutant's rewritten functions in one region's database, in the caller's
    transaction. Returns their names."""
    done = []
    for patch in mutant.sql:
        definition = conn.execute(text("SELECT pg_get_functiondef(CAST(:f AS regprocedure))"),
                                  {"f": patch.function}).scalar_one()
        conn.exec_driver_sql(rewrite(definition, patch).replace("%", "%%"))  # psycopg2 formats '%'
        done.append(patch.function)
    return done


def apply_unfilter(conn: Connection, publication: str) -> list[str]:
    """Re-list ``publication``'s tables without their row filters (in the caller's transaction).
    Raises ValueError unless it lists at least one filtered table: a publication without filters
    means the mutant would plant nothing."""
    filtered = list(conn.execute(text(
        "SELECT tablename::text FROM pg_publication_tables WHERE pubname = :n AND rowfilter IS NOT NULL ORDER BY 1"),
        {"n": publication}).scalars())
    if not filtered:
        raise ValueError(f"{publication} has no filtered table: nothing to unfilter (did the zones change?)")
    tables = list(conn.execute(text(
        "SELECT tablename::text FROM pg_publication_tables WHERE pubname = :n ORDER BY 1"), {"n": publication}).scalars())
    conn.exec_driver_sql(f"ALTER PUBLICATION {publication} SET TABLE {', '.join(tables)}")
    return filtered


def worker_env(mutant: Mutant | None, workflows: str) -> dict[str, str]:
    """What a campaign worker's environment needs for ``mutant`` (its workflow modules included)."""
    if mutant is None or not mutant.python:
        return {"REGIONMESH_WORKFLOWS": workflows}
    return {"REGIONMESH_WORKFLOWS": f"{workflows},{PATCH_MODULE}", ENV: mutant.name}


def select(spec: str) -> list[Mutant]:
    """``all`` (every mutant a campaign can show) or a comma-separated list of names. Raises
    ValueError for an unknown name."""
    if spec == "all":
        return [m for m in MUTANTS.values() if not m.shown_by]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        raise ValueError(f"unknown mutant(s) {', '.join(unknown)}; known: {', '.join(MUTANTS)}")
    return [MUTANTS[n] for n in names]
