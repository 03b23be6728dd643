"""A step's time limit, which a handler cannot swallow.

Two ends, both counted from just before the step was claimed (so no later than the claim's
``deadline_at = claim + timeout``):

* **soft**, at the timeout: ``StepTimeout`` is raised in the handler (SIGALRM, main thread only). A
  handler that lets it through fails the attempt as a timeout, retried per its policy. A handler
  that catches it (``except Exception:``, a bare ``except``) and returns anyway also counts as
  timed out: its result is not recorded.
* **hard**, at the timeout plus a grace (half the reconciler's ``deadline_slack_s``): if the handler
  still runs, a watchdog thread of the pool process records the attempt as timed out (retried per
  its policy, never sooner than ``OVERRUN_RETRY_GUARD_S``), publishes the retry, and ends its own
  process with SIGKILL. Celery's parent sees a lost pool process and gives the message back; the
  redelivery finds the task queued (not yet due) or failed and does nothing. Because the attempt is
  recorded before the process dies, neither the redelivery nor the reconciler counts it as a lost
  worker (which would allow ``MIN_WORKER_LOST_TRIES`` tries whatever the policy), and because the
  process is gone before ``timeout + deadline_slack_s``, the reconciler never re-queues a task
  whose handler still runs. If the record cannot be made within ``KILL_BUDGET_S`` (the database is
  away) or is refused (this region lost its lease meanwhile), the process is ended anyway and the
  attempt is a lost worker's, as before.

The hard end is armed only in a prefork pool process (``allow_process_end``, called on Celery's
``worker_process_init``): ending a solo or threads worker would end every task it runs, so there
the soft end and the reconciler's deadline are all there is. A handler that holds the GIL in C
code for longer than the grace (a loop that never returns to the interpreter) keeps the watchdog
from running; Celery's ``task_time_limit`` is its only end. The watchdog needs only the GIL, not
the main thread: a handler blocked in a C call that released it (a long query in libpq, whose
EINTR retries also keep SIGALRM's Python handler from running) is ended on time.

Inline continuation (one message runs several steps): each step gets its own limit, armed from its
own claim and disarmed when its handler returns, so the limit never spans two steps. A hard end in
step k ends the whole chain: steps before k are committed (each completion claimed the next in its
transaction), step k is recorded as timed out, and what the chain had not reached is queued in
PostgreSQL and published by the completions that released it or by the reconciler.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType

from regionmesh.log import event

# A timed-out attempt's retry is never due sooner than this after the record: the process that
# wrote it ends right after the commit, and the claim accepts a retry up to 200 ms early.
OVERRUN_RETRY_GUARD_S = 1.0
# How long the watchdog may spend recording the timeout before it ends the process regardless.
KILL_BUDGET_S = 5.0

_process_end_allowed = False


class StepTimeout(Exception):
    """The handler ran past its step's timeout."""


def allow_process_end() -> None:
    """Arm hard ends in this process (a prefork pool process: Celery's ``worker_process_init``)."""
    global _process_end_allowed
    _process_end_allowed = True


def process_end_allowed() -> bool:
    return _process_end_allowed


def end_process() -> None:
    """End this process now (SIGKILL: nothing the handler does can delay it)."""
    os.kill(os.getpid(), signal.SIGKILL)


class StepLimit:
    """The limit of one handler call: ``with StepLimit(...) as limit: handler(...)``; afterwards
    ``limit.fired`` says whether the soft end was reached.

    ``started``: a monotonic reading taken before the claim; ``on_overrun``: records the attempt as
    timed out, called by the watchdog at the hard end (None: no hard end)."""

    def __init__(self, timeout_s: float, *, started: float, grace_s: float,
                 on_overrun: Callable[[], None] | None, clock: Callable[[], float] = time.monotonic,
                 end: Callable[[], None] = end_process) -> None:
        self.timeout_s = timeout_s
        self.soft_at = started + timeout_s
        self.hard_at = self.soft_at + grace_s
        self.on_overrun = on_overrun
        self.clock = clock
        self.end = end
        self.fired = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._previous: Callable[[int, FrameType | None], object] | int | None = None
        self._alarm = False

    def __enter__(self) -> StepLimit:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only; ending the process would end others' work
        if self.on_overrun is not None:
            _watchdog().watch(self)
        try:
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            self._alarm = True
            signal.setitimer(signal.ITIMER_REAL, max(0.001, self.soft_at - self.clock()))
        except BaseException:  # StepTimeout already (the claim took the whole timeout): disarm all
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # The alarm is one-shot: if it interrupts this method before the timer is cleared, it has
        # fired and cannot again, so the finally below always tells the watchdog and restores.
        try:
            if self._alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            with self._lock:  # if the watchdog is ending the process, this waits for the end
                self._done.set()
            if self._alarm:
                self._alarm = False
                signal.signal(signal.SIGALRM, self._previous if self._previous is not None else signal.SIG_DFL)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        self.fired = True
        raise StepTimeout(f"timed out after {self.timeout_s:g}s")

    def _wait_for_hard_end(self) -> None:
        """In the watchdog thread: return when the handler returned, or end the process at the hard end."""
        if self._done.wait(max(0.0, self.hard_at - self.clock())):
            return
        with self._lock:
            if self._done.is_set():
                return
            self.fired = True
            backstop = threading.Timer(KILL_BUDGET_S, self.end)
            backstop.daemon = True
            backstop.start()
            try:
                if self.on_overrun is not None:
                    self.on_overrun()
            except Exception as exc:  # the process ends all the same; the attempt is then a lost worker's
                event(logging.ERROR, "step.overrun_unrecorded", error=type(exc).__name__)
            finally:
                self.end()


class _Watchdog:
    """One thread per pool process that waits out the current step's hard end (a thread per step
    cost about 0.25 ms; this costs a notify)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._cond = threading.Condition()
        self._current: StepLimit | None = None
        threading.Thread(target=self._run, name="rm-step-limit", daemon=True).start()

    def watch(self, limit: StepLimit) -> None:
        with self._cond:
            self._current = limit
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._current is None:
                    self._cond.wait()
                limit, self._current = self._current, None
            limit._wait_for_hard_end()


_dog: _Watchdog | None = None
_dog_lock = threading.Lock()


def _watchdog() -> _Watchdog:
    """This process's watchdog (a forked child starts its own: threads do not survive a fork)."""
    global _dog
    with _dog_lock:
        if _dog is None or _dog.pid != os.getpid():
            _dog = _Watchdog()
        return _dog
