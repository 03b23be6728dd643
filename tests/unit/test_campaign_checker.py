"""How the fault campaign (and the replication tests) read PostgreSQL's logs for apply errors, and what
the first checker reported that the new one still reports."""

from __future__ import annotations

from pathlib import Path

from bench.campaign_checker import evaluate, scan_pg_logs
from bench.checker.verdict import APPLY_ERROR, DEAD_LETTER, DUPLICATE_RUN, STUCK
from tests.unit.checker_histories import RUN, history

LEAVING_ON_CHANGE = ('2026-11-28 07:12:31.470 UTC [20262] LOG:  logical replication worker for subscription '
                     '"rm_eu_west_from_us_east" will restart because of a parameter change')
BUSY = "2026-11-28 07:12:31.476 UTC [25824] ERROR:  replication origin with ID 1 is already active for PID 20262"
BUSY_EXIT = ('2026-11-28 07:12:31.483 UTC [20198] LOG:  background worker "logical replication worker" '
             "(PID 25824) exited with exit code 1")
HOLDER_EXIT = ('2026-11-28 07:12:31.480 UTC [20198] LOG:  background worker "logical replication worker" '
               "(PID 20262) exited with exit code 1")


def write(tmp_path: Path, *lines: str) -> Path:
    (tmp_path / "pg-eu-west.log").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_a_restart_race_with_a_worker_leaving_on_a_parameter_change_is_not_an_apply_error(tmp_path: Path) -> None:
    assert scan_pg_logs(write(tmp_path, LEAVING_ON_CHANGE, BUSY, BUSY_EXIT)) == []


def test_a_restart_race_with_a_worker_that_exited_is_not_an_apply_error(tmp_path: Path) -> None:
    assert scan_pg_logs(write(tmp_path, BUSY, BUSY_EXIT, HOLDER_EXIT)) == []


def test_an_origin_held_by_a_worker_never_seen_leaving_is_an_apply_error(tmp_path: Path) -> None:
    # Two live workers on one origin would be a real fault: nothing shows the holder going away.
    found = scan_pg_logs(write(tmp_path, BUSY, BUSY_EXIT))
    assert len(found) == 1 and "already active for PID 20262" in found[0]


def test_a_conflict_error_is_an_apply_error_and_a_lost_connection_is_not(tmp_path: Path) -> None:
    found = scan_pg_logs(write(
        tmp_path,
        "2026-11-28 07:00:00.000 UTC [1] ERROR:  could not receive data from WAL stream: server closed the connection",
        '2026-11-28 07:00:01.000 UTC [2] ERROR:  duplicate key value violates unique constraint "runs_key"',
        '2026-11-28 07:00:01.001 UTC [2] CONTEXT:  processing remote data for replication origin "pg_16400" '
        "during message type \"INSERT\" in transaction 800, finished at 0/4A02588",
        '2026-11-28 07:00:01.002 UTC [9] LOG:  background worker "logical replication worker" (PID 2) exited'))
    assert len(found) == 1 and "duplicate key" in found[0]


# --- what the first checker reported, still reported -------------------------------------------------

def test_a_stuck_run_a_second_run_for_a_key_bad_dead_letters_and_apply_errors_are_violations() -> None:
    h = history()
    h.runs["c"] = [("t1", "k1", RUN, "running")]
    assert evaluate(h).classes == {STUCK}
    h = history()
    del h.runs["b"]  # not replicated there
    assert evaluate(h).classes == {STUCK}
    h = history()
    h.runs["b"] = [("t1", "k1", RUN, "succeeded"), ("t1", "k1", "r9", "succeeded")]
    assert evaluate(h).classes == {DUPLICATE_RUN}
    v = evaluate(history(dead_letters=[("a", "s1", "unknown workflow"), ("b", None, " ")]))
    assert v.classes == {DEAD_LETTER} and len(v.bad_dead_letters) == 2
    assert evaluate(history(apply_errors=["pg-a.log: ERROR: duplicate key"])).classes == {APPLY_ERROR}
    assert not evaluate(history(outbox_rejected=[("a", "s1", "gave up")])).ok


def test_the_verdict_json_keeps_the_fields_the_campaign_reads() -> None:
    doc = evaluate(history()).as_json()
    for key in ("lost", "duplicated", "stuck", "identical", "missing_effects", "apply_errors", "bad_dead_letters",
                "faults", "submissions", "runs", "violations", "classes", "crash_reruns", "ok"):
        assert key in doc, key
