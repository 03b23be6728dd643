"""Metrics the workers observe (step durations, forward latency).

With ``PROMETHEUS_MULTIPROC_DIR`` set (the dev mesh sets one per region) every
worker process writes its samples there and ``regionmesh metrics serve``
aggregates them; without it these are plain in-process metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STEP_DURATION = Histogram(
    "regionmesh_step_duration_seconds", "Time a step task's handler ran, by outcome.",
    ["region", "outcome"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
)
FORWARD_LATENCY = Histogram(
    "regionmesh_forward_latency_seconds", "Time to publish a submission to its home region's broker.",
    ["region", "home"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
)
SUBMISSIONS = Counter(
    "regionmesh_submissions_total", "Submissions handled by this region, by what happened to them.",
    ["region", "outcome"],
)
# Fair dispatch (issue 22): labelled by band and by limit, never by tenant (no label explosion;
# per-tenant figures are in ``regionmesh tenants usage``).
FAIR_WAIT = Histogram(
    "regionmesh_fair_wait_seconds", "Time a task waited queued before fair dispatch took it, by priority band.",
    ["region", "band"], buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
FAIR_THROTTLED = Counter(
    "regionmesh_fair_throttled_total", "Times fair dispatch found every waiting tenant held back, by the limit.",
    ["region", "limit"],
)
