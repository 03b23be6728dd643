"""What each console page shows, gathered through the repository and the services.

One region's copy answers the run and tenant pages (status reads are local everywhere; the page says
which region's view it is and how far behind its peers' heartbeats are). The mesh page needs what
is local to each region, so it asks every region it can reach and shows one it cannot reach as such.
Every text that may quote a connection error passes through ``present.redact``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Engine

from regionmesh.config import MeshConfig
from regionmesh.models import console as repo
from regionmesh.models import link_health, outbox
from regionmesh.models.engine import engine_for
from regionmesh.models.residency import run_summary
from regionmesh.models.runs import get_run
from regionmesh.models.tables import RUN_STATUSES
from regionmesh.ops.console import dag, filters, present, timeline, trends
from regionmesh.ops.failover import lease_status
from regionmesh.replication.status import mesh_status
from regionmesh.routing.membership import with_mesh_zones
from regionmesh.routing.router import Router


@dataclass
class Console:
    """The console's one region, its engine and router; built once when it starts."""

    config: MeshConfig
    engine: Engine
    router: Router = field(init=False)

    def __post_init__(self) -> None:
        self.router = Router(self.engine, list(self.config.regions))

    @property
    def region(self) -> str:
        return self.config.local.name

    @property
    def zones(self) -> MeshConfig:
        """The config with the zones this region's copy holds (``regionmesh zones``), not the file's."""
        return with_mesh_zones(self.config, self.region)

    @property
    def zone(self) -> str | None:
        return self.zones.zone_of(self.region)


def view_lag(c: Console) -> dict[str, Any]:
    """How far behind this region's copy is: the age of each peer's heartbeat as seen here."""
    try:
        ages = link_health.heartbeat_ages(c.engine)
    except Exception as exc:  # the page still renders, saying why it cannot tell
        return {"error": present.short_error(f"{type(exc).__name__}: {exc}")}
    peers = {r: round(a, 1) for r, a in sorted(ages.items()) if r != c.region}
    return {"peers": peers, "worst": max(peers.values(), default=None)}


def runs_list(c: Console, query: dict[str, str]) -> dict[str, Any]:
    parsed = filters.parse(query)
    rows, more = repo.runs_page(c.engine, parsed.filter)
    next_query = filters.next_page(parsed.filter, rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    query = filters.query_of(parsed.filter)
    first = urlencode({k: v for k, v in query.items() if k != "after"})
    return {"runs": rows, "next_query": next_query, "problems": parsed.problems, "query": query,
            "statuses": RUN_STATUSES, "first_page": parsed.filter.after is None, "first_query": first}


def _attempts(c: Console, run_id: uuid.UUID, shown: bool) -> tuple[list[dict[str, Any]], timeline.Timeline]:
    """The run's attempts with their error text (first line, redacted) where the payload may be
    shown, and their timeline."""
    attempts = repo.run_attempts(c.engine, run_id)
    for a in attempts:
        a["error"] = present.short_error(a["error"]) if shown and a.get("error") else None
    return attempts, timeline.layout(attempts, datetime.now(UTC))


def run_page(c: Console, run_id: uuid.UUID) -> dict[str, Any] | None:
    """A run as this copy holds it, or its summary (a zoned run outside its zone), or None."""
    run = get_run(c.engine, run_id)
    audit = repo.console_actions(c.engine, 20, target=str(run_id))
    if run is None:
        summary = run_summary(c.engine, run_id)
        if summary is None:
            return None
        attempts, tl = _attempts(c, run_id, False)
        return {"summary": summary, "layout": dag.layout(dag.summary_steps(summary["steps"])), "attempts": attempts,
                "timeline_layout": tl, "audit": audit, "held_in": list(c.zones.zones.get(summary["zone"], ()))}
    shown = present.payload_visible(run.get("zone") or "", c.zone)
    attempts, tl = _attempts(c, run_id, shown)
    return {
        "run": run, "layout": dag.layout(run["steps"]), "attempts": attempts, "timeline_layout": tl, "audit": audit,
        "payload_shown": shown,
        "input": present.capped(run["input"]) if shown else None,
        "output": present.capped(run["output"]) if shown and run["output"] is not None else None,
        "error": present.redact(run["error"]) if shown else None,
        "step_errors": {s["step_key"]: present.short_error(s["error"]) for s in run["steps"] if s["error"]}
        if shown else {},
    }


def _region_locals(config: MeshConfig, region: str) -> dict[str, Any]:
    """What only ``region``'s own database holds: its outbox and dead letters (or why unreachable)."""
    engine = engine_for(config, region)
    try:
        waiting, oldest, per_target = outbox.depth(engine)
        letters = []
        for d in repo.dead_letters_with_privacy(engine, 20):
            visible = present.body_visible(d["tenant_id"], d["zoned"], d["erased"])
            letters.append({**d, "reason": present.redact(d["reason"]),
                            "body": present.capped(d["payload"] or "", 1024) if visible else None,
                            "withheld": not visible})
        return {"outbox": {"waiting": waiting, "oldest_s": oldest, "by_target": per_target,
                           "rejected": outbox.rejected_count(engine)}, "dead_letters": letters}
    except Exception as exc:  # an unreachable region is a row of the page, not a failed page
        return {"error": present.short_error(f"{type(exc).__name__}: {exc}")}
    finally:
        engine.dispose()


def _statuses_here(c: Console) -> dict[str, str]:
    """Every region's status in this region's registry copy (what its peers decided about it: a
    region failed over is 'failed_over' here even while it cannot answer for itself)."""
    try:
        rows = c.router.rows(fresh=True)
    except Exception:  # this region's own database is down: the page says so in its header
        return {}
    # A region without a row was never failed over, drained or moved: active (as placement reads it).
    return {name: rows[name].status if name in rows else "active" for name in c.config.regions}


def mesh_page(c: Console) -> dict[str, Any]:
    leases = lease_status(c.config)
    links, probes = mesh_status(c.config)
    regions = list(c.config.regions)
    matrix = {(link.publisher, link.subscriber): link for link in links}
    return {
        "regions": regions,
        "leases": [{**vars(row), "reason": present.short_error(row.reason)} for row in leases],
        "status_here": _statuses_here(c),
        "matrix": matrix,
        "problems": {key: present.short_error(link.problem) for key, link in matrix.items() if link.problem},
        "conflicts": {r: p.get("conflicts", {}) for r, p in probes.items() if "error" not in p},
        "unreachable": {r: present.short_error(p["error"]) for r, p in probes.items() if "error" in p},
        "locals": {r: _region_locals(c.config, r) for r in regions},
    }


def tenants_page(c: Console, limit: int = 200) -> dict[str, Any]:
    rows = []
    for t in repo.tenants_seen(c.engine, limit):
        try:
            p = c.router.place(t["tenant_id"])
            placement = {"home": p.region, "why": p.explain(), "epoch": p.epoch, "held": p.held, "erased": p.erased}
        except Exception as exc:  # one tenant's placement failing does not hide the others
            placement = {"home": "?", "why": present.short_error(f"{type(exc).__name__}: {exc}"), "epoch": None,
                         "held": False, "erased": False}
        rows.append({**t, **placement})
    return {"tenants": rows, "limit": limit}


def audit_page(c: Console, limit: int = 200) -> dict[str, Any]:
    """The newest console actions this region's copy holds, taken in any region's console."""
    return {"actions": repo.console_actions(c.engine, limit), "limit": limit}


def trend_sample(c: Console) -> dict[str, Any]:
    """One sample of the console's own history: this region's counters and its peers' heartbeat ages."""
    sample = repo.trend_sample(c.engine)
    ages = link_health.heartbeat_ages(c.engine)
    sample["lag"] = {r: a for r, a in ages.items() if r != c.region}
    return sample


def trends_page(history: trends.History | None, prometheus: trends.Prometheus | None) -> dict[str, Any]:
    """The plots, from Prometheus when configured (an unreachable one is said, not raised), else the history."""
    if prometheus is not None:
        try:
            return {"plots": prometheus.plots(), "source": "prometheus", "source_error": None}
        except Exception as exc:
            return {"plots": [], "source": "prometheus", "source_error": present.short_error(f"{type(exc).__name__}: {exc}")}
    samples = len(history) if history is not None else 0
    return {"plots": history.plots() if history is not None else [], "source": "history", "samples": samples,
            "source_error": None, "max_samples": trends.MAX_SAMPLES}
