"""Statements of fair dispatch (issue 22): a region's queued tasks by tenant, taking the chosen
tenant's head, charging worker time, and the replicated weights and limits (``tenant_shares``).

The SQL lives in ``models/sql/fairness.sql``; the choice between tenants is
``workers/fairness.py``'s.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from regionmesh.models.runs import (
    LEASE_ENDED_AT_COMMIT,
    LOCK_WAIT_OUTLASTED_LEASE,
    Claim,
    _claim,
    _unless_lease_refused,
)

# Per tenant with a task queued here: its account, its head (highest band, oldest) and whether a
# limit holds it back now. The running count is read only for a tenant with a cap.
_CANDIDATES = text("""
SELECT ft.tenant_id, ft.pass, q.band, extract(epoch FROM clock_timestamp() - q.queued_at)::float8 AS waited_s,
       coalesce(s.weight, 1) AS weight,
       s.max_running IS NOT NULL AND (SELECT count(*) FROM step_tasks t JOIN workflow_runs r ON r.id = t.run_id
                                       WHERE t.status = 'running' AND t.deleted_at IS NULL
                                         AND r.tenant_id = ft.tenant_id) >= s.max_running AS capped,
       CASE WHEN q.starts_run AND s.rate_per_s IS NOT NULL AND ft.tat IS NOT NULL
            THEN greatest(0, extract(epoch FROM ft.tat - clock_timestamp())
                             - (greatest(coalesce(s.burst, 1), 1) - 1) / s.rate_per_s)::float8
            ELSE 0 END AS rate_wait_s,
       (s.max_running IS NOT NULL OR s.rate_per_s IS NOT NULL) AS limited
  FROM fair_tenants ft
  CROSS JOIN LATERAL (SELECT band, queued_at, starts_run FROM fair_queue q
                       WHERE q.region = ft.region AND q.tenant_id = ft.tenant_id
                         AND (q.not_before IS NULL OR q.not_before <= clock_timestamp() + interval '200 milliseconds')
                       ORDER BY q.band DESC, q.queued_at LIMIT 1) q
  LEFT JOIN tenant_shares s ON s.tenant_id = ft.tenant_id AND s.deleted_at IS NULL
 WHERE ft.region = :region
""")


@dataclass(frozen=True)
class Taken:
    """What ``take`` got: a claim, or why not (``empty``, ``concurrency``, ``rate``, ``no_lease``)."""

    claim: Claim | None
    blocked: str | None = None
    wait_s: float = 0.0
    band: int = 1
    waited_s: float = 0.0
    estimate_s: float = 0.0


def candidates(engine: Engine, region: str) -> list[dict[str, Any]]:
    """Every tenant with a task queued (and due) in ``region``: tenant_id, pass, band and waited_s of
    its head, weight, capped (at its cap now), rate_wait_s (its head starts a run its rate limit
    allows only then), limited (has a cap or a rate limit)."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(_CANDIDATES, {"region": region}).mappings().all()]


def take(engine: Engine, region: str, tenant_id: str, worker: str) -> Taken:
    """Claim ``tenant_id``'s next task in ``region`` (``rm_fair_take``), its limits checked under
    the tenant's lock and its pass charged with the tenant's current cost estimate."""
    def work() -> Taken:
        with engine.begin() as conn:
            est = conn.execute(text("SELECT mean_cost_s FROM fair_tenants WHERE region = :r AND tenant_id = :t"),
                               {"r": region, "t": tenant_id}).scalar()
            estimate = float(est) if est is not None else 0.01
            out: dict[str, Any] = conn.execute(text("SELECT rm_fair_take(:r, :t, :w, :e)"),
                                               {"r": region, "t": tenant_id, "w": worker, "e": estimate}).scalar_one()
        claim = _claim(out.get("claim"))
        return Taken(claim, out.get("blocked"), float(out.get("wait_s") or 0.0), int(out.get("band") or 1),
                     float(out.get("waited_s") or 0.0), estimate)
    return _unless_lease_refused(work, Taken(None, "no_lease"), (LEASE_ENDED_AT_COMMIT, LOCK_WAIT_OUTLASTED_LEASE))


def charge(engine: Engine, region: str, tenant_id: str, used_s: float, estimate_s: float) -> None:
    """Record the worker-seconds a taken task used and correct the tenant's pass by the estimate's miss."""
    with engine.begin() as conn:
        conn.execute(text("SELECT rm_fair_charge(:r, :t, :u, :e)"),
                     {"r": region, "t": tenant_id, "u": used_s, "e": estimate_s})


def set_run_band(engine: Engine, run_id: uuid.UUID, band: int) -> None:
    """Remember the band a run's submission asked for, before the run's tasks are queued."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO fair_run_bands (run_id, band) VALUES (:r, :b) ON CONFLICT DO NOTHING"),
                     {"r": run_id, "b": band})


def shares(engine: Engine, tenant_id: str) -> dict[str, Any] | None:
    """The tenant's weight and limits as this region's copy holds them (None: defaults)."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT weight, max_running, rate_per_s, burst, epoch, origin_region, updated_at "
                                "FROM tenant_shares WHERE tenant_id = :t AND deleted_at IS NULL"),
                           {"t": tenant_id}).mappings().first()
    return None if row is None else dict(row)


def set_shares(engine: Engine, tenant_id: str, **changes: Any) -> dict[str, Any]:
    """Change some of the tenant's weight, max_running, rate_per_s, burst (None clears a limit).
    The row's epoch grows with every change, so the latest change wins everywhere. Returns the row."""
    allowed = {"weight", "max_running", "rate_per_s", "burst"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"unknown share field(s): {', '.join(sorted(unknown))}")
    cols = sorted(changes)
    sets = ", ".join(f"{c} = :{c}" for c in cols)
    insert_cols = ", ".join(["tenant_id", *cols])
    insert_vals = ", ".join([":t", *(f":{c}" for c in cols)])
    with engine.begin() as conn:
        row = conn.execute(text(
            f"""INSERT INTO tenant_shares ({insert_cols}) VALUES ({insert_vals})
                ON CONFLICT (tenant_id) DO UPDATE SET {sets + ', ' if sets else ''}epoch = tenant_shares.epoch + 1,
                   deleted_at = NULL
                RETURNING weight, max_running, rate_per_s, burst, epoch"""),
            {"t": tenant_id, **changes}).mappings().one()
    return dict(row)


def usage(engine: Engine, region: str) -> list[dict[str, Any]]:
    """Per tenant known to ``region``'s fair dispatch: waiting, running, what it received and was refused."""
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT ft.tenant_id,
                   (SELECT count(*) FROM fair_queue q WHERE q.region = ft.region AND q.tenant_id = ft.tenant_id) AS waiting,
                   (SELECT count(*) FROM step_tasks t JOIN workflow_runs r ON r.id = t.run_id
                     WHERE t.status = 'running' AND r.tenant_id = ft.tenant_id) AS running,
                   ft.started, ft.claims, ft.used_s, ft.mean_cost_s, ft.throttled, ft.throttled_by, ft.throttled_at,
                   coalesce(s.weight, 1) AS weight, s.max_running, s.rate_per_s, s.burst
              FROM fair_tenants ft LEFT JOIN tenant_shares s ON s.tenant_id = ft.tenant_id AND s.deleted_at IS NULL
             WHERE ft.region = :r ORDER BY ft.tenant_id"""), {"r": region}).mappings().all()
    return [dict(r) for r in rows]
