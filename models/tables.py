"""The schema. Replicated tables carry UUID or natural keys (sequences do not
replicate); local tables (outbox, dead letters) may use identities."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from regionmesh.models.base import Base, Replicated

NOW = text("clock_timestamp()")

RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")
STEP_STATUSES = ("waiting", "ready", "queued", "running", "succeeded", "failed", "cancelled")
TASK_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
REGION_STATUSES = ("active", "draining", "failing_over", "failed_over")
GRANT_STATES = ("granting", "withheld", "expired")
# How an attempt ended (rm_attempt_end, claims.sql); NULL while it runs.
ATTEMPT_OUTCOMES = ("succeeded", "failed", "timed_out", "worker_lost", "superseded", "cancelled", "parked")
CONSOLE_OUTCOMES = ("done", "refused", "error")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Region(Replicated, Base):
    """A region of the mesh and whether it places runs."""

    __tablename__ = "regions"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'active'"))
    failed_over_to: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (CheckConstraint(_in("status", REGION_STATUSES), name="status"),)


class TenantRegistry(Replicated, Base):
    """Overrides of the hashed home region: pins and moves. ``epoch`` only grows."""

    __tablename__ = "tenant_registry"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    home_region: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (CheckConstraint("reason IN ('pin', 'failover', 'move', 'hash')", name="reason"),)


class TenantRegistryHistory(Replicated, Base):
    """Every change of a tenant's intent (pin, move, unpin), one row per registry epoch, written in
    the same transaction as the change, in the region that placed the tenant then."""

    __tablename__ = "tenant_registry_history"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    home_region: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)


class DuplicateSubmission(Replicated, Base):
    """A later submission found to be an existing run (same tenant and idempotency key): which
    submission, which run, in which region and when (rm_place_run writes it in the transaction that
    found the duplicate). The submission that created a run is ``workflow_runs.submission_id``;
    together they answer "what became of submission X" for every accepted submission."""

    __tablename__ = "duplicate_submissions"
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    submission_id: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text, nullable=False)
    region: Mapped[str] = mapped_column(Text, nullable=False)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    __table_args__ = (Index("ix_duplicate_submissions_submission_id", "submission_id"),)


class TenantZone(Replicated, Base):
    """A tenant's data-residency zone (a registry fact of its own: pins are ``tenant_registry``).
    ``epoch`` only grows; it is part of the tenant's placement version."""

    __tablename__ = "tenant_zones"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    zone: Mapped[str] = mapped_column(Text, nullable=False)


class Zone(Replicated, Base):
    """A zone (data residency) and its regions, as the mesh holds it: written by ``regionmesh zones
    set`` (or seeded from the mesh file's ``[zones]``, routing/membership.py), read by placement
    everywhere.
    ``epoch`` grows with every change and is part of a bound tenant's placement version; a zone
    with no regions is removed (the row stays, so a seed from an old mesh file never revives it)."""

    __tablename__ = "zones"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    regions: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)


class TenantShares(Replicated, Base):
    """A tenant's share of its home region's workers and its limits (issue 22): a registry fact,
    replicated, so the heir of a failover enforces the same ones. No row: weight 1, no limits.
    ``max_running``: tasks of the tenant running at once; ``rate_per_s`` with ``burst``: runs
    started per second (GCRA)."""

    __tablename__ = "tenant_shares"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    weight: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("1"))
    max_running: Mapped[int | None] = mapped_column(Integer)
    rate_per_s: Mapped[float | None] = mapped_column(Double)
    burst: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (
        CheckConstraint("weight > 0", name="weight"),
        CheckConstraint("max_running IS NULL OR max_running > 0", name="max_running"),
        CheckConstraint("rate_per_s IS NULL OR rate_per_s > 0", name="rate_per_s"),
        CheckConstraint("burst IS NULL OR burst > 0", name="burst"),
    )


class FairQueue(Base):
    """Local: the tasks queued in this region, by tenant and band (kept by ``rm_fair_track``)."""

    __tablename__ = "fair_queue"
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    region: Mapped[str] = mapped_column(Text, nullable=False)
    tenant_id: Mapped[str] = mapped_column(Text, nullable=False)
    band: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    starts_run: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    # A tenant's head: its highest band, then its oldest task.
    __table_args__ = (Index("ix_fair_queue_head", "region", "tenant_id", text("band DESC"), "queued_at"),)


class FairTenant(Base):
    """Local: a tenant's account in this region's fair dispatch (pass, GCRA time, usage)."""

    __tablename__ = "fair_tenants"
    region: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    pass_: Mapped[float] = mapped_column("pass", Double, nullable=False, server_default=text("0"))
    tat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # GCRA's theoretical arrival time
    mean_cost_s: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0.01"))
    used_s: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0"))
    claims: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    started: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    throttled: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    throttled_by: Mapped[str | None] = mapped_column(Text)
    throttled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FairRunBand(Base):
    """Local: the priority band a run's submission asked for (0 low, 1 normal, 2 high)."""

    __tablename__ = "fair_run_bands"
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    band: Mapped[int] = mapped_column(Integer, nullable=False)
    __table_args__ = (CheckConstraint("band BETWEEN 0 AND 2", name="band"),)


class TenantErasure(Replicated, Base):
    """The kept receipt of a tenant's erasure, keyed by the SHA-256 of its id (never the id).
    While ``state`` is 'erased' the tenant's submissions are refused; 'enabled' lifts that."""

    __tablename__ = "tenant_erasures"
    tenant_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    state: Mapped[str] = mapped_column(Text, nullable=False)
    requested_region: Mapped[str] = mapped_column(Text, nullable=False)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    regions: Mapped[list[str]] = mapped_column(JSONB, nullable=False)  # the mesh's regions when it was asked
    __table_args__ = (CheckConstraint("state IN ('erased', 'enabled')", name="state"),)


class ErasureConfirmation(Replicated, Base):
    """A region's confirmation that it holds no row of an erased tenant, written by that region."""

    __tablename__ = "erasure_confirmations"
    tenant_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    region: Mapped[str] = mapped_column(Text, primary_key=True)
    confirmed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    rows_removed: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


class LeaseGrant(Replicated, Base):
    """A grantor's acknowledgement of a holder's latest beat (``heartbeats.seq``), written by the grantor only.

    ``granting``: it acknowledged beat ``seq`` and promises not to take over the holder's tenants
    until L·(1+ρ)+margin after that, on its own monotonic clock. ``withheld``: it stopped
    acknowledging (the holder is being failed over). ``expired``: it stopped and its promise ran out.
    ``epoch`` is the holder's region epoch as the grantor saw it (never lower than before): an
    ``expired`` row answers the failover episode whose ``failing_over`` status carried that epoch.
    """

    __tablename__ = "lease_grants"
    holder: Mapped[str] = mapped_column(Text, primary_key=True)
    grantor: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    state: Mapped[str] = mapped_column(Text, nullable=False)
    __table_args__ = (CheckConstraint(_in("state", GRANT_STATES), name="state"),)


class WorkflowRun(Replicated, Base):
    """One submission of a workflow; ``id`` is UUIDv5 of (tenant, idempotency key)."""

    __tablename__ = "workflow_runs"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text, nullable=False)
    idempotency_key: Mapped[str] = mapped_column(Text, nullable=False)
    workflow: Mapped[str] = mapped_column(Text, nullable=False)
    input: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    owner_region: Mapped[str] = mapped_column(Text, nullable=False)
    submission_id: Mapped[str | None] = mapped_column(Text)
    submitted_region: Mapped[str | None] = mapped_column(Text)
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    remaining_steps: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # '' or the tenant's zone at creation: in the replica identity (uq on id, zone), so publications
    # can keep zoned payload rows inside their zone (payload.sql).
    zone: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    __table_args__ = (
        UniqueConstraint("id", "zone"),
        UniqueConstraint("tenant_id", "idempotency_key"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        Index(None, "tenant_id", "created_at"),
        Index(None, "owner_region", "status"),
        # The console's run list, newest first, by keyset on (created_at, id) (0025).
        Index(None, "created_at", "id"),
        Index(None, "status", "created_at", "id"),
        Index(None, "workflow", "created_at", "id"),
        Index(None, "idempotency_key"),  # the run list by key alone (0029)
    )


class WorkflowStep(Replicated, Base):
    """One node of a run's DAG, with the counters that release its dependents."""

    __tablename__ = "workflow_steps"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    step_key: Mapped[str] = mapped_column(Text, nullable=False)
    handler: Mapped[str] = mapped_column(Text, nullable=False)
    depends_on: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    remaining_deps: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    map_over: Mapped[str | None] = mapped_column(Text)
    task_count: Mapped[int | None] = mapped_column(Integer)
    remaining_tasks: Mapped[int | None] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("3"))
    backoff_base_s: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("1"))
    backoff_max_s: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("60"))
    timeout_s: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("300"))
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    zone: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    __table_args__ = (
        UniqueConstraint("id", "zone"),
        UniqueConstraint("run_id", "step_key"),
        CheckConstraint(_in("status", STEP_STATUSES), name="status"),
        CheckConstraint("remaining_deps >= 0", name="remaining_deps"),
    )


class StepTask(Replicated, Base):
    """One execution unit of a step (one per element of a map step).

    ``idempotency_key`` is ``run_id:step[:index]``; its unique constraint is why
    a duplicated or redelivered message changes nothing.
    """

    __tablename__ = "step_tasks"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    step_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    step_key: Mapped[str] = mapped_column(Text, nullable=False)
    idx: Mapped[int | None] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    input: Mapped[Any | None] = mapped_column(JSONB)
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    executed_region: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(Text)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    zone: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    # Each failed attempt's error text by step_attempts id (rm_attempt_end): payload, so here and
    # not in step_attempts, which every region holds.
    attempt_errors: Mapped[dict[str, str] | None] = mapped_column(JSONB)
    # A waiting step (Sleep, WaitFor; 0026): when it wakes, by the owner's database clock. Set at its
    # first park and kept; the task waits 'queued' with not_before = wake_at and no message.
    wake_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        UniqueConstraint("id", "zone"),
        UniqueConstraint("idempotency_key"),
        CheckConstraint(_in("status", TASK_STATUSES), name="status"),
        Index(None, "run_id"),
        Index(None, "status", "deadline_at"),
        Index("ix_step_tasks_wake_at", "wake_at", postgresql_where=text("wake_at IS NOT NULL")),
    )


class RunSummary(Replicated, Base):
    """The metadata of a zoned tenant's run, held by every region (its payload is not: payload.sql)."""

    __tablename__ = "run_summaries"
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text, nullable=False)
    workflow: Mapped[str] = mapped_column(Text, nullable=False)
    zone: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    owner_region: Mapped[str] = mapped_column(Text, nullable=False)
    steps: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False)  # step key -> status
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index(None, "tenant_id"),)


class StepAttempt(Replicated, Base):
    """One claim of a step task: which region and worker started which attempt, when, and (once it
    ended) when and how (``outcome``, written by rm_attempt_end; the error text is payload and stays
    in ``step_tasks.attempt_errors``)."""

    __tablename__ = "step_attempts"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    region: Mapped[str] = mapped_column(Text, nullable=False)
    worker: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (Index(None, "run_id"), Index(None, "task_id"),
                      CheckConstraint(_in("outcome", ATTEMPT_OUTCOMES), name="outcome"))


class ConsoleAction(Replicated, Base):
    """One action taken in the operator console (the audit trail): who, what, on which target,
    from which region's console, where it ran and how it ended. Keyed by tenant for erasure."""

    __tablename__ = "console_actions"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    action: Mapped[str] = mapped_column(Text, nullable=False)
    target: Mapped[str] = mapped_column(Text, nullable=False)
    tenant_id: Mapped[str | None] = mapped_column(Text)
    console_region: Mapped[str] = mapped_column(Text, nullable=False)
    acted_region: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text, nullable=False)
    detail: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (Index(None, "at"), Index(None, "tenant_id"),
                      CheckConstraint(_in("outcome", CONSOLE_OUTCOMES), name="outcome"))


SCHEDULE_OVERLAPS = ("skip", "buffer_one", "allow")
SCHEDULE_CATCH_UPS = ("none", "latest", "all")
SIGNAL_STATES = ("pending", "delivered", "dead")


class Schedule(Replicated, Base):
    """A tenant's schedule (0026): a cron expression in a time zone or a fixed interval, and the
    workflow and input each tick submits. Edited in any region; fired by the region that places the
    tenant (workers/ticker.py). The input is a payload: zoned like a run's (replica identity on
    (tenant_id, name, zone))."""

    __tablename__ = "schedules"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    cron: Mapped[str | None] = mapped_column(Text)
    every_s: Mapped[float | None] = mapped_column(Double)
    tz: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'UTC'"))
    workflow: Mapped[str] = mapped_column(Text, nullable=False)
    input: Mapped[Any] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    overlap: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'skip'"))
    catch_up: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'latest'"))
    jitter_s: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("0"))
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    zone: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", "zone"),
        CheckConstraint("(cron IS NULL) <> (every_s IS NULL)", name="spec"),
        CheckConstraint(_in("overlap", SCHEDULE_OVERLAPS), name="overlap"),
        CheckConstraint(_in("catch_up", SCHEDULE_CATCH_UPS), name="catch_up"),
    )


class ScheduleTick(Replicated, Base):
    """What the firing region did last for a schedule (0026): kept apart from ``schedules`` so that
    a tick's write never races an operator's edit of the schedule under last-writer-wins. Written
    by the region that placed the tenant, at the tenant's registry epoch (a stale firer loses)."""

    __tablename__ = "schedule_ticks"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    last_tick: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # UTC instant of the last tick handled
    last_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    buffered_tick: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # overlap buffer_one
    fired_region: Mapped[str | None] = mapped_column(Text)
    fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RunSignal(Replicated, Base):
    """A signal sent to a run (0026), buffered until a ``WaitFor`` step of the run takes it.
    Accepted in any region (a replicated fact, idempotent by its key); delivered by the run's
    owner; 'dead' with a reason for a finished run or one that never appeared. Zoned like a run."""

    __tablename__ = "run_signals"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    payload: Mapped[Any | None] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'pending'"))
    reason: Mapped[str | None] = mapped_column(Text)
    delivered_to: Mapped[str | None] = mapped_column(Text)  # the waiting task's idempotency key
    received_region: Mapped[str] = mapped_column(Text, nullable=False)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    zone: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("''"))
    __table_args__ = (
        UniqueConstraint("tenant_id", "run_id", "name", "key", "zone"),
        CheckConstraint(_in("state", SIGNAL_STATES), name="state"),
        Index(None, "run_id", "name"),
    )

class Heartbeat(Replicated, Base):
    """Each region's row, updated every second; peers read lag from it."""

    __tablename__ = "heartbeats"
    region: Mapped[str] = mapped_column(Text, primary_key=True)
    beat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


class Outbox(Base):
    """Local only: submissions waiting for an unreachable home region's broker."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    submission_id: Mapped[str] = mapped_column(Text, nullable=False)
    target_region: Mapped[str] = mapped_column(Text, nullable=False)
    task_name: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Set once published: then kept until the run arrives here by replication.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sends: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # The home rejected it (or it never arrived after the allowed sends): kept, never sent again.
    rejected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rejection: Mapped[str | None] = mapped_column(Text)
    # Keyed by run (tenant + idempotency key), never by the producer-chosen submission id alone.
    __table_args__ = (UniqueConstraint("run_id"), Index(None, "submission_id"), Index(None, "next_attempt_at"),
                      Index(None, "sent_at"))


class DeadLetter(Base):
    """Local only: messages rejected with a reason; never retried automatically."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    region: Mapped[str] = mapped_column(Text, nullable=False)
    task_name: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    submission_id: Mapped[str | None] = mapped_column(Text)
    tenant_id: Mapped[str | None] = mapped_column(Text)
    # A bounded prefix of the body (text, or "base64:..." for bytes); size and SHA-256 are of the whole body.
    payload: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(Text)
    payload_size: Mapped[int | None] = mapped_column(BigInteger)
    payload_sha256: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (Index(None, "task_id"), Index(None, "submission_id"))


class ReplicationConflict(Base):
    """Local only: every conflict the replica triggers resolved (who won, and why)."""

    __tablename__ = "replication_conflicts"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    table_name: Mapped[str] = mapped_column(Text, nullable=False)
    pk: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    local_origin: Mapped[str | None] = mapped_column(Text)
    remote_origin: Mapped[str | None] = mapped_column(Text)
    local_epoch: Mapped[int | None] = mapped_column(BigInteger)
    remote_epoch: Mapped[int | None] = mapped_column(BigInteger)
    local_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    remote_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index(None, "at"),)


class ReplicationLinkStats(Base):
    """Local only: when each subscription's apply error count last grew."""

    __tablename__ = "replication_link_stats"
    subscription: Mapped[str] = mapped_column(Text, primary_key=True)
    error_count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    increased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReplicationWatch(Base):
    """Local only: per subscription (by oid) and publisher, the last heartbeat ``seq`` received
    (watch.sql). Beats are consecutive, so a jump means changes between them never arrived: the
    slot was moved by someone other than this subscription. ``replication status`` flags it."""

    __tablename__ = "replication_watch"
    subid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    publisher: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    gaps: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    skipped: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    last_gap_from: Mapped[int | None] = mapped_column(BigInteger)
    last_gap_to: Mapped[int | None] = mapped_column(BigInteger)
    last_gap_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LocalFence(Base):
    """Local only, one row: while ``fenced`` this region creates, claims and completes nothing.

    ``manual``: raised by an operator (``regionmesh fence``); only ``unfence`` lowers it.
    Otherwise the lease keeper raises it while the region is failed over.
    """

    __tablename__ = "local_fence"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fenced: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    manual: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)


class LocalLease(Base):
    """Local only, one row: until when (this server's clock, set conservatively by the lease
    keeper) this region holds its lease, and which regions' grants made the majority."""

    __tablename__ = "local_lease"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    held_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    granted_by: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=NOW)
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)


REPLICATED_TABLES = (
    "regions",
    "tenant_registry",
    "workflow_runs",
    "workflow_steps",
    "step_tasks",
    "step_attempts",
    "heartbeats",
    "lease_grants",
    "tenant_zones",
    "tenant_erasures",
    "erasure_confirmations",
    "run_summaries",
    "tenant_registry_history",
    "duplicate_submissions",
    "zones",
    "console_actions",
    "schedules",
    "schedule_ticks",
    "run_signals",
    "tenant_shares",
)
# Tables holding payloads: published per destination, filtered on zone (payload.sql).
ZONED_TABLES = ("workflow_runs", "workflow_steps", "step_tasks", "schedules", "run_signals")
