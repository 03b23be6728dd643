"""When a schedule's ticks fall, which ones a pass fires, and each tick's run key. Pure: no I/O.

A tick is a UTC instant. Interval schedules (``every``) tick at whole multiples of the interval
since 1970-01-01T00:00:00Z, so every region computes the same instants without any shared state.
Cron schedules are read in their time zone (``zoneinfo``) on the wall clock, and each wall time
the expression matches is mapped to one UTC instant:

* an ordinary wall time: its instant;
* a **repeated** wall time (autumn, 02:30 happens twice): the **first** occurrence only
  (``fold=0``); the second is not a tick. A schedule that must run every real hour uses ``every``;
* a **skipped** wall time (spring, 02:30 does not happen): the instant the wall clock would have
  shown it had it not jumped, i.e. later by the gap (PEP 495's ``fold=0`` reading: 02:30 on a
  one-hour jump fires at 03:30 new time). Wall times that map to one instant (02:00 in the gap and
  03:00 after it) are one tick.

A tick's run is submitted with the idempotency key ``rm-schedule:<name>:<instant>``
(:func:`run_key`), so the run id (UUIDv5 of tenant and key, workers/submission.py) is the same in
every region: a tick fired twice is one run.

Catch-up (which of the ticks that fell while nothing fired them): ``all`` fires every one (oldest
first, at most :data:`MAX_TICKS_PER_PASS` a pass); ``latest`` fires the newest and skips the rest;
``none`` fires a tick only within :data:`ON_TIME_S` of its instant (plus its jitter) and skips the
others. Overlap (a tick falls while the schedule's previous run is still running): ``skip`` drops
it, ``buffer_one`` keeps the newest such tick and fires it when the run ends, ``allow`` fires it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from regionmesh.errors import InvalidSchedule

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
EVERY_RE = re.compile(r"(\d+)(s|m|h|d)")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
OVERLAPS = ("skip", "buffer_one", "allow")
CATCH_UPS = ("none", "latest", "all")
MIN_EVERY_S = 1
MAX_JITTER_S = 3600.0
ON_TIME_S = 60.0  # catch-up none: a tick fired later than this after its instant (and jitter) is skipped
MAX_TICKS_PER_PASS = 100  # catch-up all: what one pass fires of one schedule's backlog
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_every(text: str) -> int:
    """``30s``, ``5m``, ``2h``, ``1d`` (or a number of seconds) -> seconds. Raises InvalidSchedule."""
    m = EVERY_RE.fullmatch(text.strip())
    seconds = int(text) if text.strip().isdigit() else (int(m.group(1)) * UNITS[m.group(2)] if m else 0)
    if seconds < MIN_EVERY_S:
        raise InvalidSchedule(f"--every {text!r}: give a whole number of seconds, minutes, hours or days "
                              f"of at least {MIN_EVERY_S}s, e.g. 30s, 5m, 2h, 1d")
    return seconds


@dataclass(frozen=True)
class Spec:
    """A schedule's timing: ``cron`` in ``tz``, or ``every_s`` seconds; ``jitter_s`` delays each
    tick's firing (not its key) by a fixed fraction of it."""

    cron: str | None = None
    every_s: float | None = None
    tz: str = "UTC"
    jitter_s: float = 0.0

    def validate(self) -> None:
        """Raises InvalidSchedule with what to fix."""
        if (self.cron is None) == (self.every_s is None):
            raise InvalidSchedule("give exactly one of --cron or --every")
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidSchedule(f"--tz {self.tz!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)") from None
        if self.cron is not None:
            try:
                next(iter(CronSim(self.cron, datetime(2000, 1, 1))))
            except (CronSimError, StopIteration) as exc:
                raise InvalidSchedule(f"--cron {self.cron!r}: {exc or 'matches no time'}") from None
        elif self.every_s is not None:
            if self.every_s < MIN_EVERY_S or self.every_s != int(self.every_s):
                raise InvalidSchedule(f"every {self.every_s}: a whole number of seconds of at least {MIN_EVERY_S}")
            if self.tz != "UTC" and zone is not None:
                raise InvalidSchedule("--tz applies to --cron only: an interval ticks in UTC")
        if not (0 <= self.jitter_s <= MAX_JITTER_S) or math.isnan(self.jitter_s):
            raise InvalidSchedule(f"--jitter {self.jitter_s}: between 0 and {MAX_JITTER_S:g} seconds")

    def ticks_after(self, after: datetime) -> Iterator[datetime]:
        """The tick instants (UTC) strictly after ``after``, in order, forever."""
        after = after.astimezone(UTC)
        if self.every_s is not None:
            step = int(self.every_s)
            k = math.floor((after - EPOCH).total_seconds() / step) + 1
            while True:
                yield EPOCH + timedelta(seconds=k * step)
                k += 1
        assert self.cron is not None
        zone = ZoneInfo(self.tz)
        # Start an hour of wall time early: the first occurrence of a repeated wall time lies
        # before ``after``'s wall time when ``after`` is in the second occurrence.
        wall = after.astimezone(zone).replace(tzinfo=None) - timedelta(hours=2)
        last = after
        for local in CronSim(self.cron, wall):
            instant = to_instant(local, zone)
            if instant > last:
                last = instant
                yield instant

    def next_ticks(self, after: datetime, n: int) -> list[datetime]:
        it = self.ticks_after(after)
        return [next(it) for _ in range(n)]


def to_instant(local: datetime, zone: ZoneInfo) -> datetime:
    """A wall time in ``zone`` as the UTC instant this module fires it at: the first occurrence of
    a repeated time, a skipped time shifted forward by the gap (both ``fold=0``)."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def jitter_offset(tenant_id: str, name: str, tick: datetime, jitter_s: float) -> float:
    """The delay of one tick's firing: a fixed fraction of ``jitter_s`` from SHA-256 of tenant,
    name and tick (the same in every region, so a re-fire after a failover waits as long)."""
    if jitter_s <= 0:
        return 0.0
    digest = hashlib.sha256(f"{tenant_id}\x1f{name}\x1f{tick_text(tick)}".encode()).digest()
    return jitter_s * int.from_bytes(digest[:8], "big") / 2**64


def tick_text(tick: datetime) -> str:
    """A tick instant as it appears in keys: ``2026-12-07T02:00:00Z``."""
    return tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_key(name: str, tick: datetime) -> str:
    """The idempotency key of a tick's run (the run id follows from it and the tenant)."""
    return f"rm-schedule:{name}:{tick_text(tick)}"


@dataclass(frozen=True)
class Plan:
    fire: tuple[datetime, ...]  # ticks to submit, oldest first
    skipped: tuple[datetime, ...]  # ticks the catch-up policy drops
    last: datetime | None  # the newest tick handled (fired or skipped): the schedule's new last tick


def plan(due: list[datetime], now: datetime, catch_up: str, *, jitter: list[float] | None = None) -> Plan:
    """Which of the ``due`` ticks (oldest first, each with its jitter already past) to fire now."""
    if not due:
        return Plan((), (), None)
    if catch_up == "all":
        fire = due[:MAX_TICKS_PER_PASS]
        return Plan(tuple(fire), (), fire[-1])
    if catch_up == "latest":
        return Plan((due[-1],), tuple(due[:-1]), due[-1])
    offsets = jitter or [0.0] * len(due)
    on_time = [t for t, j in zip(due, offsets, strict=True) if (now - t).total_seconds() - j <= ON_TIME_S]
    return Plan(tuple(on_time), tuple(t for t in due if t not in on_time), due[-1])


def overlap_action(policy: str, previous_running: bool) -> str:
    """What a tick does while the schedule's previous run is (or is not) running:
    'fire', 'skip' or 'buffer'."""
    if not previous_running or policy == "allow":
        return "fire"
    return "buffer" if policy == "buffer_one" else "skip"
