"""Which region may inherit a failed region's runs: the one that holds all of its committed work
that any live peer holds. Pure.

A failover adopts the victim's unfinished runs as the heir's copy holds them. With ``origin =
none`` a peer never relays the victim's changes to another peer, so when the victim's link to the
heir was cut before its lease ended, a third region can hold steps the victim completed that the
heir never received; adopting from the heir's copy would run them again.

Each peer applies a *prefix* of the victim's WAL, in commit order; its replication origin's
``remote_lsn`` (persisted progress) says how long a prefix. Prefixes are ordered, so a peer at
least as far as every other reachable peer holds every commit of the victim that any of them
holds: nothing to compare (``ahead``). A peer further along holds more of the victim's WAL, but
most of it may be heartbeats and lease rows, which the victim keeps writing after a cut and which
change nothing an adoption reads. So for a peer that is ahead, what matters is compared: the
victim's runs as the heir would adopt them, against the same runs in the peer's copy
(``missing_work``). Only a run or an ended execution the heir lacks refuses the heir.

LSNs are PostgreSQL's ``pg_lsn`` text (``16/B374D848``): two hex numbers, the high and low 32 bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def lsn_value(lsn: str) -> int:
    """``pg_lsn`` text as an integer (``0/0`` is 0)."""
    high, _, low = lsn.partition("/")
    if not low:
        raise ValueError(f"not a pg_lsn: {lsn!r}")
    return (int(high, 16) << 32) | int(low, 16)


def ahead(heir_lsn: str | None, peer_lsns: Mapping[str, str | None]) -> dict[str, str]:
    """The peers that applied more of the victim's WAL than the heir (peer -> its LSN). A peer with
    no recorded progress (None) applied nothing; a heir with none is behind every peer that did."""
    floor = -1 if heir_lsn is None else lsn_value(heir_lsn)
    return {p: lsn for p, lsn in peer_lsns.items() if lsn is not None and lsn_value(lsn) > floor}


@dataclass(frozen=True)
class TaskView:
    """A step task as one region's copy holds it: its status and how many attempts it began."""

    step: str
    idx: int | None
    status: str
    attempt: int

    @property
    def ended(self) -> int:
        """Attempts that ended (a running one has not; adoption re-queues it without counting it)."""
        return self.attempt - (1 if self.status == "running" else 0)


@dataclass(frozen=True)
class RunView:
    """One of the victim's runs as one region's copy holds it (owner, status, tasks by id)."""

    owner: str
    status: str
    tasks: Mapping[str, TaskView]


@dataclass(frozen=True)
class Missing:
    """Work of the victim that a peer holds and the heir lacks: ``what`` names it for an operator."""

    run: str
    what: str


def _task_name(t: TaskView) -> str:
    return t.step if t.idx is None else f"{t.step}[{t.idx}]"


def missing_work(victim: str, heir: Mapping[str, RunView], peer: Mapping[str, RunView]) -> list[Missing]:
    """What the peer's copy of the victim's runs holds that the heir's adoption would lose or redo.

    ``heir``: the heir's copy of the victim's running runs (what it would adopt) and of every run
    in ``peer``; ``peer``: the peer's copy of those runs and of the victim's runs it holds that the
    heir may lack. A run the heir's copy no longer gives the victim (adopted or moved since) is the
    heir's, not lost. Reported: a run of the victim the heir lacks (running: nobody would adopt it;
    finished: a re-sent submission would create and run it again in the heir), a run finished in
    the peer that the heir would adopt, and in a run the heir would adopt a task the heir lacks, a
    task finished in the peer but not in the heir, or one with more ended attempts in the peer (an
    execution, failed and to be retried, that the heir would start again as the same attempt).
    """
    out: list[Missing] = []
    for run_id, p in sorted(peer.items()):
        if p.owner != victim:
            continue
        h = heir.get(run_id)
        if h is None:
            # Running, no one would adopt it; finished, a re-sent submission would create it again.
            out.append(Missing(run_id, f"the run, {p.status} (created there, not here)"))
            continue
        if h.owner != victim or h.status != "running":
            continue
        if p.status in FINISHED:
            out.append(Missing(run_id, f"the run {p.status}"))
            continue
        for task_id, pt in sorted(p.tasks.items()):
            ht = h.tasks.get(task_id)
            if ht is None:
                out.append(Missing(run_id, f"step {_task_name(pt)} (released there, not here)"))
            elif pt.status in FINISHED and ht.status not in FINISHED:
                out.append(Missing(run_id, f"step {_task_name(pt)} {pt.status}"))
            elif pt.ended > ht.ended and ht.status not in FINISHED:
                out.append(Missing(run_id, f"step {_task_name(pt)} attempt {pt.ended} ended"))
    return out


def furthest(holders: Mapping[str, tuple[str, list[Missing]]]) -> str:
    """The holder that applied the most of the victim's WAL (its prefix holds every other's)."""
    return max(holders, key=lambda p: (lsn_value(holders[p][0]), p))


def refusal(victim: str, heir: str, heir_lsn: str | None, holders: Mapping[str, tuple[str, list[Missing]]]) -> str:
    """The operator's message when peers hold work of ``victim`` that ``heir`` lacks
    (``holders``: peer -> (its LSN of the victim's WAL, what it holds)); '' when none does."""
    if not holders:
        return ""
    best = furthest(holders)
    lines = []
    for peer, (lsn, missing) in sorted(holders.items()):
        first = missing[0]
        lines.append(f"{peer} has applied {victim}'s WAL up to {lsn} and holds {len(missing)} piece(s) of "
                     f"{victim}'s work that {heir} lacks (e.g. run {first.run}: {first.what})")
    return (f"{heir} lacks work {victim} committed: fail over to {best}, which has applied {victim}'s WAL up to "
            f"{holders[best][0]}; {heir} only up to {heir_lsn or 'nothing'}. " + "; ".join(lines) + ". "
            f"Adopting from {heir}'s copy would run completed steps again. {victim} stays failing_over: run "
            f"'regionmesh failover {victim} --to {best}', or heal the link from {victim} to {heir} until {heir} "
            "has caught up and run this command again")
