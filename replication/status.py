"""The from -> to matrix of the mesh: lag (seconds and bytes), retained WAL, subscription state, errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from regionmesh.config import MeshConfig
from regionmesh.models import link_health
from regionmesh.models.engine import engine_for
from regionmesh.names import subscription_name


@dataclass(frozen=True)
class LinkStatus:
    publisher: str  # from
    subscriber: str  # to
    subscription: str
    enabled: bool | None
    worker_alive: bool
    apply_errors: int
    lag_seconds: float | None
    lag_bytes: int | None
    retained_bytes: int | None
    wal_status: str | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


ERROR_WINDOW_S = 30.0


def _probe(config: MeshConfig, region: str) -> dict[str, Any]:
    engine = engine_for(config, region)
    try:
        return {
            "subs": {s["subname"]: s for s in link_health.subscriptions(engine)},
            "error_ages": link_health.observe_link_errors(engine),
            "slots": {s["slot_name"]: s for s in link_health.slots(engine)},
            "ages": link_health.heartbeat_ages(engine),
            "conflicts": link_health.conflict_counts(engine),
            "skipped": link_health.skipped_changes(engine),
        }
    except Exception as exc:  # an unreachable region is a status, not a crash
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
    finally:
        engine.dispose()


def skipped_problem(sub: str, pub: str, jump: dict[str, Any]) -> str:
    """What a heartbeat jump on the link means and what to do about it."""
    return (f"changes skipped: {pub}'s heartbeat jumped {jump['last_gap_from']} -> {jump['last_gap_to']} at "
            f"{jump['last_gap_at']:%Y-%m-%d %H:%M:%S} ({jump['gaps']} jump(s), {jump['skipped']} beat(s) never "
            f"arrived): the slot was moved by someone other than this subscription. Run 'regionmesh verify'; "
            f"repair with 'regionmesh region resync {sub} --from <a region>', or once verified identical "
            f"'regionmesh replication acknowledge {sub} --from {pub}'")


def mesh_status(
    config: MeshConfig, error_window_s: float = ERROR_WINDOW_S
) -> tuple[list[LinkStatus], dict[str, dict[str, Any]]]:
    """Every ordered pair's link, and per region what was probed (or its error).

    A link is down when its subscription is missing or disabled or its apply
    worker is not running, and erroring when its apply error count grew within
    ``error_window_s`` (the count also grows on lost connections, so only its
    growth tells).
    """
    probes = {name: _probe(config, name) for name in config.regions}
    links = []
    for sub in config.regions:
        for pub in config.regions:
            if sub == pub:
                continue
            name = subscription_name(sub, pub)
            sp, pp = probes[sub], probes[pub]
            s = sp.get("subs", {}).get(name)
            slot = pp.get("slots", {}).get(name)
            problem = None
            lag_s = None
            if "error" in sp:
                problem = f"{sub} unreachable: {sp['error']}"
            elif s is None:
                problem = "no subscription (run 'regionmesh replication setup')"
            elif not s["subenabled"]:
                problem = "subscription disabled"
            elif s["pid"] is None:
                problem = "apply worker not running (publisher unreachable or erroring)"
            elif (age := sp.get("error_ages", {}).get(name)) is not None and age < error_window_s:
                problem = f"apply errors {age:.0f}s ago ({s['apply_error_count']} in all)"
            if "error" in pp and problem is None:
                problem = f"{pub} unreachable: {pp['error']}"
            elif slot is not None and slot["wal_status"] == "lost":
                problem = "slot lost: WAL removed past max_slot_wal_keep_size; rebuild this region"
            if problem is None and (jump := sp.get("skipped", {}).get(name)) is not None:
                problem = skipped_problem(sub, pub, jump)
            seen = sp.get("ages", {}).get(pub)
            own = pp.get("ages", {}).get(pub)
            if seen is not None:
                lag_s = max(0.0, seen - (own or 0.0)) if own is not None else seen
            links.append(LinkStatus(
                publisher=pub, subscriber=sub, subscription=name,
                enabled=None if s is None else bool(s["subenabled"]),
                worker_alive=bool(s and s["pid"]), apply_errors=int(s["apply_error_count"]) if s else 0,
                lag_seconds=lag_s, lag_bytes=None if slot is None else slot["lag_bytes"],
                retained_bytes=None if slot is None else slot["retained_bytes"],
                wal_status=None if slot is None else slot["wal_status"], problem=problem,
            ))
    return links, probes


def acknowledge(config: MeshConfig, subscriber: str, publisher: str) -> int:
    """Clear the skipped-changes flag of the link ``publisher`` -> ``subscriber`` (after ``verify``
    showed the regions identical, or a repair). Returns how many flags were cleared."""
    for region in (subscriber, publisher):
        if region not in config.regions:
            raise ValueError(f"unknown region {region!r}; regions of the mesh: {', '.join(config.regions)}")
    return link_health.acknowledge_skipped(engine_for(config, subscriber), subscription_name(subscriber, publisher))
