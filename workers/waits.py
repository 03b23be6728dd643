"""Waiting steps: ``Sleep``, ``SleepUntil`` and ``WaitFor`` (durable timers and signals, issue 23).

A waiting step is an ordinary step whose handler name carries its argument
(``regionmesh.sleep:30``, ``regionmesh.sleep_until:2026-12-08T02:00:00Z``,
``regionmesh.wait_for:approved:86400``), so it needs no column of its own and any region's
workers run it. Its handler never blocks: when it is not yet time it raises
:class:`~regionmesh.workers.definitions.Park`, and the executor puts the task back to 'queued'
with ``wake_at`` and no message (``rm_park_task``). The region's ticker publishes it when the
owner's database clock reaches ``wake_at`` (workers/ticker.py); after a failover the heir holds
the same row and wakes it. The wake time is fixed by the first park, on the owner's database
clock: a clock stepped forward wakes a sleeper early by the step, one stepped back late by it.

``WaitFor(name, timeout_s)`` returns ``{"signal", "key", "payload", "timed_out": false}`` for the
first signal of that name sent to the run (buffered if it came before the wait), or
``{"signal", "timed_out": true, "payload": null}`` once ``timeout_s`` passed without one.
``Sleep``/``SleepUntil`` return their input unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from regionmesh.models import waits
from regionmesh.workers.definitions import STEP_KEY_RE, Handler, Handlers, Park, RetryPolicy, Step
from regionmesh.workers.executor import StepContext

SLEEP = "regionmesh.sleep"
SLEEP_UNTIL = "regionmesh.sleep_until"
WAIT_FOR = "regionmesh.wait_for"
MAX_WAIT_S = 366 * 86400.0
# A waiting step's handler is a few queries; a retry covers a database blip.
WAIT_STEP_TIMEOUT_S = 60.0
WAIT_RETRY = RetryPolicy(max_attempts=5, base_s=1.0, max_s=30.0)


def Sleep(key: str, seconds: float, depends_on: tuple[str, ...] = ()) -> Step:
    """A step that waits ``seconds`` from when it first runs, holding no worker or message."""
    if not (0 < seconds <= MAX_WAIT_S):
        raise ValueError(f"Sleep({key!r}): seconds must be in (0, {MAX_WAIT_S:g}]")
    return Step(key, f"{SLEEP}:{seconds:g}", depends_on, retry=WAIT_RETRY, timeout_s=WAIT_STEP_TIMEOUT_S)


def SleepUntil(key: str, when: datetime, depends_on: tuple[str, ...] = ()) -> Step:
    """A step that waits until the instant ``when`` (timezone-aware) on the owner's database clock."""
    if when.tzinfo is None:
        raise ValueError(f"SleepUntil({key!r}): give a timezone-aware datetime")
    at = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Step(key, f"{SLEEP_UNTIL}:{at}", depends_on, retry=WAIT_RETRY, timeout_s=WAIT_STEP_TIMEOUT_S)


def WaitFor(key: str, name: str, timeout_s: float, depends_on: tuple[str, ...] = ()) -> Step:
    """A step that waits for the signal ``name`` sent to its run, at most ``timeout_s``."""
    if not STEP_KEY_RE.fullmatch(name):
        raise ValueError(f"WaitFor({key!r}): signal name {name!r} is invalid (letters, digits, '_', '-'; max 64)")
    if not (0 < timeout_s <= MAX_WAIT_S):
        raise ValueError(f"WaitFor({key!r}): timeout_s must be in (0, {MAX_WAIT_S:g}]")
    return Step(key, f"{WAIT_FOR}:{name}:{timeout_s:g}", depends_on, retry=WAIT_RETRY, timeout_s=WAIT_STEP_TIMEOUT_S)


def _sleep(seconds: float | None, until: datetime | None) -> Handler:
    def handler(ctx: StepContext, payload: Any) -> Any:
        wake, now = waits.task_wake(ctx.engine, ctx.idempotency_key)
        if wake is None:
            raise Park(wake_at=until, wait_s=seconds)
        if wake > now:
            raise Park()  # woken early (a re-published message, an adoption): the same wake time
        return payload

    return handler


def _wait_for(name: str, timeout_s: float) -> Handler:
    def handler(ctx: StepContext, payload: Any) -> Any:
        got = waits.take_signal(ctx.engine, ctx.run_id, name, ctx.idempotency_key)
        if got is not None:
            return {"signal": name, "key": got["key"], "payload": got["payload"], "timed_out": False}
        wake, now = waits.task_wake(ctx.engine, ctx.idempotency_key)
        if wake is None:
            raise Park(wait_s=timeout_s)
        if wake > now:
            raise Park()
        return {"signal": name, "key": None, "payload": None, "timed_out": True}

    return handler


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value <= MAX_WAIT_S else None


def sleep_handler(argument: str) -> Handler | None:
    seconds = _float(argument)
    return None if seconds is None else _sleep(seconds, None)


def sleep_until_handler(argument: str) -> Handler | None:
    try:
        when = datetime.strptime(argument, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return _sleep(None, when)


def wait_for_handler(argument: str) -> Handler | None:
    name, _, timeout = argument.rpartition(":")
    seconds = _float(timeout)
    return None if seconds is None or not STEP_KEY_RE.fullmatch(name) else _wait_for(name, seconds)


def install(handlers: Handlers) -> None:
    """Make a registry's handlers resolve the waiting steps' names."""
    handlers.families.update({SLEEP: sleep_handler, SLEEP_UNTIL: sleep_until_handler, WAIT_FOR: wait_for_handler})
