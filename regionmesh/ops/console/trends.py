"""Numbers over time for the console's plots: replication lag, throughput, waiting work.

Two sources. With a Prometheus configured ($REGIONMESH_CONSOLE_PROMETHEUS, its base URL), the
console asks it (``/api/v1/query_range``) for the last ``WINDOW_S`` of the regionmesh metrics
(docs/reference/metrics.md). Without one, it keeps a bounded history of its own (``History``: at most
``MAX_SAMPLES`` samples, one per refresh, taken while the console runs): each peer's heartbeat age
here (lag), runs and attempts inserted here per second (the statistics collector's counters: local
and replicated inserts, so the mesh's throughput as this copy receives it), and the queued tasks
ready to run with the oldest one's age (waiting time).

``plot`` turns a series into an inline SVG polyline's points (drawn by the template; nothing is
downloaded).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

MAX_SAMPLES = 360  # an hour at the default 10 s
WINDOW_S = 900
PLOT_W, PLOT_H = 360, 90

Series = dict[str, list[tuple[float, float]]]  # label -> [(unix time, value)]


@dataclass(frozen=True)
class Plot:
    title: str
    unit: str
    lines: tuple[tuple[str, str, str], ...]  # (label, polyline points, colour)
    top: float  # the value at the top of the plot (the bottom is 0)
    latest: tuple[tuple[str, float], ...]  # (label, last value)
    span_s: float
    width: int = PLOT_W
    height: int = PLOT_H


PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def plot(title: str, unit: str, series: Mapping[str, Sequence[tuple[float, float]]],
         width: int = PLOT_W, height: int = PLOT_H) -> Plot:
    """Each series scaled into ``width`` x ``height`` (time left to right over the span of all of
    them, 0 at the bottom, the largest value at the top). Pure."""
    points = [p for s in series.values() for p in s]
    if not points:
        return Plot(title, unit, (), 0.0, (), 0.0, width, height)
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    span = max(t1 - t0, 1e-9)
    top = max(max(v for _, v in points), 1e-9)
    lines = []
    for i, (label, s) in enumerate(sorted(series.items())):
        xy = " ".join(f"{(t - t0) / span * width:.1f},{height - v / top * height:.1f}" for t, v in s)
        lines.append((label, xy, PALETTE[i % len(PALETTE)]))
    latest = tuple((label, round(s[-1][1], 3)) for label, s in sorted(series.items()) if s)
    return Plot(title, unit, tuple(lines), round(top, 3), latest, round(t1 - t0, 1), width, height)


def rates(counter: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Per-second rates between consecutive samples of a cumulative counter (a reset counts as 0)."""
    out = []
    for (t0, v0), (t1, v1) in zip(counter, counter[1:], strict=False):
        if t1 > t0:
            out.append((t1, max(v1 - v0, 0.0) / (t1 - t0)))
    return out


class History:
    """The console's own bounded history, filled by ``sample`` (called from one sampling thread)."""

    def __init__(self, read: Callable[[], Mapping[str, Any]], max_samples: int = MAX_SAMPLES) -> None:
        self._read = read
        self._samples: deque[tuple[float, Mapping[str, Any]]] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def sample(self, now: float | None = None) -> None:
        """Read one sample; a failed read leaves a gap (the plot spans what was read)."""
        try:
            values = self._read()
        except Exception:  # the database may be down for a while; plots resume when it answers
            return
        with self._lock:
            self._samples.append((time.time() if now is None else now, values))

    def __len__(self) -> int:
        return len(self._samples)

    def plots(self) -> list[Plot]:
        with self._lock:
            samples = list(self._samples)
        lag: Series = {}
        for t, v in samples:
            for peer, age in (v.get("lag") or {}).items():
                lag.setdefault(peer, []).append((t, float(age)))
        runs = rates([(t, float(v["runs"])) for t, v in samples if "runs" in v])
        attempts = rates([(t, float(v["attempts"])) for t, v in samples if "attempts" in v])
        queued = [(t, float(v["queued"])) for t, v in samples if "queued" in v]
        oldest = [(t, float(v["oldest_s"])) for t, v in samples if "oldest_s" in v]
        return [plot("replication lag (peer heartbeat age here)", "s", lag),
                plot("throughput (inserted here)", "/s", {"runs": runs, "attempts": attempts}),
                plot("waiting: oldest queued task", "s", {"oldest": oldest}),
                plot("waiting: queued tasks", "", {"queued": queued})]


class Prometheus:
    """Reads the plots' series from a Prometheus server (its base URL; no credentials in it)."""

    def __init__(self, base_url: str, region: str, timeout_s: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.region = region
        self.timeout_s = timeout_s

    def queries(self) -> list[tuple[str, str, str, str]]:
        """(title, unit, PromQL, label that names a series) of each plot."""
        r = self.region
        return [("replication lag into " + r, "s", f'max by (from) (regionmesh_replication_lag_seconds{{to="{r}"}})', "from"),
                ("steps finished in " + r, "/s",
                 f'sum by (outcome) (rate(regionmesh_step_duration_seconds_count{{region="{r}"}}[1m]))', "outcome"),
                ("queued messages in " + r, "", 'sum by (queue) (regionmesh_queue_depth)', "queue")]

    def range(self, query: str, label: str, now: float) -> Series:
        params = urlencode({"query": query, "start": now - WINDOW_S, "end": now, "step": max(WINDOW_S // 120, 1)})
        with urlopen(f"{self.base_url}/api/v1/query_range?{params}", timeout=self.timeout_s) as response:
            body = json.load(response)
        out: Series = {}
        for result in body.get("data", {}).get("result", []):
            name = str(result.get("metric", {}).get(label, "all"))
            out[name] = [(float(t), float(v)) for t, v in result.get("values", [])]
        return out

    def plots(self, now: float | None = None) -> list[Plot]:
        at = time.time() if now is None else now
        return [plot(title, unit, self.range(q, label, at)) for title, unit, q, label in self.queries()]
