"""A run's DAG laid out for an SVG drawn on the server: one column per depth, state colours, and a
map step drawn as a stack with its fan-out count.

Pure: steps in, boxes and edges out; the template writes the SVG and escapes the labels.
A step's depth is the longest chain of dependencies before it, so every edge points right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 62, 56, 18, 12
# Step states (models.tables.STEP_STATUSES) -> fill colour; text stays dark on all of them.
COLOURS = {
    "waiting": "#e5e7eb", "ready": "#dbeafe", "queued": "#dbeafe", "running": "#93c5fd",
    "succeeded": "#86efac", "failed": "#fca5a5", "cancelled": "#d1d5db",
}
UNKNOWN_COLOUR = "#f5f5f4"


@dataclass(frozen=True)
class Box:
    key: str
    status: str
    x: int
    y: int
    fan_out: int | None  # tasks of a map step (None: not a map step)
    done: int  # its tasks that succeeded
    attempts: int  # the highest attempt of its tasks
    regions: tuple[str, ...]  # where its tasks ran, as this copy holds it
    colour: str


@dataclass(frozen=True)
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Layout:
    boxes: tuple[Box, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int


def depths(deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each step's depth: 0 without dependencies, else one more than its deepest dependency.
    A dependency that is not a step of the run (a summary lists states only) counts as depth -1."""
    out: dict[str, int] = {}

    def depth(key: str, seen: frozenset[str]) -> int:
        if key in out:
            return out[key]
        if key not in deps or key in seen:  # unknown, or a cycle (validation forbids one): stop
            return -1
        d = 1 + max((depth(dep, seen | {key}) for dep in deps[key]), default=-1)
        out[key] = d
        return d

    for key in deps:
        depth(key, frozenset())
    return out


def layout(steps: Sequence[Mapping[str, Any]]) -> Layout:
    """Boxes and edges for ``steps`` (each: step_key, status, depends_on, map_over, tasks)."""
    deps = {s["step_key"]: list(s.get("depends_on") or ()) for s in steps}
    depth = depths(deps)
    columns: dict[int, list[Mapping[str, Any]]] = {}
    for s in steps:
        columns.setdefault(depth[s["step_key"]], []).append(s)
    boxes: dict[str, Box] = {}
    for col, members in sorted(columns.items()):
        for row, s in enumerate(members):
            tasks = list(s.get("tasks") or ())
            fan_out = len(tasks) if s.get("map_over") else None
            boxes[s["step_key"]] = Box(
                key=s["step_key"], status=s["status"], x=PAD + col * (BOX_W + GAP_X), y=PAD + row * (BOX_H + GAP_Y),
                fan_out=fan_out, done=sum(1 for t in tasks if t.get("status") == "succeeded"),
                attempts=max((int(t.get("attempt") or 0) for t in tasks), default=0),
                regions=tuple(sorted({t["region"] for t in tasks if t.get("region")})),
                colour=COLOURS.get(s["status"], UNKNOWN_COLOUR),
            )
    edges = tuple(
        Edge(b.x + BOX_W, b.y + BOX_H // 2, boxes[key].x, boxes[key].y + BOX_H // 2)
        for key, ds in deps.items() for dep in ds if (b := boxes.get(dep)) is not None
    )
    width = PAD * 2 + max((b.x for b in boxes.values()), default=0) + BOX_W
    height = PAD * 2 + max((b.y for b in boxes.values()), default=0) + BOX_H + 8  # room for a stack's shadow
    return Layout(tuple(boxes.values()), edges, width, height)


def summary_steps(states: Mapping[str, str]) -> list[dict[str, Any]]:
    """Steps from a run summary (state per step, no dependencies held): one column, in key order."""
    return [{"step_key": key, "status": status, "depends_on": [], "map_over": None, "tasks": []}
            for key, status in sorted(states.items())]
