"""The lease keeper's decisions, against an in-memory copy of what its repository reads and
writes (models/lease.py): grants, withholding and expiry for a failed-over holder, the manual
fence, and a lease that needs a majority of recent acknowledgements. Time is the keeper's
injected monotonic clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from regionmesh.config import Settings
from regionmesh.workers import lease_keeper
from regionmesh.workers.lease_keeper import LeaseKeeper, LeaseLoop

REGIONS = ("a", "b", "c")
SETTINGS = Settings(lease_s=10.0, clock_drift=0.01, lease_margin_s=1.0)  # promise 11.1 s


@dataclass
class FakeRepo:
    """One region's copy: heartbeats, region statuses, lease_grants, its fence and local_lease."""

    beats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REGIONS, 0))
    statuses: dict[str, str] = field(default_factory=lambda: dict.fromkeys(REGIONS, "active"))
    grants: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)  # (holder, grantor)
    epochs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REGIONS, 1))  # regions.epoch
    episodes: dict[tuple[str, str], int] = field(default_factory=dict)  # lease_grants.epoch
    manual: bool = False
    fence_reason: str | None = None
    published: list[tuple[datetime | None, list[str], str | None]] = field(default_factory=list)
    me: str = "a"

    def beat(self, _engine: Any, region: str) -> int:
        self.beats[region] += 1
        return self.beats[region]

    def view(self, _engine: Any, region: str) -> dict[str, Any]:
        return {"beats": dict(self.beats), "statuses": dict(self.statuses), "epochs": dict(self.epochs),
                "grants": {g: v for (h, g), v in self.grants.items() if h == region and g != region},
                "mine": {h: v for (h, g), v in self.grants.items() if g == region},
                "episodes": {h: v for (h, g), v in self.episodes.items() if g == region},
                "fenced": self.manual, "manual": self.manual, "fence_reason": self.fence_reason}

    def write_grant(self, _conn: Any, holder: str, grantor: str, seq: int, state: str, _lock: str = "",
                    episode: int = 0) -> bool:
        self.grants[(holder, grantor)] = (seq, state)
        self.episodes[(holder, grantor)] = max(self.episodes.get((holder, grantor), 1), episode)  # greatest()
        return True

    def db_now(self, _engine: Any) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    def publish_lease(self, _engine: Any, held_until: datetime | None, granted_by: list[str], reason: str | None) -> None:
        self.published.append((held_until, granted_by, reason))

    @property
    def lease(self) -> tuple[datetime | None, list[str], str | None]:
        return self.published[-1]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


SESSION: Any = object()  # stands for the session holding the lease lock; the fake repo ignores it


def runtime() -> Any:
    return SimpleNamespace(region="a", engine=None, worker_id="host:1",
                           config=SimpleNamespace(regions=dict.fromkeys(REGIONS), settings=SETTINGS))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[LeaseKeeper, FakeRepo, Clock]:
    repo = FakeRepo()
    monkeypatch.setattr(lease_keeper, "repo", repo)
    clock = Clock()
    return LeaseKeeper(runtime(), SESSION, clock=clock), repo, clock


def ack(repo: FakeRepo, grantor: str, holder: str = "a", state: str = "granting") -> None:
    """``grantor`` acknowledges ``holder``'s latest beat (as its keeper does; here by hand)."""
    repo.grants[(holder, grantor)] = (repo.beats[holder], state)


def test_it_acknowledges_every_peer_s_latest_beat(world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    keeper, repo, _ = world
    repo.beats |= {"b": 7, "c": 3}
    keeper()
    assert repo.grants[("b", "a")] == (7, "granting") and repo.grants[("c", "a")] == (3, "granting")


def test_a_majority_of_recent_acknowledgements_holds_the_lease_and_it_ends_l_after_the_beat(
        world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    keeper, repo, clock = world
    keeper()
    held_until, _, reason = repo.lease
    assert held_until is None and reason is not None and "no majority of 3" in reason  # only itself
    ack(repo, "b")  # b acknowledged the beat sent at t=100
    clock.now = 101.0
    keeper()  # beat 2 sent at 101; b's grant is of beat 1 (sent at 100): self + b = 2 of 3
    held_until, granted_by, _ = repo.lease
    assert granted_by == ["b"]
    assert held_until is not None and (held_until - repo.db_now(None)).total_seconds() == pytest.approx(10.0 - 1.0)
    clock.now = 110.5  # no newer acknowledgement: beat 1 + L has passed
    keeper()
    assert repo.lease[0] is None


def test_a_grant_of_a_beat_an_earlier_keeper_sent_counts_for_nothing(world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    keeper, repo, _ = world
    repo.beats["a"] = 40
    repo.grants[("a", "b")] = (40, "granting")  # acknowledged before this keeper started
    keeper()
    assert repo.lease[0] is None


def test_a_failed_over_holder_is_withheld_then_expired_after_the_promise(world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    keeper, repo, clock = world
    repo.beats["b"] = 5
    keeper()
    assert repo.grants[("b", "a")] == (5, "granting")
    repo.statuses["b"] = "failed_over"
    clock.now = 101.0
    keeper()
    assert repo.grants[("b", "a")] == (5, "withheld")
    clock.now = 100.0 + 11.0  # the promise (11.1 s since the last grant at 100) is not over
    keeper()
    assert repo.grants[("b", "a")] == (5, "withheld")
    clock.now = 100.0 + 11.2
    keeper()
    assert repo.grants[("b", "a")] == (5, "expired")


def test_a_holder_never_granted_expires_at_once(world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    keeper, repo, _ = world
    repo.statuses["c"] = "failed_over"
    keeper()
    assert repo.grants[("c", "a")] == (0, "expired")


def test_a_new_keeper_waits_a_whole_promise_for_a_grant_an_earlier_one_made(
        world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    keeper, repo, clock = world
    repo.grants[("b", "a")] = (9, "granting")  # written by a keeper before this one (its worker died)
    repo.statuses["b"] = "failed_over"
    keeper()  # counts the earlier grant as made now
    assert repo.grants[("b", "a")] == (9, "withheld")
    clock.now += 11.0
    keeper()
    assert repo.grants[("b", "a")] == (9, "withheld")
    clock.now += 0.2
    keeper()
    assert repo.grants[("b", "a")] == (9, "expired")


def test_a_manual_fence_holds_no_lease_whatever_the_grants(world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    keeper, repo, clock = world
    keeper()
    ack(repo, "b")
    ack(repo, "c")
    repo.manual, repo.fence_reason = True, "disk replacement"
    clock.now += 1
    keeper()
    assert repo.lease == (None, [], "fenced by an operator: disk replacement")
    repo.manual = False
    clock.now += 1
    keeper()
    assert repo.lease[0] is not None  # unfenced: b's and c's grants of a beat this keeper sent count


def test_a_failed_over_region_holds_no_lease_and_says_restore(world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    keeper, repo, _ = world
    repo.statuses["a"] = "failed_over"
    keeper()
    assert repo.lease[0] is None and "regionmesh restore a" in (repo.lease[2] or "")


def test_failed_over_regions_do_not_vote(world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    keeper, repo, clock = world
    repo.statuses["c"] = "failed_over"
    keeper()
    ack(repo, "b")
    ack(repo, "c")  # a grant from a failed-over region is not counted
    clock.now += 1
    keeper()
    assert repo.lease[1] == ["b"]  # self + b: a majority of the two voters
    repo.grants.pop(("a", "b"))
    clock.now += 1
    keeper()
    assert repo.lease[0] is None  # self alone is not a majority of two, c's grant notwithstanding


def test_a_keeper_that_takes_the_lock_back_counts_the_promise_from_then(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21, item 1: in region a, process P1 grants b at t=100; the lock moves to P2, which
    grants b until t=130; P2 dies and P1 takes the lock back while b is being failed over. P2's
    promise runs to 130 + 11.1: P1 may not write b's expiry before then, whatever it remembers
    of its own last grant (t=100)."""
    repo = FakeRepo()
    monkeypatch.setattr(lease_keeper, "repo", repo)
    clock = Clock()
    p1, p2 = LeaseLoop(runtime(), 1.0, clock=clock), LeaseLoop(runtime(), 1.0, clock=clock)
    repo.beats["b"] = 5
    p1._lock_conn = object()  # type: ignore[assignment]  # P1 holds the advisory lock (a session of its own)
    p1.step()
    assert repo.grants[("b", "a")] == (5, "granting")
    p1._lock_conn = None  # a blip: P1's session is gone, and its lock with it
    p2._lock_conn = object()  # type: ignore[assignment]
    while clock.now < 130.0:
        clock.now += 1.0
        repo.beats["b"] += 1
        p2.step()
    assert repo.grants[("b", "a")] == (repo.beats["b"], "granting")  # P2's last grant, at t=130
    p2._lock_conn = None  # P2 dies
    p1._lock_conn = object()  # type: ignore[assignment]  # P1 takes the lock back
    repo.statuses["b"] = "failing_over"
    clock.now = 130.5
    p1.step()
    assert repo.grants[("b", "a")][1] == "withheld"
    while clock.now < 130.0 + SETTINGS.lease_s * (1 + SETTINGS.clock_drift) + SETTINGS.lease_margin_s:
        assert repo.grants[("b", "a")][1] == "withheld", f"expired at t={clock.now} before P2's promise ran out"
        clock.now += 0.5
        p1.step()
    clock.now += 1.0
    p1.step()
    assert repo.grants[("b", "a")][1] == "expired"


def test_taking_the_lock_back_keeps_a_lease_a_majority_still_backs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the grantor's memory starts over: a grant of a beat this process sent still counts."""
    repo = FakeRepo()
    monkeypatch.setattr(lease_keeper, "repo", repo)
    clock = Clock()
    loop = LeaseLoop(runtime(), 1.0, clock=clock)
    loop._lock_conn = object()  # type: ignore[assignment]
    loop.step()
    ack(repo, "b")
    clock.now += 1.0
    loop.step()
    assert repo.lease[0] is not None
    loop._lock_conn = object()  # type: ignore[assignment]  # a blip: the lock's session was replaced
    clock.now += 1.0
    loop.step()
    assert repo.lease[0] is not None and repo.lease[1] == ["b"]


def test_an_expiry_names_the_failover_episode_it_answers(world: tuple[LeaseKeeper, FakeRepo, Clock]) -> None:
    """Issue 21 item 4: an ``expired`` row carries the holder's region epoch it answered, so that a
    later failover of the same holder never counts an expiry left from an earlier one."""
    keeper, repo, clock = world
    repo.beats["b"] = 5
    keeper()
    repo.statuses["b"], repo.epochs["b"] = "failing_over", 2  # first failover of b
    keeper()
    clock.now += SETTINGS.lease_s * (1 + SETTINGS.clock_drift) + SETTINGS.lease_margin_s + 0.1
    keeper()
    assert repo.grants[("b", "a")] == (5, "expired") and repo.episodes[("b", "a")] == 2
    repo.statuses["b"], repo.epochs["b"] = "failed_over", 3
    keeper()  # still no grant since the promise ran out: the expiry stands for the current epoch too
    assert repo.grants[("b", "a")] == (5, "expired") and repo.episodes[("b", "a")] == 3
    repo.statuses["b"], repo.epochs["b"] = "active", 4  # restored: granted again
    repo.beats["b"] = 9
    keeper()
    assert repo.grants[("b", "a")] == (9, "granting")
    repo.statuses["b"], repo.epochs["b"] = "failing_over", 5  # the second failover: a new promise to wait out
    keeper()
    assert repo.grants[("b", "a")] == (9, "withheld") and repo.episodes[("b", "a")] == 5
    clock.now += 1.0
    keeper()
    assert repo.grants[("b", "a")][1] == "withheld"
    clock.now += SETTINGS.lease_s * (1 + SETTINGS.clock_drift) + SETTINGS.lease_margin_s + 0.1
    keeper()
    assert repo.grants[("b", "a")] == (9, "expired") and repo.episodes[("b", "a")] == 5
