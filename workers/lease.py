"""Lease rules: when a region may work, when a grantor's promise is over, when a failover may
proceed. Pure: times are monotonic readings passed in, never wall clocks of two machines.

The holder times its lease from *before* it asked (the send time of the beat a grantor
acknowledged), each grantor times its promise from *after* it answered (when its
acknowledgement committed), each on its own monotonic clock. With clock rates that differ by at
most ρ, a lease of L seconds on the holder's clock ends before L·(1+ρ) has passed on any
grantor's clock since that grantor's acknowledgement; the margin covers the time from the
holder's keeper to its database. So once the grantors that could make a majority for a holder
have stopped acknowledging it and waited out L·(1+ρ)+margin, the holder holds no lease.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from regionmesh.config import Settings


@dataclass(frozen=True)
class LeaseParams:
    lease_s: float  # L: how long a majority's acknowledgement of one beat lets the holder work
    drift: float  # ρ: bound on the relative clock rate difference between any two hosts
    margin_s: float  # added to every promise: keeper-to-database time, scheduling

    @classmethod
    def from_settings(cls, settings: Settings) -> LeaseParams:
        """Every region of a mesh must run the same L, ρ and margin (the README says why)."""
        return cls(lease_s=settings.lease_s, drift=settings.clock_drift, margin_s=settings.lease_margin_s)

    @property
    def promise_s(self) -> float:
        """How long a grantor keeps its promise after its last acknowledgement: L·(1+ρ)+margin."""
        return self.lease_s * (1.0 + self.drift) + self.margin_s


def majority(voters: int) -> int:
    """Votes a lease needs among ``voters`` regions, the holder's own included."""
    if voters < 1:
        raise ValueError("a mesh has at least one voter")
    return voters // 2 + 1


def lease_end(sent_at: Mapping[int, float], my_beat: int, grants: Mapping[str, int], voters: int,
              params: LeaseParams) -> tuple[float | None, list[str]]:
    """When the holder's lease ends (its monotonic clock) and which grantors make the majority.

    ``sent_at``: send time of each of the holder's beats (by sequence number) this keeper sent;
    ``my_beat``: the latest, which the holder grants itself; ``grants``: grantor -> the beat it
    acknowledged (only grantors still granting). A grant of a beat this keeper did not send (from
    before it started) counts for nothing. Returns (None, []) without a majority.
    """
    times: list[tuple[float, str]] = []
    if my_beat in sent_at:
        times.append((sent_at[my_beat], "(self)"))
    for grantor, seq in grants.items():
        if seq in sent_at:
            times.append((sent_at[seq], grantor))
    need = majority(voters)
    if len(times) < need:
        return None, []
    times.sort(reverse=True)
    quorum = times[:need]
    return quorum[-1][0] + params.lease_s, sorted(g for _, g in quorum if g != "(self)")


def should_grant(holder_status: str | None, manually_fenced: bool = False) -> bool:
    """Whether to acknowledge a holder's beats: not while it is being or has been failed over."""
    return not manually_fenced and holder_status in (None, "active", "draining")


def promise_over(last_grant_at: float, now: float, params: LeaseParams) -> bool:
    """Whether a grantor that last acknowledged at ``last_grant_at`` (its monotonic clock) may let the
    holder's tenants be taken over at ``now``."""
    return now - last_grant_at >= params.promise_s


def expired_needed(voters: int) -> int:
    """Grantors other than the holder that must have let their promise expire before the holder's
    tenants can be taken over: enough that the holder can no longer count a majority."""
    return voters - majority(voters) + 1


def answering(rows: Mapping[str, tuple[str, int]], episode: int) -> dict[str, str]:
    """Each grantor's state as it bears on the failover episode ``episode`` (the epoch of the
    holder's ``failing_over`` status): ``rows`` maps grantor -> (state, the episode its row answers).

    An ``expired`` row left from an earlier failover of the same holder says nothing about this
    one: the grantor may have granted the holder again since the restore, in a row that has not
    reached this copy yet. It is reported as ``expired earlier`` and does not count."""
    return {g: state if state != "expired" or answered == episode else "expired earlier"
            for g, (state, answered) in rows.items()}


def episode_expired(row: tuple[int, str] | None, answered: int, episode: int) -> bool:
    """Whether a grantor whose own row about a holder is ``row`` (seq, state), answering episode
    ``answered``, should write ``expired`` again for the holder's current episode ``episode``: the
    row is ``expired`` (no grant since its promise ran out, or there would be a ``granting`` row),
    so the promise is over for this episode too; only the episode it names is older."""
    return row is not None and row[1] == "expired" and answered != episode


def failover_ready(states: Mapping[str, str], voters: int) -> tuple[bool, int]:
    """From the grant rows about a holder (grantor -> state, the holder itself excluded): whether
    enough of them expired. Returns (ready, how many more are needed)."""
    expired = sum(1 for state in states.values() if state == "expired")
    missing = max(0, expired_needed(voters) - expired)
    return missing == 0, missing


def held_until_db(db_now: float, lease_end_mono: float, mono_after_db_read: float) -> float:
    """The lease end in the database's clock, never later than the true end.

    ``db_now`` was read from the database before ``mono_after_db_read`` was taken, so the database
    clock at ``mono_after_db_read`` is at least ``db_now``; adding only what is left after that
    reading errs on the early side.
    """
    return db_now + (lease_end_mono - mono_after_db_read)
