"""When a running task has lost its worker: its deadline, confirmed on this process's clock.

A task's deadline is written by PostgreSQL's wall clock at claim time
(``deadline_at = clock_timestamp() + timeout``). A wall clock that steps forward
(an NTP step, a VM resumed, an operator's ``date -s``) would make every running
task look expired at once, and re-queueing them would run their side effects a
second time while the first run is still going. So the reconciler re-queues a
task only when both say so: the database reports its deadline passed, and the
reconciler itself has watched that attempt running for at least its timeout plus
the slack on its own monotonic clock, which no wall-clock step moves. The watch
starts when the reconciler first sees the attempt, never earlier than its claim,
so it can only be late, never early; a reconciler that took over from another
(its worker died) starts watching afresh and waits up to one timeout more.
Pure: time is an argument.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from regionmesh.models.runs import RunningTask


@dataclass
class DeadlineWatch:
    slack_s: float
    _since: dict[tuple[uuid.UUID, int], float] = field(default_factory=dict)

    def expired(self, running: list[RunningTask], now: float) -> list[RunningTask]:
        """The tasks of ``running`` (every running attempt of the region, as read now) whose
        deadline passed by the database's clock and that this watch has seen running for their
        timeout plus the slack by ``now`` (monotonic seconds). Forgets attempts no longer running."""
        seen = {(t.task_id, t.attempt) for t in running}
        self._since = {key: at for key, at in self._since.items() if key in seen}
        out = []
        for t in running:
            since = self._since.setdefault((t.task_id, t.attempt), now)
            if t.past_deadline and now - since >= t.timeout_s + self.slack_s:
                out.append(t)
        return out
