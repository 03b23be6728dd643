"""Hand-made histories for the campaign checker's unit tests: one run of ``t_ledger`` (t1/k1) that
ran cleanly in region a, and helpers to plant executions and faults in it."""

from __future__ import annotations

from typing import Any

from bench.campaign_checker import Ack, Bounds, Fault, History, run_id

REGIONS = ["a", "b", "c"]
BOUNDS = Bounds(lease_s=4.0, drift=0.01, margin_s=1.0)  # L(1+rho)+margin = 5.04 s
RUN = run_id("t1", "k1")


def line(step: str, region: str, phase: str, t: float, *, idx: int | None = None, attempt: int = 1,
         pid: int = 100, epoch: int = 1, lease_until: float | None = None, run: str = RUN) -> dict[str, Any]:
    """One ledger line as the writer appends it."""
    return {"run": run, "step": step, "idx": idx, "region": region, "attempt": attempt, "phase": phase, "t": t,
            "mono": t + 1000.0, "pid": pid, "worker": f"w@{region}", "epoch": epoch, "lease_until": lease_until,
            "key": f"{run}:{step}" + ("" if idx is None else f":{idx}")}


def execution(step: str, region: str, start: float, effect: float | None, **kw: Any) -> list[dict[str, Any]]:
    """A start line and, unless ``effect`` is None, its effect line."""
    out = [line(step, region, "start", start, **kw)]
    if effect is not None:
        out.append(line(step, region, "effect", effect, **kw))
    return out


def clean_abc() -> list[dict[str, Any]]:
    return execution("a", "a", 90.0, 91.0) + execution("b", "a", 92.0, 93.0) + execution("c", "a", 92.0, 93.5)


def with_d(*execs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The clean a, b, c and the given executions of d."""
    return clean_abc() + [entry for ex in execs for entry in ex]


def isolated(region: str, t0: float, healed: float, **kw: Any) -> Fault:
    """``region`` cut off both ways at t0, as a driver passing the new fields records it."""
    others = [r for r in REGIONS if r != region]
    links = tuple([(region, o) for o in others] + [(o, region) for o in others])
    return Fault("repl_cut", None, t0, healed + 30.0, regions=(region,), detail=f"isolated {region}",
                 severed=links, healed=healed, **kw)


def history(**change: Any) -> History:
    h = History(regions=list(REGIONS), acks=[Ack("direct", "t1", "k1", "a", 89.0, sid="s1", workflow="t_ledger",
                                                  input={"sleep": {}})],
                faults=[], runs={r: [("t1", "k1", RUN, "succeeded")] for r in REGIONS}, tasks=set(),
                ledger=with_d(execution("d", "a", 94.0, 95.0)), identical=True, apply_errors=[],
                apply_error_count_delta={}, dead_letters=[], valid_submission_ids={"s1"}, outbox_rejected=[],
                bounds=BOUNDS)
    for key, value in change.items():
        setattr(h, key, value)
    return h
