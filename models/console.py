"""The operator console's reads: a filtered, keyset-paged run list, a run's attempts, tenants, dead letters.

Read-only, and only from the region's own copy. The run list is built from a fixed statement with
optional conditions, each written as ``(CAST(:x AS type) IS NULL OR column = :x)`` so every value is a
bound parameter and one plan shape serves every combination; paging is by keyset on
``(created_at, id)`` (the ``(tenant_id, created_at)`` index serves a tenant's list) rather than by
offset, so page 1,000 costs what page 1 costs.

A zoned tenant's runs outside its zone are not in ``workflow_runs`` here, only in
``run_summaries`` (metadata, no payload): the list takes both, and says which a row came from.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

MAX_PAGE = 200


@dataclass(frozen=True)
class RunFilter:
    """What the run list is narrowed to; None means "any". ``after`` is the keyset cursor: the
    (created_at, id) of the last row of the previous page (rows strictly older come next)."""

    tenant: str | None = None
    workflow: str | None = None
    status: str | None = None
    owner_region: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    idempotency_key: str | None = None
    after: tuple[datetime, uuid.UUID] | None = None
    limit: int = 50


# Both halves take the same conditions; a summary has no idempotency key, so a key filter excludes it.
_CONDITIONS = """(CAST(:tenant AS text) IS NULL OR {t}.tenant_id = :tenant)
       AND (CAST(:workflow AS text) IS NULL OR {t}.workflow = :workflow)
       AND (CAST(:status AS text) IS NULL OR {t}.status = :status)
       AND (CAST(:owner AS text) IS NULL OR {t}.owner_region = :owner)
       AND (CAST(:since AS timestamptz) IS NULL OR {t}.created_at >= :since)
       AND (CAST(:until AS timestamptz) IS NULL OR {t}.created_at < :until)
       AND (CAST(:after_at AS timestamptz) IS NULL
            OR ({t}.created_at, {t}.{id}) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))"""

_RUNS_PAGE = f"""
SELECT * FROM (
  (SELECT r.id, r.tenant_id, r.workflow, r.status, r.owner_region, r.epoch, r.created_at, r.finished_at,
          r.idempotency_key, r.zone, false AS summary_only
     FROM workflow_runs r
    WHERE r.deleted_at IS NULL AND (CAST(:key AS text) IS NULL OR r.idempotency_key = :key)
      AND {_CONDITIONS.format(t="r", id="id")}
    ORDER BY r.created_at DESC, r.id DESC LIMIT :limit)
  UNION ALL
  (SELECT s.run_id, s.tenant_id, s.workflow, s.status, s.owner_region, s.epoch, s.created_at, s.finished_at,
          NULL, s.zone, true
     FROM run_summaries s
    WHERE s.deleted_at IS NULL AND CAST(:key AS text) IS NULL
      AND NOT EXISTS (SELECT 1 FROM workflow_runs w WHERE w.id = s.run_id)
      AND {_CONDITIONS.format(t="s", id="run_id")}
    ORDER BY s.created_at DESC, s.run_id DESC LIMIT :limit)
) page ORDER BY created_at DESC, id DESC LIMIT :limit"""


def runs_page_statement(f: RunFilter) -> tuple[str, dict[str, Any]]:
    """The statement and its parameters for one page (``limit + 1`` rows: one more tells whether a
    next page exists). Values are only ever parameters; the text is the same for every filter."""
    limit = max(1, min(f.limit, MAX_PAGE))
    params: dict[str, Any] = {
        "tenant": f.tenant, "workflow": f.workflow, "status": f.status, "owner": f.owner_region,
        "since": f.since, "until": f.until, "key": f.idempotency_key,
        "after_at": f.after[0] if f.after else None, "after_id": f.after[1] if f.after else None,
        "limit": limit + 1,
    }
    return _RUNS_PAGE, params


def runs_page(engine: Engine, f: RunFilter) -> tuple[list[dict[str, Any]], bool]:
    """One page of runs, newest first, and whether there are more."""
    sql, params = runs_page_statement(f)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(text(sql), params).mappings().all()]
    limit = params["limit"] - 1
    return rows[:limit], len(rows) > limit


def run_attempts(engine: Engine, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every attempt of a run's tasks (``step_attempts``, replicated everywhere): region, worker,
    epoch, start, end and outcome (NULL while it runs); the step key, index and the attempt's error
    text where the task row is held here (payload: not outside the run's zone)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT a.id, a.task_id, a.attempt, a.region, a.worker, a.epoch, a.started_at, a.ended_at,
                      a.outcome, t.step_key, t.idx, t.attempt_errors ->> a.id::text AS error
                 FROM step_attempts a LEFT JOIN step_tasks t ON t.id = a.task_id
                WHERE a.run_id = :r AND a.deleted_at IS NULL
                ORDER BY a.started_at, a.attempt"""), {"r": run_id}).mappings().all()
    return [dict(r) for r in rows]


def record_action(engine: Engine, *, actor: str, action: str, target: str, tenant_id: str | None,
                  acted_region: str | None, outcome: str, detail: str | None) -> uuid.UUID:
    """Write one console action into ``console_actions`` (replicated: every region's console shows
    it). The console's region and the row's origin are this engine's region. Returns the row's id."""
    action_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(text(
            """INSERT INTO console_actions (id, actor, action, target, tenant_id, console_region, acted_region,
                                           outcome, detail)
               VALUES (:id, :actor, :action, :target, :tenant, current_setting('regionmesh.region'), :acted,
                       :outcome, :detail)"""),
            {"id": action_id, "actor": actor, "action": action, "target": target, "tenant": tenant_id,
             "acted": acted_region, "outcome": outcome, "detail": detail})
    return action_id


def console_actions(engine: Engine, limit: int = 200, *, target: str | None = None) -> list[dict[str, Any]]:
    """The newest console actions this region's copy holds (from every region's console), or those
    on one target."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT id, at, actor, action, target, tenant_id, console_region, acted_region, outcome, detail
                 FROM console_actions
                WHERE deleted_at IS NULL AND (CAST(:target AS text) IS NULL OR target = :target)
                ORDER BY at DESC LIMIT :l"""), {"l": limit, "target": target}).mappings().all()
    return [dict(r) for r in rows]


def trend_sample(engine: Engine) -> dict[str, Any]:
    """The numbers the console plots over time, from cheap reads of this region's copy: runs and
    attempts inserted so far (cumulative counters of the statistics collector: local and replicated
    inserts, so the mesh's throughput as seen here), and the queued tasks of runs owned here with
    the age of the oldest (waiting time; the (status, deadline_at) index)."""
    with engine.connect() as conn:
        row = conn.execute(text(
            """SELECT clock_timestamp() AS at,
                      (SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE relname = 'workflow_runs') AS runs,
                      (SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE relname = 'step_attempts') AS attempts,
                      q.queued, q.oldest_s
                 FROM (SELECT count(*) AS queued,
                              coalesce(extract(epoch FROM clock_timestamp() - min(queued_at)), 0) AS oldest_s
                         FROM step_tasks
                        WHERE status = 'queued' AND deleted_at IS NULL
                          AND (not_before IS NULL OR not_before <= clock_timestamp())) q""")).mappings().one()
    return dict(row)


def tenants_seen(engine: Engine, limit: int = 500) -> list[dict[str, Any]]:
    """Tenants this region knows of (registry rows, zone bindings, runs), each with its registry row
    and zone; the distinct tenants of the run tables are read by skipping along their tenant index."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """WITH RECURSIVE run_tenants(t) AS (
                   (SELECT tenant_id FROM workflow_runs ORDER BY tenant_id LIMIT 1)
                   UNION ALL
                   SELECT (SELECT tenant_id FROM workflow_runs WHERE tenant_id > run_tenants.t
                            ORDER BY tenant_id LIMIT 1) FROM run_tenants WHERE run_tenants.t IS NOT NULL),
               summary_tenants(t) AS (
                   (SELECT tenant_id FROM run_summaries ORDER BY tenant_id LIMIT 1)
                   UNION ALL
                   SELECT (SELECT tenant_id FROM run_summaries WHERE tenant_id > summary_tenants.t
                            ORDER BY tenant_id LIMIT 1) FROM summary_tenants WHERE summary_tenants.t IS NOT NULL),
               ids AS (SELECT t FROM run_tenants WHERE t IS NOT NULL
                       UNION SELECT t FROM summary_tenants WHERE t IS NOT NULL
                       UNION SELECT tenant_id FROM tenant_registry WHERE deleted_at IS NULL
                       UNION SELECT tenant_id FROM tenant_zones WHERE deleted_at IS NULL)
               SELECT ids.t AS tenant_id, g.home_region, g.reason, g.note, g.epoch, z.zone
                 FROM ids
                 LEFT JOIN tenant_registry g ON g.tenant_id = ids.t AND g.deleted_at IS NULL
                 LEFT JOIN tenant_zones z ON z.tenant_id = ids.t AND z.deleted_at IS NULL
                ORDER BY ids.t LIMIT :l"""), {"l": limit}).mappings().all()
    return [dict(r) for r in rows]


def dead_letters_with_privacy(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest dead letters here, each with whether its tenant is bound to a zone or erased
    (whose body the console never shows)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT d.id, d.received_at, d.region, d.task_name, d.reason, d.submission_id, d.tenant_id,
                      d.payload, d.content_type, d.payload_size,
                      EXISTS (SELECT 1 FROM tenant_zones z WHERE z.tenant_id = d.tenant_id) AS zoned,
                      EXISTS (SELECT 1 FROM tenant_erasures e
                               WHERE e.tenant_hash = encode(sha256(convert_to(d.tenant_id, 'UTF8')), 'hex')) AS erased
                 FROM dead_letters d ORDER BY d.id DESC LIMIT :l"""), {"l": limit}).mappings().all()
    return [dict(r) for r in rows]
