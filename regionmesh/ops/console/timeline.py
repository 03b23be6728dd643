"""A run's attempts as a timeline for an SVG drawn on the server: one bar per attempt, from its start
to its end (or to now while it runs), coloured by outcome, labelled with step, region and worker.

Pure: attempts and the current time in, bars and ticks out; the template writes the SVG and escapes
the labels. Times are the database's (``step_attempts.started_at``/``ended_at``, each written by the
region that claimed or ended the attempt), so bars of different regions are as comparable as those
regions' clocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

LABEL_W, PLOT_W, ROW_H, PAD = 260, 560, 22, 10
# Outcomes (models.tables.ATTEMPT_OUTCOMES) -> fill colour; None: still running.
COLOURS = {
    None: "#93c5fd", "succeeded": "#86efac", "failed": "#fca5a5", "timed_out": "#fdba74",
    "worker_lost": "#f9a8d4", "superseded": "#c4b5fd", "cancelled": "#d1d5db", "parked": "#fde68a",
}


@dataclass(frozen=True)
class Bar:
    label: str
    region: str
    outcome: str  # 'running' while it has no end
    x: int
    y: int
    w: int
    colour: str
    seconds: float


@dataclass(frozen=True)
class Timeline:
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[int, str], ...]  # (x, label) along the time axis
    width: int
    height: int
    span_s: float


def _label(a: Mapping[str, Any]) -> str:
    step = a.get("step_key") or str(a.get("task_id", ""))[:8]
    if a.get("idx") is not None:
        step = f"{step}[{a['idx']}]"
    return f"{step} #{a.get('attempt')}"


def layout(attempts: Sequence[Mapping[str, Any]], now: datetime) -> Timeline:
    """Bars for ``attempts`` (each with started_at, ended_at or None, outcome, region, attempt,
    step_key/idx/task_id) on one time axis from the first start to the last end (``now`` for a
    running one). An empty list gives an empty timeline."""
    if not attempts:
        return Timeline((), (), LABEL_W + PLOT_W + 2 * PAD, 2 * PAD, 0.0)
    t0 = min(a["started_at"] for a in attempts)
    ends = [a["ended_at"] or now for a in attempts]
    span = max(max((e - t0).total_seconds() for e in ends), 0.001)
    scale = PLOT_W / span
    bars = []
    for i, (a, end) in enumerate(zip(attempts, ends, strict=True)):
        start_s = (a["started_at"] - t0).total_seconds()
        seconds = max((end - a["started_at"]).total_seconds(), 0.0)
        outcome = a.get("outcome")
        bars.append(Bar(label=_label(a), region=str(a.get("region") or ""), outcome=outcome or "running",
                        x=LABEL_W + PAD + int(start_s * scale), y=PAD + i * ROW_H, w=max(2, int(seconds * scale)),
                        colour=COLOURS.get(outcome, "#f5f5f4"), seconds=round(seconds, 3)))
    ticks = tuple((LABEL_W + PAD + int(PLOT_W * k / 4), f"+{span * k / 4:.2f} s") for k in range(5))
    return Timeline(tuple(bars), ticks, LABEL_W + PLOT_W + 2 * PAD + 40, 2 * PAD + len(bars) * ROW_H + 20, span)
