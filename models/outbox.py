"""The local, durable outbox of forwarded submissions: kept unsent while the home broker is
unreachable, kept sent until the run arrives here by replication.

One entry per run (``run_id`` is UUIDv5 of tenant + idempotency key): the producer-chosen
submission id alone never identifies an entry. An entry the home rejected (or that never
arrived after the allowed sends) keeps its ``rejection`` and ids, never its input, and is never
sent again.

A run "arrives" as its ``workflow_runs`` row or, for a zoned tenant's run (whose row never leaves
its zone), as its ``run_summaries`` row, which reaches every region. Entries of a tenant bound to a
zone this region is not in are found by ``zoned_tenants`` and dropped by the zone scrub
(workers/zone_scrub.py): a region that forwarded before the binding reached it keeps no input.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import Engine, text


def put(engine: Engine, *, submission_id: str, run_id: uuid.UUID, target_region: str, task_name: str,
        payload: dict[str, Any], error: str | None, sent: bool, confirm_within_s: float = 60.0) -> bool:
    """Keep a submission: unsent (its home broker was unreachable) or sent and awaiting its run.

    False if an entry for this run is already kept (the same tenant and idempotency key): then
    this submission is recorded as a duplicate of that run here, in the same transaction, so a
    producer's re-send absorbed by the kept entry still has a durable outcome under its own id
    (``duplicate_submissions``; found by the campaign's checker, which lost such re-sends).
    """
    with engine.begin() as conn:
        result = conn.execute(text(
            """INSERT INTO outbox (submission_id, run_id, target_region, task_name, payload, last_error, sent_at,
                                   next_attempt_at, sends)
               VALUES (:s, :run, :r, :t, CAST(:p AS jsonb), :e,
                       CASE WHEN :sent THEN clock_timestamp() END,
                       clock_timestamp() + CASE WHEN :sent THEN make_interval(secs => :c) ELSE interval '0' END,
                       CASE WHEN :sent THEN 1 ELSE 0 END)
               ON CONFLICT (run_id) DO NOTHING"""
        ), {"s": submission_id, "run": run_id, "r": target_region, "t": task_name, "p": json.dumps(payload),
            "e": None if error is None else error[:2000], "sent": sent, "c": confirm_within_s})
        if result.rowcount or sent:  # sent: the home records its outcome (created or duplicate)
            return bool(result.rowcount)
        conn.execute(text(
            """INSERT INTO duplicate_submissions (run_id, submission_id, tenant_id, region)
               SELECT :run, :s, :tenant, coalesce(current_setting('regionmesh.region', true), '')
                WHERE :s IS NOT NULL AND :tenant IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM outbox WHERE run_id = :run AND submission_id = :s)
               ON CONFLICT DO NOTHING"""
        ), {"run": run_id, "s": submission_id, "tenant": payload.get("tenant_id")})
    return False


# What a rejected entry keeps of its message: ids and routing, never the input or the producer's key.
KEPT_WITHOUT_INPUT = ("v", "tenant_id", "workflow", "submission_id", "submitted_region", "hops", "forwarded_by")
_WITHOUT_INPUT = "coalesce((SELECT jsonb_object_agg(key, value) FROM jsonb_each(payload) WHERE key = ANY(:keep)), '{}')"
_HOLDS_INPUT = "payload ?| array['input', 'idempotency_key']"


def confirm_arrived(engine: Engine) -> int:
    """Forget sent entries whose run is here now (replicated from its home): its row, or the
    summary of a zoned run (the only trace of it outside its zone). Returns how many."""
    with engine.begin() as conn:
        result = conn.execute(text(
            """DELETE FROM outbox o
                WHERE o.sent_at IS NOT NULL
                  AND (EXISTS (SELECT 1 FROM workflow_runs r WHERE r.id = o.run_id)
                       OR EXISTS (SELECT 1 FROM run_summaries s WHERE s.run_id = o.run_id))"""
        ))
    return int(result.rowcount)


def due(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    """Entries to (re)send now, oldest first: unsent and due, or sent long ago and still unconfirmed."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT id, submission_id, run_id, target_region, task_name, payload, attempts, sends,
                      sent_at IS NOT NULL AS sent
                 FROM outbox WHERE next_attempt_at <= clock_timestamp() AND rejected_at IS NULL
                ORDER BY id LIMIT :l"""
        ), {"l": limit}).mappings().all()
    return [dict(r) for r in rows]


def sent_to(engine: Engine, region: str) -> list[dict[str, Any]]:
    """Sent, unconfirmed entries for ``region`` (to re-send if its tenants moved)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT id, submission_id, run_id, target_region, task_name, payload, attempts, sends, true AS sent
                 FROM outbox WHERE sent_at IS NOT NULL AND rejected_at IS NULL AND target_region = :r ORDER BY id"""
        ), {"r": region}).mappings().all()
    return [dict(r) for r in rows]


def mark_sent(engine: Engine, entry_id: int, target: str, confirm_within_s: float = 60.0) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            """UPDATE outbox SET sent_at = clock_timestamp(), target_region = :t, last_error = NULL, sends = sends + 1,
                      next_attempt_at = clock_timestamp() + make_interval(secs => :c)
                WHERE id = :i AND rejected_at IS NULL"""
        ), {"i": entry_id, "t": target, "c": confirm_within_s})


def awaiting(engine: Engine) -> int:
    """Sent entries whose run has not arrived here yet."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL AND rejected_at IS NULL")).scalar_one())


def failed(engine: Engine, entry_id: int, error: str, delay_s: float) -> None:
    """A (re)send failed: back to unsent, next try after ``delay_s``."""
    with engine.begin() as conn:
        conn.execute(text(
            """UPDATE outbox SET attempts = attempts + 1, last_error = :e, sent_at = NULL,
                      next_attempt_at = clock_timestamp() + make_interval(secs => :d)
                WHERE id = :i AND rejected_at IS NULL"""
        ), {"i": entry_id, "e": error[:2000], "d": delay_s})


def depth(engine: Engine) -> tuple[int, float | None, dict[str, int]]:
    """Unsent entries: (how many, age in seconds of the oldest, how many per target region)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT target_region, count(*), extract(epoch FROM clock_timestamp() - min(created_at))
                 FROM outbox WHERE sent_at IS NULL AND rejected_at IS NULL GROUP BY target_region"""
        )).all()
    per = {r[0]: int(r[1]) for r in rows}
    oldest = max((float(r[2]) for r in rows), default=None)
    return sum(per.values()), oldest, per


def reject(engine: Engine, reason: str, *, run_id: uuid.UUID | None = None, entry_id: int | None = None,
           submission_id: str | None = None) -> int:
    """Record that a kept submission will not become a run (the home rejected it, or it never
    arrived): it stays, with the reason and its ids but without its input (the home's dead letter
    has the body; an entry kept for good must not keep a payload), and is never sent again.
    Matched by entry id, else run id, else submission id. Returns how many entries were marked
    (0: none kept, or already marked)."""
    if entry_id is None and run_id is None and submission_id is None:
        return 0
    with engine.begin() as conn:
        result = conn.execute(text(
            f"""UPDATE outbox SET rejected_at = clock_timestamp(), rejection = :why, payload = {_WITHOUT_INPUT}
                WHERE rejected_at IS NULL
                  AND CASE WHEN CAST(:i AS bigint) IS NOT NULL THEN id = :i
                           WHEN CAST(:run AS uuid) IS NOT NULL THEN run_id = :run
                           ELSE submission_id = :s END"""
        ), {"why": reason[:2000], "i": entry_id, "run": run_id, "s": submission_id, "keep": list(KEPT_WITHOUT_INPUT)})
    return int(result.rowcount)


def rejected(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    """Kept submissions that will not become runs, newest first, with the reason."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """SELECT id, submission_id, run_id, target_region, payload->>'tenant_id' AS tenant_id, sends,
                      rejected_at, rejection
                 FROM outbox WHERE rejected_at IS NOT NULL ORDER BY rejected_at DESC, id DESC LIMIT :l"""
        ), {"l": limit}).mappings().all()
    return [dict(r) for r in rows]


def rejected_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM outbox WHERE rejected_at IS NOT NULL")).scalar_one())


def zoned_tenants(engine: Engine) -> list[str]:
    """Tenants with entries here that are bound to a zone now (as this region's registry holds it):
    the candidates of the zone scrub, usually none. A scan of the outbox (small: what waits or is
    unconfirmed) with a primary-key probe of ``tenant_zones`` per entry."""
    with engine.connect() as conn:
        return [str(t) for t in conn.execute(text(
            f"""SELECT DISTINCT o.payload->>'tenant_id' FROM outbox o
                WHERE EXISTS (SELECT 1 FROM tenant_zones z
                               WHERE z.tenant_id = o.payload->>'tenant_id' AND z.deleted_at IS NULL)
                  AND (o.rejected_at IS NULL OR o.{_HOLDS_INPUT})"""
        )).scalars()]


def entries_of(engine: Engine, tenants: list[str]) -> list[dict[str, Any]]:
    """Every entry of ``tenants`` that still holds its message, whatever its state."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            f"""SELECT id, submission_id, run_id, target_region, payload, sent_at IS NOT NULL AS sent,
                      rejected_at IS NOT NULL AS rejected
                 FROM outbox WHERE payload->>'tenant_id' = ANY(:t)
                  AND (rejected_at IS NULL OR {_HOLDS_INPUT}) ORDER BY id"""
        ), {"t": tenants}).mappings().all()
    return [dict(r) for r in rows]


def forget(engine: Engine, entry_id: int) -> bool:
    """Drop one entry, message and all (its tenant's input may not be kept here)."""
    with engine.begin() as conn:
        return bool(conn.execute(text("DELETE FROM outbox WHERE id = :i"), {"i": entry_id}).rowcount)


def drop_input(engine: Engine, entry_id: int) -> bool:
    """Keep a rejected entry's ids and reason, not its input (entries rejected before rejections
    dropped it)."""
    with engine.begin() as conn:
        return bool(conn.execute(text(f"UPDATE outbox SET payload = {_WITHOUT_INPUT} WHERE id = :i"),
                                 {"i": entry_id, "keep": list(KEPT_WITHOUT_INPUT)}).rowcount)


def confirm_run(engine: Engine, run_id: uuid.UUID) -> int:
    """Forget the entry of ``run_id``: its home said the run exists there (a receipt). Returns how many."""
    with engine.begin() as conn:
        return int(conn.execute(text("DELETE FROM outbox WHERE run_id = :r"), {"r": run_id}).rowcount)
