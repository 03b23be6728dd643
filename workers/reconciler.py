"""The reconciler: re-publishes what PostgreSQL says should be moving but is not.

One is active per region: every worker runs the thread, and only the one
holding the region's advisory lock works; when its worker dies the
connection closes, the lock frees, and another worker's thread takes over.
It re-publishes queued tasks whose message was lost (crash between commit and
publish, a purged queue) and re-queues running tasks whose worker is gone
(past the deadline, confirmed on its own monotonic clock: workers/deadlines.py),
failing those that used their attempts.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from regionmesh.broker import step_messages
from regionmesh.host import pid_alive
from regionmesh.log import event
from regionmesh.models import lease, runs
from regionmesh.workers.deadlines import DeadlineWatch
from regionmesh.workers.executor import MIN_WORKER_LOST_TRIES
from regionmesh.workers.runtime import Runtime
from regionmesh.workers.singleton import SingletonLoop

LOCK_NAME = "regionmesh.reconciler"


@dataclass(frozen=True)
class ReconcilerSettings:
    interval_s: float = 1.0
    requeue_after_s: float = 30.0  # a queued task unseen this long is published again
    deadline_slack_s: float = 5.0  # a running task this far past its deadline lost its worker


class Reconciler(SingletonLoop):
    def __init__(self, rt: Runtime, settings: ReconcilerSettings,
                 extra_jobs: tuple[Callable[[], object], ...] = ()) -> None:
        super().__init__(rt, LOCK_NAME, settings.interval_s)
        self.settings = settings
        self.extra_jobs = extra_jobs
        self.deadlines = DeadlineWatch(settings.deadline_slack_s)

    def step(self) -> None:
        for job in self.extra_jobs:
            job()
        if lease.may_work(self.rt.engine):  # without its lease a region touches no run
            self.tick()

    def tick(self) -> tuple[int, int]:
        """One pass. Returns (re-published queued tasks, re-queued or failed expired tasks)."""
        stale = runs.due_queued_tasks(self.rt.engine, self.rt.region, self.settings.requeue_after_s)
        if stale:
            # Only what has no message left: under a backlog the message is still waiting, and
            # publishing it again would grow the backlog by itself.
            waiting = step_messages(self.rt.app, [str(t) for t in stale])
            stale = [t for t in stale if str(t) not in waiting]
        if stale:
            self.rt.publish_steps(stale)
            event(logging.WARNING, "reconciler.republished", region=self.rt.region, count=len(stale))
        running = runs.running_tasks(self.rt.engine, self.rt.region, self.settings.deadline_slack_s)
        expired = [(t.task_id, t.attempt, t.max_attempts) for t in self.deadlines.expired(running, time.monotonic())]
        # Holders on this host whose process is gone need not wait for their deadline.
        host = socket.gethostname()
        expired += [
            (task_id, attempt, max_attempts)
            for task_id, attempt, max_attempts, worker in runs.running_on_host(self.rt.engine, self.rt.region, host)
            if not pid_alive(int(worker.rpartition(":")[2] or 0)) and (task_id, attempt, max_attempts) not in expired
        ]
        moved = []
        for task_id, attempt, max_attempts in expired:
            if attempt >= max(max_attempts, MIN_WORKER_LOST_TRIES):
                runs.fail_task(self.rt.engine, task_id, attempt,
                               f"worker lost: attempt {attempt} passed its deadline; no attempts left", None)
            elif runs.requeue_expired(self.rt.engine, task_id, attempt):
                moved.append(task_id)
        if moved:
            self.rt.publish_steps(moved)
        if expired:
            event(logging.WARNING, "reconciler.expired", region=self.rt.region, count=len(expired))
        return len(stale), len(expired)
