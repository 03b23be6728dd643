"""Every statement about runs, steps and step tasks.

State transitions are PL/pgSQL functions (migration 0002): one round trip and
one transaction each. Functions here own their transaction.

Claims, completions, failures and run creation are guarded by the lease up to their commit
(``rm_guard_work``, ``rm_lease_at_commit``; migration 0021): a transaction that would commit with
less than the commit margin of lease left is rolled back (SQLSTATE ``RM001``), and a lock wait
that outlasts the lease ends it (``55P03``, lock_timeout). Both are translated here into what
the lease check at the start already answered: no claim, a discarded outcome, ``no_lease``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")
# rm_lease_at_commit's refusal: the lease (minus the commit margin) ended before the commit.
LEASE_ENDED_AT_COMMIT = "RM001"
# lock_not_available: a lock wait outlasted the lock_timeout rm_guard_work derived from the lease.
LOCK_WAIT_OUTLASTED_LEASE = "55P03"


def _pgcode(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "pgcode", None)


def _unless_lease_refused(work: Callable[[], T], refused: T, codes: tuple[str, ...]) -> T:
    """``work()``, or ``refused`` when the database rolled it back for want of lease (``codes``)."""
    try:
        return work()
    except DBAPIError as exc:
        if _pgcode(exc) in codes:
            return refused
        raise


@dataclass(frozen=True)
class Claim:
    """A step task this worker now holds, with what it needs to run it."""

    task_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int
    payload: Any
    index: int | None
    idempotency_key: str
    step_key: str
    handler: str
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float
    timeout_s: float
    tenant_id: str
    workflow: str
    epoch: int
    # The claim's fencing stamp: the updated_at it wrote into the task's row, in microseconds since
    # 1970 (grows with every claim of the task within an epoch; 0 from a database before 0020).
    fence_us: int = 0
    lease_until: datetime | None = None  # this region's lease end as the claim read it (None: none)


@dataclass(frozen=True)
class Placed:
    """What ``place_run`` did: created (ready tasks to publish, maybe one claimed for the caller),
    duplicate, no_lease (this region may not work now) or moved (the placement inputs changed)."""

    status: str
    ready: list[uuid.UUID]
    claim: Claim | None = None


def place_run(
    engine: Engine,
    run: dict[str, Any],
    steps: list[dict[str, Any]],
    *,
    version: str,
    claim_for: tuple[str, str] | None = None,
) -> Placed:
    """Insert a run and its steps where its tenant is placed (``rm_place_run``); start the root steps.

    ``version`` is the placement inputs the caller computed the placement from; the run is created
    only while they are unchanged and this region holds its lease. With ``claim_for=(region,
    worker)`` the first ready task is claimed in the same transaction.
    """
    return _unless_lease_refused(lambda: _place_run(engine, run, steps, version, claim_for), Placed("no_lease", []),
                                 (LEASE_ENDED_AT_COMMIT, LOCK_WAIT_OUTLASTED_LEASE))


def _place_run(engine: Engine, run: dict[str, Any], steps: list[dict[str, Any]], version: str,
               claim_for: tuple[str, str] | None) -> Placed:
    with engine.begin() as conn:
        out = conn.execute(
            text("SELECT rm_place_run(CAST(:run AS jsonb), CAST(:steps AS jsonb), :v)"),
            {"run": json.dumps(run), "steps": json.dumps(steps), "v": version},
        ).scalar_one()
        if out["status"] != "created":
            return Placed(out["status"], [])
        ids = [uuid.UUID(str(t)) for t in out["ready"]]
        claim = None
        if claim_for is not None and ids:
            row = conn.execute(
                text("SELECT rm_claim_task(:t, :region, :worker, '')"),
                {"t": ids[0], "region": claim_for[0], "worker": claim_for[1]},
            ).scalar_one()
            claim = _claim(row)
            if claim is not None:
                ids = ids[1:]
    return Placed("created", ids, claim)


def _claim(row: dict[str, Any] | None) -> Claim | None:
    """A claim from ``rm_claim_task``'s jsonb, its fencing stamp and lease end included (0020)."""
    if row is None:
        return None
    lease_until = row.get("lease_until")
    return Claim(
        task_id=uuid.UUID(row["id"]), run_id=uuid.UUID(row["run_id"]), attempt=row["attempt"], payload=row["input"],
        index=row["idx"], idempotency_key=row["idempotency_key"], step_key=row["step_key"], handler=row["handler"],
        max_attempts=row["max_attempts"], backoff_base_s=row["backoff_base_s"], backoff_max_s=row["backoff_max_s"],
        timeout_s=row["timeout_s"], tenant_id=row["tenant_id"], workflow=row["workflow"], epoch=row["epoch"],
        fence_us=int(row.get("fence_us") or 0),
        lease_until=None if lease_until is None else datetime.fromisoformat(lease_until),
    )


def claim_task(engine: Engine, task_id: uuid.UUID, *, region: str, worker: str, takeover: str | None = None) -> Claim | None:
    """Take a queued task (or one whose holder is ``takeover`` or past its deadline); records the attempt.

    Returns None when the task is not claimable here: finished, held by a live
    worker, cancelled, owned by another region, or not due yet.
    """
    def claim() -> Claim | None:
        with engine.begin() as conn:
            row = conn.execute(
                text("SELECT rm_claim_task(:t, :region, :worker, :takeover)"),
                {"t": task_id, "region": region, "worker": worker, "takeover": takeover or ""},
            ).scalar_one()
        return _claim(row)

    return _unless_lease_refused(claim, None, (LEASE_ENDED_AT_COMMIT, LOCK_WAIT_OUTLASTED_LEASE))


@dataclass(frozen=True)
class Completion:
    discarded: bool
    released: list[uuid.UUID]
    next_claim: Claim | None


def complete_and_claim(
    engine: Engine, task_id: uuid.UUID, attempt: int, output: Any, *, region: str, worker: str, claim_next: bool
) -> Completion:
    """Store a task's output (maybe completing its step, releasing dependents, finishing the run)
    and, with ``claim_next``, claim the first released task, all in one transaction.

    Rolled back for want of lease at its commit, it is discarded like one refused at its start; a
    lock wait that outlasted the lease raises (OperationalError: the caller retries it)."""
    def complete() -> Completion:
        with engine.begin() as conn:
            row = conn.execute(
                text("SELECT rm_complete_and_claim(:t, :a, CAST(:o AS jsonb), :region, :worker, :claim)"),
                {"t": task_id, "a": attempt, "o": json.dumps(output), "region": region, "worker": worker,
                 "claim": claim_next},
            ).scalar_one()
        if row["discarded"]:
            return Completion(True, [], None)
        return Completion(False, [uuid.UUID(t) for t in row["released"] or []], _claim(row["claim"]))

    return _unless_lease_refused(complete, Completion(True, [], None), (LEASE_ENDED_AT_COMMIT,))


def lease_within_commit_margin(engine: Engine) -> bool:
    """Whether this region holds its lease (no fence, ``rm_may_work``) but ends it within the commit
    margin, so that guarded transactions are refused (``rm_guard_work``, 0021) until it is renewed."""
    with engine.connect() as conn:
        return bool(conn.execute(
            text("SELECT rm_may_work() AND coalesce(rm_lease_left() <= interval '0', false)")).scalar_one())


def still_running(engine: Engine, task_id: uuid.UUID, attempt: int) -> bool:
    """Whether the task is still running at ``attempt`` in this region, which may work now (it
    holds its lease with more left than the commit margin): a completion refused a moment ago for
    want of lease may commit if tried again."""
    with engine.connect() as conn:
        return bool(conn.execute(text(
            """SELECT rm_may_work() AND coalesce(rm_lease_left() > interval '0', false)
                      AND EXISTS (SELECT 1 FROM step_tasks WHERE id = :id AND status = 'running'
                                     AND attempt = :a AND deleted_at IS NULL)"""),
            {"id": task_id, "a": attempt}).scalar_one())


def task_holder(engine: Engine, task_id: uuid.UUID) -> tuple[str, str | None, datetime | None] | None:
    """(status, worker, not_before) of a task, or None if it does not exist here."""
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, worker, not_before FROM step_tasks WHERE id = :id"), {"id": task_id}
        ).first()
    return None if row is None else (row[0], row[1], row[2])


def fail_task(engine: Engine, task_id: uuid.UUID, attempt: int, error: str, retry_in: float | None) -> str:
    """Record a failed try. Returns 'retry', 'failed' or 'discarded' (also when the lease ended
    before it could commit)."""
    def fail() -> str:
        with engine.begin() as conn:
            return str(
                conn.execute(
                    text("SELECT rm_fail_task(:t, :a, :e, :r)"),
                    {"t": task_id, "a": attempt, "e": error[:4000], "r": retry_in},
                ).scalar_one()
            )

    return _unless_lease_refused(fail, "discarded", (LEASE_ENDED_AT_COMMIT, LOCK_WAIT_OUTLASTED_LEASE))


def cancel_run(engine: Engine, run_id: uuid.UUID) -> bool:
    """Cancel a running run. Returns False if it was not running."""
    with engine.begin() as conn:
        return bool(conn.execute(text("SELECT rm_cancel_run(:r)"), {"r": run_id}).scalar_one())


def retry_run(engine: Engine, run_id: uuid.UUID) -> list[uuid.UUID] | None:
    """Re-open a failed run from its failed steps. Returns tasks to publish, or None if not failed."""
    with engine.begin() as conn:
        ready = conn.execute(text("SELECT rm_retry_run(:r)"), {"r": run_id}).scalar_one()
    return None if ready is None else [uuid.UUID(str(t)) for t in ready]


def get_run(engine: Engine, run_id: uuid.UUID) -> dict[str, Any] | None:
    """A run with its steps (in creation order) and their tasks, as plain data."""
    with engine.connect() as conn:
        run = conn.execute(text("SELECT * FROM workflow_runs WHERE id = :r"), {"r": run_id}).mappings().first()
        if run is None:
            return None
        steps = conn.execute(
            text(
                """SELECT s.*, coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'idx', t.idx, 'status', t.status, 'attempt', t.attempt, 'error', t.error,
                          'region', t.executed_region, 'idempotency_key', t.idempotency_key) ORDER BY t.idx)
                        FROM step_tasks t WHERE t.step_id = s.id), '[]'::jsonb) AS tasks
                   FROM workflow_steps s WHERE s.run_id = :r ORDER BY s.updated_at, s.step_key"""
            ),
            {"r": run_id},
        ).mappings().all()
    out = dict(run)
    out["steps"] = [dict(s) for s in steps]
    return out


def run_status(engine: Engine, run_id: uuid.UUID) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text("SELECT status FROM workflow_runs WHERE id = :r"), {"r": run_id}).scalar()


def due_queued_tasks(engine: Engine, region: str, older_than_s: float, limit: int = 500) -> list[uuid.UUID]:
    """Queued tasks of this region's running runs not published for ``older_than_s`` (or due retries).

    Marks them re-queued now, so each is handed out once per interval.
    """
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                """UPDATE step_tasks t SET queued_at = clock_timestamp()
                    WHERE t.id IN (
                      SELECT t2.id FROM step_tasks t2 JOIN workflow_runs r ON r.id = t2.run_id
                       WHERE t2.status = 'queued' AND r.status = 'running' AND r.owner_region = :region
                         AND coalesce(t2.not_before, t2.queued_at) < clock_timestamp() - make_interval(secs => :age)
                       ORDER BY t2.queued_at LIMIT :limit FOR UPDATE OF t2 SKIP LOCKED)
                RETURNING t.id"""
            ),
            {"region": region, "age": older_than_s, "limit": limit},
        ).scalars().all()
    return list(rows)


@dataclass(frozen=True)
class RunningTask:
    task_id: uuid.UUID
    attempt: int
    max_attempts: int
    timeout_s: float
    past_deadline: bool  # by the database's clock, slack included


def running_tasks(engine: Engine, region: str, slack_s: float) -> list[RunningTask]:
    """The running tasks of runs owned by ``region``, each with whether the database's clock
    says it is past its deadline by ``slack_s`` (workers/deadlines.py decides what that means).
    All of them, unlimited: the watch forgets what a pass does not return (as many as the
    workers' pool processes, so a few)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """SELECT t.id, t.attempt, s.max_attempts, s.timeout_s,
                          coalesce(t.deadline_at < clock_timestamp() - make_interval(secs => :slack), false)
                     FROM step_tasks t JOIN workflow_steps s ON s.id = t.step_id
                     JOIN workflow_runs r ON r.id = t.run_id
                    WHERE t.status = 'running' AND r.status = 'running' AND r.owner_region = :region"""
            ),
            {"region": region, "slack": slack_s},
        ).all()
    return [RunningTask(r[0], r[1], r[2], float(r[3]), bool(r[4])) for r in rows]


def running_on_host(engine: Engine, region: str, host: str) -> list[tuple[uuid.UUID, int, int, str]]:
    """Running tasks held by workers on ``host``: (task id, attempt, max attempts, worker)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """SELECT t.id, t.attempt, s.max_attempts, t.worker
                     FROM step_tasks t JOIN workflow_steps s ON s.id = t.step_id
                    WHERE t.status = 'running' AND t.executed_region = :region AND t.worker LIKE :host"""
            ),
            {"region": region, "host": host + ":%"},
        ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def requeue_expired(engine: Engine, task_id: uuid.UUID, attempt: int) -> bool:
    """Put a task whose worker died back in the queue (guarded by its attempt)."""
    with engine.begin() as conn:
        result = conn.execute(
            text(
                """UPDATE step_tasks SET status = 'queued', queued_at = clock_timestamp(), deadline_at = NULL,
                          error = 'worker lost (deadline passed)'
                    WHERE id = :t AND status = 'running' AND attempt = :a"""
            ),
            {"t": task_id, "a": attempt},
        )
    return bool(result.rowcount)


def record_dead_letter(
    engine: Engine,
    *,
    region: str,
    task_name: str | None,
    reason: str,
    submission_id: str | None,
    tenant_id: str | None,
    payload: str | None,
    task_id: str | None = None,
    content_type: str | None = None,
    payload_size: int | None = None,
    payload_sha256: str | None = None,
) -> None:
    """Keep a rejected message: why, whose, and enough of it to match it to what its producer sent."""
    with engine.begin() as conn:
        conn.execute(
            text(
                """INSERT INTO dead_letters (region, task_name, reason, submission_id, tenant_id, payload,
                                            task_id, content_type, payload_size, payload_sha256)
                   VALUES (:region, :task, :reason, :sid, :tenant, :payload, :task_id, :ctype, :size, :sha)"""
            ),
            {"region": region, "task": task_name, "reason": reason[:4000], "sid": submission_id,
             "tenant": tenant_id, "payload": None if payload is None else payload[:65536 + 8],
             "task_id": task_id, "ctype": content_type, "size": payload_size, "sha": payload_sha256},
        )


def dead_letters(engine: Engine, limit: int = 100, *, task_id: str | None = None,
                 submission_id: str | None = None) -> list[dict[str, Any]]:
    """The newest dead letters, optionally only those of one Celery task id or submission id."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("""SELECT * FROM dead_letters
                     WHERE (CAST(:tid AS text) IS NULL OR task_id = :tid)
                       AND (CAST(:sid AS text) IS NULL OR submission_id = :sid)
                     ORDER BY id DESC LIMIT :l"""),
            {"l": limit, "tid": task_id, "sid": submission_id},
        ).mappings().all()
    return [dict(r) for r in rows]


def list_runs(engine: Engine, tenant_id: str, limit: int = 50) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT id, workflow, status, owner_region, epoch, created_at, finished_at, error
                 FROM workflow_runs WHERE tenant_id = :t ORDER BY created_at DESC LIMIT :l"""
        ), {"t": tenant_id, "l": limit}).mappings().all()
    return [dict(r) for r in rows]


def statuses(engine: Engine, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
    """run id -> (status, owner region) for the given runs present here."""
    out: dict[uuid.UUID, tuple[str, str]] = {}
    with engine.connect() as conn:
        for lo in range(0, len(run_ids), 5000):
            rows = conn.execute(text(
                "SELECT id, status, owner_region FROM workflow_runs WHERE id = ANY(:ids)"
            ), {"ids": run_ids[lo:lo + 5000]}).all()
            out.update({r[0]: (r[1], r[2]) for r in rows})
    return out


def counts_by_status(engine: Engine, owner_region: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT status, count(*) FROM workflow_runs WHERE owner_region = :r GROUP BY status"), {"r": owner_region}).all()
    return {str(r[0]): int(r[1]) for r in rows}


def running_worker(engine: Engine, region: str) -> str | None:
    """The worker id holding some running task of this region, if any."""
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT worker FROM step_tasks WHERE status = 'running' AND executed_region = :r AND worker IS NOT NULL LIMIT 1"
        ), {"r": region}).scalar()


def run_facts(engine: Engine, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """run id -> status, owner, finished (epoch seconds) and number of step tasks, as this copy holds them."""
    out: dict[uuid.UUID, dict[str, Any]] = {}
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT r.id, r.status, r.owner_region, extract(epoch FROM r.finished_at),
                      (SELECT count(*) FROM step_tasks t WHERE t.run_id = r.id)
                 FROM workflow_runs r WHERE r.id = ANY(:ids)"""
        ), {"ids": run_ids}).all()
    for r in rows:
        out[r[0]] = {"status": r[1], "owner": r[2], "finished": None if r[3] is None else float(r[3]), "tasks": int(r[4])}
    return out


def duplicate_keys(engine: Engine, keys: list[tuple[str, str]]) -> int:
    """How many (tenant, idempotency key) pairs have more than one run."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            """SELECT count(*) FROM (SELECT 1 FROM workflow_runs r
                 JOIN unnest(CAST(:t AS text[]), CAST(:k AS text[])) AS x(t, k) ON r.tenant_id = x.t AND r.idempotency_key = x.k
                GROUP BY r.tenant_id, r.idempotency_key HAVING count(*) > 1) d"""
        ), {"t": [k[0] for k in keys], "k": [k[1] for k in keys]}).scalar_one())


def submission_fates(engine: Engine, submission_ids: list[str]) -> dict[str, list[tuple[str, uuid.UUID | None, str]]]:
    """What each submission id became, as this region's copy holds it: ``("created", run, region)``
    for the submission that created a run, ``("duplicate", run, region)`` for one found to be an
    existing run (``duplicate_submissions``), ``("dead_letter", run or None, region)`` for one refused
    (its reason is in ``dead_letters``); an empty list for an id this region has no record of yet."""
    out: dict[str, list[tuple[str, uuid.UUID | None, str]]] = {sid: [] for sid in submission_ids}
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """SELECT 'created', id, submission_id, owner_region FROM workflow_runs
                    WHERE submission_id = ANY(:s) AND deleted_at IS NULL
                   UNION ALL
                   SELECT 'duplicate', run_id, submission_id, region FROM duplicate_submissions
                    WHERE submission_id = ANY(:s) AND deleted_at IS NULL
                   UNION ALL
                   SELECT 'dead_letter', NULL, submission_id, region FROM dead_letters WHERE submission_id = ANY(:s)
                   ORDER BY 1, 4"""
            ),
            {"s": submission_ids},
        ).all()
    for outcome, run_id, sid, region in rows:
        out[sid].append((outcome, run_id, region))
    return out
