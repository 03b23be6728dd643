"""What a handler is told about its claim beyond the claim itself: its fencing stamp and the lease.

The fencing stamp of a claim is the ``updated_at`` the claim wrote into the task's row. The stamp
trigger (``stamp.sql``) makes every local write of a row strictly later than the version it
replaces, and replication never moves a row's ``updated_at`` back, so within one epoch of a run
(one owner region, one row) every later claim of the task carries a strictly later stamp: a retry,
a re-queue after a lost worker, a ``runs retry`` (which resets ``attempt`` to 0 but writes the row).
Across epochs the epoch orders them (``workers/executor.py`` puts the two together).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text


@dataclass(frozen=True)
class ClaimFence:
    stamp_us: int  # the claim's row version in microseconds since 1970 (0: the claim is already gone)
    lease_until: datetime | None  # local_lease.held_until as read just after the claim


def claim_fence(engine: Engine, task_id: uuid.UUID, attempt: int, worker: str, epoch: int) -> ClaimFence:
    """Read, right after a claim committed, the row version that claim wrote and this region's
    lease end. When the row no longer shows the claim (re-queued, cancelled, taken over, adopted
    since), ``stamp_us`` is 0: below every real claim of the epoch, so a sink that keeps the
    largest token refuses what this execution writes."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT (SELECT (extract(epoch FROM t.updated_at) * 1000000)::bigint FROM step_tasks t
                        WHERE t.id = :t AND t.attempt = :a AND t.worker = :w AND t.epoch = :e
                          AND t.status = 'running'),
                      (SELECT held_until FROM local_lease WHERE id = 1)"""
        ), {"t": task_id, "a": attempt, "w": worker, "e": epoch}).one()
    return ClaimFence(int(row[0] or 0), row[1])
