"""The checker's verdict: every finding in a named class (the names the mutant table in
``bench/mutants.py`` expects), counts of what was forgiven and why, and the table it prints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Violation classes, in the order they are reported.
LOST = "lost_submission"  # an acknowledged publish nothing accounts for
LOST_FIRST = "lost_first_publish"  # a first publish lost, its run created only by the producer's re-send
DUPLICATE_RUN = "duplicate_run"  # more than one run (or creating submission) for one (tenant, key)
DUPLICATE_EFFECT = "duplicate_effect"  # a second effect of a task the rule does not forgive
OVERLAP_IN_REGION = "overlap_in_region"  # two executions of one task at once in one region
OVERLAP_ACROSS = "overlap_across_regions"  # at once in two regions, not the cut-off handler and its heir
LEASE_OVERRUN = "lease_overrun"  # work started (or a lease believed) past L·(1+ρ)+margin after a cut-off
STALE_COMPLETION = "stale_completion"  # the output kept is a superseded execution's (a lower epoch than one that took effect)
ORDER = "order"  # a step started before an effect of one of its dependencies
MISSING_EFFECT = "missing_effect"  # a run or task marked succeeded whose expected effect never happened
UNEXPECTED_EFFECT = "unexpected_effect"  # an effect of a task the definition and input do not have
STUCK = "stuck"
DIVERGENCE = "divergence"  # regions differ (the product's verify or the checker's own comparison)
APPLY_ERROR = "apply_error"
DEAD_LETTER = "dead_letter"  # without a reason, or for a valid submission
OUTBOX_REJECTED = "outbox_rejected"
RESIDENCY = "residency"  # a zoned tenant's row or input found in a region outside its zone


@dataclass
class Verdict:
    submissions: dict[str, int]
    faults: dict[str, int]
    runs: int
    step_effects: int
    accounting: str = "submission id"  # or "key": the weaker check, when the product records no submissions
    findings: list[tuple[str, str]] = field(default_factory=list)  # (class, what)
    crash_reruns: dict[str, int] = field(default_factory=dict)  # forgiven repeats, by the rule they satisfied
    accounted: dict[str, int] = field(default_factory=dict)  # acknowledged publishes by outcome
    delayed_first: dict[str, int] = field(default_factory=dict)  # first publishes that arrived after a re-send, by hand-off
    lost_first: dict[str, int] = field(default_factory=dict)  # lost first publishes closed by a re-send, by hand-off
    open_executions: int = 0  # executions without an effect whose end no fault tells (never a duplicate)
    notes: list[str] = field(default_factory=list)  # what the checker could not check, and why
    identical: bool = False
    apply_error_count_delta: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    # Re-sent by their producer / whose run was created only after that re-send (the key-based view).
    resent: dict[str, int] = field(default_factory=dict)
    created_after_resend: dict[str, int] = field(default_factory=dict)

    def add(self, cls: str, what: str) -> None:
        self.findings.append((cls, what))

    def of(self, cls: str) -> list[str]:
        return [what for c, what in self.findings if c == cls]

    @property
    def classes(self) -> set[str]:
        """The violation classes that fired."""
        return {c for c, _ in self.findings}

    # The fields the campaign's test and results read (kept from the first checker).
    @property
    def lost(self) -> list[str]:
        return self.of(LOST) + self.of(LOST_FIRST)

    @property
    def duplicated_runs(self) -> list[str]:
        return self.of(DUPLICATE_RUN)

    @property
    def duplicated_effects(self) -> list[str]:
        return self.of(DUPLICATE_EFFECT)

    @property
    def missing_effects(self) -> list[str]:
        return self.of(MISSING_EFFECT)

    @property
    def stuck(self) -> list[str]:
        return self.of(STUCK)

    @property
    def apply_errors(self) -> list[str]:
        return self.of(APPLY_ERROR)

    @property
    def bad_dead_letters(self) -> list[str]:
        return self.of(DEAD_LETTER)

    @property
    def outbox_rejected(self) -> list[str]:
        return self.of(OUTBOX_REJECTED)

    @property
    def duplicated(self) -> int:
        return len(self.duplicated_runs) + len(self.duplicated_effects)

    @property
    def violations(self) -> list[str]:
        return [f"{cls}: {what}" for cls, what in self.findings]

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "lost": self.lost, "duplicated_runs": self.duplicated_runs, "duplicated_effects": self.duplicated_effects,
            "missing_effects": self.missing_effects, "stuck": self.stuck, "apply_errors": self.apply_errors,
            "bad_dead_letters": self.bad_dead_letters, "outbox_rejected": self.outbox_rejected,
            "duplicated": self.duplicated, "classes": sorted(self.classes), "violations": self.violations,
            "ok": self.ok}


def print_table(v: Verdict, seed: int) -> None:
    def row(name: str, value: Any) -> None:
        print(f"  {name:<38} {value}")

    print(f"\nfault campaign, seed {seed}")
    row("submissions acknowledged", sum(v.submissions.values()))
    for path, n in sorted(v.submissions.items()):
        row(f"  {path}", n)
    row("faults injected", sum(v.faults.values()))
    for kind, n in sorted(v.faults.items()):
        row(f"  {kind}", n)
    row("runs (distinct tenant/key)", v.runs)
    row("step tasks with an effect", v.step_effects)
    row(f"lost (by {v.accounting})", len(v.of(LOST)))
    row("lost first publishes closed by a re-send", f"{len(v.of(LOST_FIRST))} {v.lost_first}")
    row("first publishes delayed past a re-send", f"{sum(v.delayed_first.values())} {v.delayed_first}")
    row("accounted", v.accounted)
    row("duplicated (runs + effects)", v.duplicated)
    row("overlaps (in a region / across)", f"{len(v.of(OVERLAP_IN_REGION))} / {len(v.of(OVERLAP_ACROSS))}")
    row("started past the lease bound", len(v.of(LEASE_OVERRUN)))
    row("stale completions kept", len(v.of(STALE_COMPLETION)))
    row("residency (zoned data outside its zone)", len(v.of(RESIDENCY)))
    row("order / missing / unexpected effects",
        f"{len(v.of(ORDER))} / {len(v.missing_effects)} / {len(v.of(UNEXPECTED_EFFECT))}")
    row("documented re-runs", sum(v.crash_reruns.values()))
    for rule, n in sorted(v.crash_reruns.items()):
        row(f"  {rule}", n)
    row("executions cut short (no effect)", v.open_executions)
    row("stuck", len(v.stuck))
    row("verify", "identical" if v.identical else "DIFFERENT")
    row("divergence (checker's own comparison)", len(v.of(DIVERGENCE)))
    row("apply errors (not network)", len(v.apply_errors))
    row("dead letters (bad)", f"{v.dead_letters} ({len(v.bad_dead_letters)})")
    row("outbox entries rejected", len(v.outbox_rejected))
    row("re-sent by producers", f"{sum(v.resent.values())} {v.resent}")
    row("  run created after the re-send", f"{sum(v.created_after_resend.values())} {v.created_after_resend}")
    for note in v.notes:
        print(f"  NOTE {note}")
    for line in v.violations[:30]:
        print(f"  VIOLATION {line}")
