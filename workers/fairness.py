"""Fair dispatch: which tenant's queued task a free worker of a region takes next (issue 22).

Pure: no I/O, time passed in. ``docs/explanation/fairness.md`` states the guarantees.

The rule, for the tenants that have a task queued in the region:

1. **Band first.** A tenant's head is its highest-band task (0 low, 1 normal, 2 high; FIFO within
   a band). Its effective band is the head's band plus one per ``aging_s`` it has waited, at most
   the top band: a low-band task waits at most ``2 * aging_s`` before it competes as a high one.
2. **Then the smallest pass.** A tenant's pass grows by the worker-seconds its tasks take, divided
   by its weight (stride scheduling over worker time, not task counts): over any interval in
   which tenants stay backlogged, their shares of worker time approach their weights.
3. **Then the oldest head** (so equal tenants alternate).

A tenant at its concurrency cap, or whose head would start a run before its rate limit allows,
is skipped (not work-conserving for it, by design); the rest keep every worker busy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from regionmesh.errors import RejectedSubmission

LOW, NORMAL, HIGH = 0, 1, 2
BAND_NAMES = {"low": LOW, "normal": NORMAL, "high": HIGH}
TOP_BAND = HIGH
DEFAULT_AGING_S = 10.0
RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute)")


def band_of(value: object) -> int:
    """The band a ``priority`` kwarg asks for: 0-2 or low/normal/high; None is normal.

    Raises RejectedSubmission for anything else (a clear reason, never a retry).
    """
    if value is None:
        return NORMAL
    if isinstance(value, str) and value.lower() in BAND_NAMES:
        return BAND_NAMES[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and LOW <= value <= TOP_BAND:
        return value
    raise RejectedSubmission("priority must be 0, 1 or 2 (or low, normal, high)")


def effective_band(band: int, waited_s: float, aging_s: float) -> int:
    """The band a head competes in after waiting ``waited_s``: one band up per ``aging_s``."""
    if aging_s <= 0:
        return TOP_BAND
    return min(TOP_BAND, band + int(max(waited_s, 0.0) // aging_s))


def parse_rate(text: str) -> float:
    """``"50/s"`` or ``"600/min"`` as runs per second. Raises ValueError with the accepted forms."""
    m = RATE_RE.fullmatch(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"rate {text!r}: expected a positive number per second or minute, like 50/s or 600/min")
    per_s = float(m.group(1))
    return per_s if m.group(2).startswith("s") else per_s / 60.0


@dataclass(frozen=True)
class Candidate:
    """A tenant with a task queued in the region, as ``models.fairness.candidates`` reads it."""

    tenant_id: str
    pass_: float
    band: int
    waited_s: float
    weight: float = 1.0
    capped: bool = False  # at its concurrency cap
    rate_wait_s: float = 0.0  # > 0: its head starts a run that its rate limit allows only then
    limited: bool = False  # has a cap or a rate limit (takes go through the tenant's lock)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Candidate:
        """From a row of ``models.fairness.candidates``."""
        return cls(tenant_id=str(row["tenant_id"]), pass_=float(row["pass"]), band=int(row["band"]),
                   waited_s=float(row["waited_s"]), weight=float(row["weight"]), capped=bool(row["capped"]),
                   rate_wait_s=float(row["rate_wait_s"]), limited=bool(row["limited"]))


@dataclass(frozen=True)
class Choice:
    """The tenants to try, in order, and when to look again if none is eligible."""

    order: tuple[str, ...]
    blocked: str | None = None  # 'concurrency' or 'rate' when every waiting tenant is held back
    wait_s: float = 0.0
    contended: bool = False  # more than one tenant eligible: no inline shortcut


def choose(candidates: Iterable[Candidate], aging_s: float = DEFAULT_AGING_S) -> Choice:
    """Order the eligible tenants: effective band (highest first), pass, then longest waiting."""
    eligible: list[Candidate] = []
    blocked: str | None = None
    wait_s: float | None = None
    for c in candidates:
        if c.capped:
            blocked = blocked or "concurrency"
            wait_s = 0.05 if wait_s is None else min(wait_s, 0.05)
        elif c.rate_wait_s > 0:
            blocked = "rate" if blocked is None else blocked
            wait_s = c.rate_wait_s if wait_s is None else min(wait_s, c.rate_wait_s)
        else:
            eligible.append(c)
    eligible.sort(key=lambda c: (-effective_band(c.band, c.waited_s, aging_s), c.pass_, -c.waited_s, c.tenant_id))
    if eligible:
        return Choice(tuple(c.tenant_id for c in eligible), contended=len(eligible) > 1)
    return Choice((), blocked=blocked, wait_s=wait_s or 0.0)
