"""The producer side: ``from regionmesh import submit``.

Publishes ``regionmesh.submit`` to a region's ``rm.<region>.submit`` queue and
returns at once with the run id, which is deterministic: UUIDv5 of
(tenant, idempotency key), so the caller can poll any region for it.

A returned receipt means the region's Redis has the message on disk (``appendfsync always``).
It does not yet mean the mesh holds the run: a worker pops a message (BRPOP) and only then records
it in kombu's ``unacked`` hash, so a worker SIGKILLed or a machine lost between the two loses a
message no part of the mesh ever saw (regionmesh.broker). A producer that must not lose one
passes a ``Journal``: the submission is written there (fsynced) before it is published, and
``confirm`` sends again whatever its region does not hold after a while: the same message with
the same idempotency key (so the same run id) under a fresh submission id (``<id>.r<n>``), so the
region records the re-send as a duplicate of the run if the first one arrived after all
(``regionmesh runs submission``). A second send is never a second run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError
from sqlalchemy.exc import SQLAlchemyError

from regionmesh.broker import publisher
from regionmesh.config import MeshConfig, load_config
from regionmesh.models import residency, runs
from regionmesh.models.engine import engine_for
from regionmesh.names import BULK_LANE, SUBMIT_TASK, submit_queue
from regionmesh.routing.router import Router
from regionmesh.workers.fairness import LOW, band_of
from regionmesh.workers.submission import PROTOCOL_VERSION, kwargs_summary, run_id_for


@dataclass(frozen=True)
class Receipt:
    run_id: uuid.UUID
    region: str  # where it was submitted
    submission_id: str
    idempotency_key: str
    home_region: str | None = None  # where it will run, as the submitting region's registry says


_routers: dict[tuple[str, str], Router] = {}


def _router(config: MeshConfig, via: str) -> Router:
    key = (config.path, via)
    router = _routers.get(key)
    if router is None:
        router = _routers[key] = Router(engine_for(config, via), list(config.regions))
    return router


def home_region(config: MeshConfig, tenant_id: str, via: str) -> str | None:
    """The tenant's home as region ``via``'s copy of the registry says (None if unreachable)."""
    try:
        return str(_router(config, via).place(tenant_id).region)
    except Exception:  # an unreachable database: the worker still routes it
        return None


def zone_region(config: MeshConfig, tenant_id: str, via: str) -> str | None:
    """Where to publish a zoned tenant's submission instead of ``via`` when ``via`` is outside its
    zone: its placement, else the zone's first region. None: unzoned, ``via`` is in the zone, or
    ``via``'s database did not answer (its worker then passes the message on without keeping it)."""
    try:
        placement = _router(config, via).place(tenant_id)
    except Exception:
        return None
    members = placement.zone_regions  # as the zones table of ``via`` holds them
    if not placement.zone or via in members or not members:
        return None
    return placement.region if placement.region in members else members[0]


def submit(
    tenant_id: str,
    workflow: str,
    input: dict[str, Any],
    idempotency_key: str | None = None,
    *,
    region: str | None = None,
    config: MeshConfig | None = None,
    submission_id: str | None = None,
    resolve_home: bool = True,
    journal: Journal | None = None,
    priority: int | str | None = None,
    bulk: bool = False,
) -> Receipt:
    """Submit a run to ``region`` (default: the local region); a tenant bound to a zone ``region``
    is not in is published to a region of its zone instead. Returns its receipt.

    The worker validates the message; bad input ends in that region's dead_letters. With a
    ``journal`` the submission is recorded there before it is published (see ``confirm``).
    Raises kombu's OperationalError when the region's broker cannot be reached.
    """
    config = config or load_config()
    target = config.regions[region] if region else config.local
    if config.zones:  # data residency: a zoned tenant's input goes straight into its zone
        inside = zone_region(config, tenant_id, target.name)
        target = config.regions[inside] if inside else target
    sid = submission_id or str(uuid.uuid4())
    key = idempotency_key or sid
    kwargs = {
        "v": PROTOCOL_VERSION,
        "tenant_id": tenant_id,
        "workflow": workflow,
        "input": input,
        "idempotency_key": idempotency_key,
        "submission_id": sid,
        "submitted_region": target.name,
    }
    band = None if priority is None else band_of(priority)
    if band is not None:
        kwargs["priority"] = band
    if journal is not None:
        journal.record(target.name, kwargs)
    # With fair dispatch a low-band submission of a batch (``bulk``) rides the submit queue's
    # low-priority list (kombu's ``<queue>\x06\x169``), which a region pops after its plain lists:
    # a batch does not hold another submission behind it at intake.
    lane = BULK_LANE if bulk and band == LOW and config.settings.fair_dispatch else None
    _publish(config, target.name, kwargs, lane=lane)
    home = home_region(config, tenant_id, target.name) if resolve_home else None
    return Receipt(run_id=run_id_for(tenant_id, key), region=target.name, submission_id=sid, idempotency_key=key,
                   home_region=home)


def _publish(config: MeshConfig, region: str, kwargs: dict[str, Any], lane: int | None = None) -> None:
    """Push onto the region's submit queue through the default exchange (``exchange=''``, routing key
    the queue, nothing declared): kombu then needs no binding set, so a producer's Redis user may
    hold no write on ``_kombu.binding.*`` (a producer that could add a binding could route a message
    into any queue, the steps queue included)."""
    queue = submit_queue(region)
    publisher(config.regions[region].broker_url, config.settings).send_task(
        SUBMIT_TASK, kwargs=kwargs, queue=queue, routing_key=queue, exchange="", declare=[],
        task_id=kwargs["submission_id"], kwargsrepr=kwargs_summary(kwargs), priority=lane,
        retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    )


@dataclass(frozen=True)
class Pending:
    """A journaled submission its region has not been seen to hold yet."""

    submission_id: str
    region: str
    kwargs: dict[str, Any]
    first_sent: float  # wall clock of the first send
    last_sent: float
    sends: int

    @property
    def run_id(self) -> uuid.UUID:
        return run_id_for(str(self.kwargs["tenant_id"]), str(self.kwargs["idempotency_key"] or self.submission_id))


class Journal:
    """A producer's append-only record of its submissions (JSON lines, fsynced), kept until the
    region each was sent to holds its run or its dead letter. One writer per file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pending: dict[str, Pending] = {}
        self.settled: dict[str, str] = {}  # submission id -> held | dead_letter | given_up
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    self._apply(json.loads(line))

    def _apply(self, entry: dict[str, Any]) -> None:
        sid = entry["sid"]
        if entry["op"] == "sent":
            old = self._pending.get(sid)
            self._pending[sid] = Pending(sid, entry["region"], entry["kwargs"] if old is None else old.kwargs,
                                         entry["at"] if old is None else old.first_sent, entry["at"],
                                         1 if old is None else old.sends + 1)
        else:
            self._pending.pop(sid, None)
            self.settled[sid] = entry["op"]

    def _append(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries))
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the message is published
        for e in entries:
            self._apply(e)

    def record(self, region: str, kwargs: dict[str, Any], *, at: float | None = None, sent_as: str | None = None) -> None:
        """Note a send of ``kwargs`` (a submission message, kept under its first submission id) to
        ``region``; ``sent_as``: the fresh submission id a re-send went out under."""
        entry = {"op": "sent", "sid": kwargs["submission_id"], "region": region, "kwargs": kwargs,
                 "at": time.time() if at is None else at}
        self._append([entry | {"as": sent_as} if sent_as else entry])

    def settle(self, outcomes: dict[str, str]) -> None:
        self._append([{"op": op, "sid": sid} for sid, op in outcomes.items()])

    def pending(self) -> list[Pending]:
        return list(self._pending.values())

    def compact(self) -> None:
        """Rewrite the file with only what is pending (first send time and count kept)."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for p in self._pending.values():
                for n in range(p.sends):
                    fh.write(json.dumps({"op": "sent", "sid": p.submission_id, "region": p.region, "kwargs": p.kwargs,
                                         "at": p.first_sent if n == 0 else p.last_sent}, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)


def resend_kwargs(kwargs: dict[str, Any], n: int) -> dict[str, Any]:
    """The message of the ``n``-th re-send of ``kwargs``: a fresh submission id derived from the
    first (at most 128 characters), the idempotency key pinned to what the first one meant (its
    submission id when it had none), so the run id stays the same."""
    sid = str(kwargs["submission_id"])
    return kwargs | {"submission_id": f"{sid[:100]}.r{n}", "idempotency_key": kwargs.get("idempotency_key") or sid}


@dataclass(frozen=True)
class Confirmation:
    held: int  # runs now in their region's database: the mesh has them
    dead_lettered: int  # refused by the region, with a reason in its dead_letters
    resent: int  # absent after resend_after_s: published again (a fresh submission id, the same run id)
    waiting: int  # younger than resend_after_s, or the region is unreachable
    given_up: int  # sent max_sends times and never held: needs a person (see the region's outbox)
    resent_as: tuple[tuple[str, str], ...] = ()  # (first submission id, the re-send's) published this pass


def confirm(journal: Journal, config: MeshConfig, *, resend_after_s: float = 30.0, max_sends: int = 10,
            now: float | None = None) -> Confirmation:
    """Settle what the regions hold and send again what they do not (see the module docstring).

    A submission counts as held once its run is in the database of the region it was sent to
    (created there, or replicated there from its home; for a zoned tenant sent to a region outside
    its zone, the run's summary, since its rows stay in the zone); from then on PostgreSQL, the
    forward outbox and the reconciler carry it. Returns the counts of this pass.
    """
    now = time.time() if now is None else now
    by_region: dict[str, list[Pending]] = defaultdict(list)
    for p in journal.pending():
        by_region[p.region].append(p)
    outcomes: dict[str, str] = {}
    waiting = resent = 0
    resent_as: list[tuple[str, str]] = []
    for region, entries in by_region.items():
        try:
            engine = engine_for(config, region)
            present = set(runs.statuses(engine, [p.run_id for p in entries]))
            present |= residency.summarized(engine, [p.run_id for p in entries if p.run_id not in present])
        except SQLAlchemyError:  # the region is away: its submissions wait with it
            waiting += len(entries)
            continue
        for p in entries:
            if p.run_id in present:
                outcomes[p.submission_id] = "held"
            elif now - p.last_sent < resend_after_s:
                waiting += 1
            elif runs.dead_letters(engine, 1, submission_id=p.submission_id):
                outcomes[p.submission_id] = "dead_letter"
            elif p.sends >= max_sends:
                outcomes[p.submission_id] = "given_up"
            else:
                again = resend_kwargs(p.kwargs, p.sends)
                journal.record(region, p.kwargs, at=now, sent_as=again["submission_id"])
                try:
                    _publish(config, region, again)
                    resent += 1
                    resent_as.append((p.submission_id, again["submission_id"]))
                except OperationalError:  # the broker is away: the journal keeps it for the next pass
                    waiting += 1
    journal.settle(outcomes)
    counts = list(outcomes.values())
    return Confirmation(counts.count("held"), counts.count("dead_letter"), resent, waiting, counts.count("given_up"),
                        tuple(resent_as))
