"""The Python mutants of bench/mutants.py, planted by import.

The campaign's workers import this module among their workflow modules when ``RM_MUTANT`` names a
Python mutant; importing it monkeypatches the one function that mutant breaks, in the worker's main
process before the pool forks (so pool processes inherit it). It defines no workflow. Nothing in
the shipped package imports it.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from sqlalchemy import text

from regionmesh.models import outbox
from regionmesh.workers import deadlines, lease_keeper, lifecycle


def _keeper_expires_at_once() -> None:
    # A grantor writes 'expired' on its next pass after withholding, without waiting out the
    # promise its last grant made: the holder may still count that grant.
    lease_keeper.promise_over = lambda last_grant_at, now, params: True  # type: ignore[assignment]


def _reconciler_requeues_running() -> None:
    # Every running attempt counts as past its deadline at once: a live task goes back to the queue.
    deadlines.DeadlineWatch.expired = lambda self, running, now: list(running)  # type: ignore[method-assign]


def _ack_without_run() -> None:
    # One submission in 200 (by its id, so the choice is the same in every process) is acknowledged
    # as a duplicate without creating anything.
    accept = lifecycle.accept

    def dropping(rt: Any, sub: Any, **kwargs: Any) -> Any:
        if int(hashlib.sha256(sub.submission_id.encode()).hexdigest()[:8], 16) % 200 == 0:
            return lifecycle.Started(sub.run_id, False, "unknown", outcome="duplicate")
        return accept(rt, sub, **kwargs)

    lifecycle.accept = dropping  # type: ignore[assignment]


def _keeper_keeps_memory() -> None:
    # A keeper that takes the lease lock again keeps its memory of its own grants (issue 21 item 1):
    # it times its promise to a holder from its last grant before another process held the lock and
    # granted since, so it may write 'expired' while that other process's promise still runs.
    def took_lock(self: lease_keeper.LeaseKeeper, conn: Any) -> None:
        self.conn = conn

    lease_keeper.LeaseKeeper.took_lock = took_lock  # type: ignore[method-assign]


def _outbox_forgets_duplicate() -> None:
    # A re-send absorbed by an entry already kept for its run (its first publish waiting unsent) is
    # not recorded in duplicate_submissions: the re-send has no outcome under its own id.
    put = outbox.put

    def silent(engine: Any, **kwargs: Any) -> bool:
        if not kwargs.get("sent"):
            with engine.connect() as conn:
                if conn.execute(text("SELECT 1 FROM outbox WHERE run_id = :r"), {"r": kwargs["run_id"]}).first():
                    return False
        return bool(put(engine, **kwargs))

    outbox.put = silent  # type: ignore[assignment]


def _outbox_forgets_sent() -> None:
    # A forward that was published keeps no outbox entry: if the home loses the message, nobody
    # sends it again. (Kept unsent entries, sent=False, are written as before.)
    put = outbox.put

    def forgetful(engine: Any, **kwargs: Any) -> bool:
        return True if kwargs.get("sent") else bool(put(engine, **kwargs))

    outbox.put = forgetful  # type: ignore[assignment]


PATCHES = {
    "keeper_expires_at_once": _keeper_expires_at_once,
    "reconciler_requeues_running": _reconciler_requeues_running,
    "ack_without_run": _ack_without_run,
    "outbox_forgets_sent": _outbox_forgets_sent,
    "keeper_keeps_memory": _keeper_keeps_memory,
    "outbox_forgets_duplicate": _outbox_forgets_duplicate,
}


def plant(name: str | None) -> str | None:
    """Apply the named patch. Returns its name, None for none. Raises KeyError for an unknown one."""
    if not name:
        return None
    PATCHES[name]()
    return name


plant(os.environ.get("RM_MUTANT"))
