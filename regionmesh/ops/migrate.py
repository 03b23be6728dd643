"""Schema migrations across a running mesh: one Alembic history, applied to every region.

DDL does not replicate, so every region runs every migration. An apply worker stops
on a row whose shape its region does not have ("missing replicated column"), and a
conflict function whose column list is older than its table fails every insert. So
``migrate`` orders the work across the regions (``--plan`` prints it):

1. pause apply everywhere (``ALTER SUBSCRIPTION … DISABLE`` on every subscription,
   waiting until each apply worker stopped); the publishers keep every change in
   their slots, and local writes go on;
2. upgrade every region to head: each region's DDL and the regeneration of its
   conflict triggers commit in one transaction (the migrations call
   ``replicated_tables.regenerate_replica_triggers``; tests/migration fails a revision that does not);
3. publish new replicated tables everywhere, and the per-destination payload
   publications (``rm_pub_to_<dest>``, replication/publications.py);
4. resume apply everywhere (``ENABLE``, and ``REFRESH PUBLICATION`` with
   ``copy_data = false`` where the publisher publishes a table the subscriber does
   not apply yet);
5. subscriptions made before the payload publications existed (a mesh older than
   0013) are switched onto them once they confirmed their creation, and ``rm_pub``
   drops the payload tables after that (it keeps them until then, so nothing is lost).

The pause lasts from the first DISABLE to the last ENABLE and is reported. Expand
and contract: a migration only adds (nullable or defaulted columns, tables) while
any worker may run the older code, and removes a column or table only in a later
release, after no running code reads or writes it (docs/howto/upgrade.md). The previous
release's workers run on head meanwhile: a function whose signature or meaning changes gets a
new versioned name (docs/howto/migrations.md, which also says how a revision is written).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from regionmesh.config import MeshConfig
from regionmesh.errors import MigrationError
from regionmesh.models import link_health, publishing, replicated_tables, subscribing
from regionmesh.models.engine import engine_for
from regionmesh.models.tables import ZONED_TABLES
from regionmesh.names import PUBLICATION, subscription_name
from regionmesh.replication import publications
from regionmesh.routing.membership import seed_from_file, with_mesh_zones


def script_location() -> str:
    """The migrations folder as shipped inside the package (a wheel or an editable install).

    Alembic reads revisions from a folder, so the package must be installed unpacked (pip always
    does). Raises MigrationError otherwise."""
    root = files("regionmesh.migrations")
    if not isinstance(root, Path):
        raise MigrationError(f"regionmesh's migrations are not in a folder ({root!r}: a zipped install?); "
                             "install the wheel with pip")
    return str(root)


def alembic_config(engine: Engine | None = None, extra_versions: Sequence[str] = ()) -> Config:
    """Alembic's config for the shipped history, plus ``extra_versions`` folders of revisions
    that continue it (tests add throwaway revisions this way)."""
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    if extra_versions:
        cfg.set_main_option("version_path_separator", "os")
        cfg.set_main_option("version_locations", os.pathsep.join([os.path.join(script_location(), "versions"),
                                                                 *extra_versions]))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def script(extra_versions: Sequence[str] = ()) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(extra_versions=extra_versions))


def head(extra_versions: Sequence[str] = ()) -> str:
    rev = script(extra_versions).get_current_head()
    assert rev is not None
    return rev


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@dataclass(frozen=True)
class RegionRevision:
    region: str
    before: str | None
    after: str | None


def check_compatible(revisions: dict[str, str | None], extra_versions: Sequence[str] = ()) -> None:
    """Refuse revisions that cannot replicate to each other (or to head).

    Raises MigrationError naming each region's revision.
    """
    sd = script(extra_versions)
    known = {rev.revision for rev in sd.walk_revisions()}
    unknown = {region: rev for region, rev in revisions.items() if rev is not None and rev not in known}
    if unknown:
        detail = ", ".join(f"{r} at {rev}" for r, rev in sorted(unknown.items()))
        raise MigrationError(
            f"{detail}: revision unknown to this regionmesh (newer code was deployed there). "
            "Upgrade regionmesh here to the version those regions run, then migrate again.",
            revisions,
        )
    line = [rev.revision for rev in sd.walk_revisions()]  # head first
    for region, rev in revisions.items():
        if rev is not None and rev not in line:
            raise MigrationError(f"{region} is at {rev}, on a branch off the mainline; merge the branches", revisions)


@dataclass(frozen=True)
class PlanStep:
    order: int
    region: str
    action: str


def pending(engine: Engine, extra_versions: Sequence[str] = ()) -> list[str]:
    """Revisions between this database's and head, oldest first, each with its title."""
    sd = script(extra_versions)
    current = current_revision(engine)
    revs = list(sd.iterate_revisions("heads", current or "base"))
    return [f"{r.revision} {(r.doc or '').splitlines()[0] if r.doc else ''}".strip()
            for r in reversed(revs) if r.revision != current]


def plan(config: MeshConfig, *, regions: list[str] | None = None, extra_versions: Sequence[str] = ()) -> list[PlanStep]:
    """What :func:`upgrade_all` will do, in which region, in which order (nothing: already at head).

    Raises MigrationError for revisions that cannot replicate to each other.
    """
    names = regions or list(config.regions)
    engines = {name: engine_for(config, name) for name in names}
    check_compatible({n: current_revision(e) for n, e in engines.items()}, extra_versions)
    todo = {n: pending(e, extra_versions) for n, e in engines.items()}
    if not any(todo.values()):
        return []
    subs = {n: [s["subname"] for s in link_health.subscriptions(e)] for n, e in engines.items()}
    steps: list[tuple[str, str]] = []
    for n in names:
        if subs[n]:
            steps.append((n, "pause apply: ALTER SUBSCRIPTION … DISABLE on " + ", ".join(subs[n])
                          + "; wait until each apply worker stopped"))
    for n in names:
        if todo[n]:
            steps.append((n, "upgrade to head in one transaction (DDL and conflict-trigger regeneration): "
                          + "; ".join(todo[n])))
    for n in names:
        steps.append((n, f"publications {PUBLICATION} (any new replicated table) and rm_pub_to_<peer> (payload "
                          "tables filtered to the peer's zone); subscriptions older than those switch after resuming"))
    for n in names:
        if subs[n]:
            steps.append((n, "resume apply: ALTER SUBSCRIPTION … ENABLE on " + ", ".join(subs[n])
                          + "; REFRESH PUBLICATION (copy_data = false) where a table was added"))
    return [PlanStep(i, region, action) for i, (region, action) in enumerate(steps, 1)]


@dataclass(frozen=True)
class UpgradeReport:
    regions: list[RegionRevision]
    paused_s: float | None  # None: nothing was paused (nothing to do, or no subscriptions yet)
    subscriptions: list[str]


def upgrade_all(
    config: MeshConfig,
    *,
    regions: list[str] | None = None,
    extra_versions: Sequence[str] = (),
    say: Callable[[str], None] = lambda _line: None,
) -> list[RegionRevision]:
    """Upgrade every region to head on a running mesh (after checking compatibility), in the
    order :func:`plan` prints. Returns revisions before/after; :func:`upgrade_live` also
    reports the pause."""
    return upgrade_live(config, regions=regions, extra_versions=extra_versions, say=say).regions


def upgrade_live(
    config: MeshConfig,
    *,
    regions: list[str] | None = None,
    extra_versions: Sequence[str] = (),
    say: Callable[[str], None] = lambda _line: None,
    switch_timeout: float = 60.0,
) -> UpgradeReport:
    """See :func:`upgrade_all`; ``say`` receives a line per action as it happens.
    ``switch_timeout``: how long step 5 waits for each subscription to confirm.

    Raises MigrationError. If an upgrade fails, apply stays paused everywhere (a row of the
    new shape would stop it anyway); fix the cause and run migrate again, which resumes it.
    """
    names = regions or list(config.regions)
    engines = {name: engine_for(config, name) for name in names}
    before = {name: current_revision(engine) for name, engine in engines.items()}
    check_compatible(before, extra_versions)
    todo = {n: pending(e, extra_versions) for n, e in engines.items()}
    subs = {n: [s["subname"] for s in link_health.subscriptions(e)] for n, e in engines.items()}
    paused_at: float | None = None
    if any(todo.values()) and any(subs.values()):
        say(f"pausing apply on {sum(len(v) for v in subs.values())} subscriptions until every region's DDL "
            "committed (about 0.3 s for a column and a table); local writes go on, changes wait in the slots")
        paused_at = time.monotonic()
        for n in names:
            for sub in subs[n]:
                subscribing.set_subscription_enabled(engines[n], sub, False)
        for n in names:
            for sub in subs[n]:
                subscribing.wait_worker_stopped(engines[n], sub)
            if subs[n]:
                say(f"{n}: apply paused ({', '.join(subs[n])})")
    out = []
    for name, engine in engines.items():
        if todo[name]:
            try:
                command.upgrade(alembic_config(engine, extra_versions), "head")
            except Exception as exc:
                raise MigrationError(
                    f"{name}: upgrade failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
                    + ("Apply is paused in every region; fix the cause and run 'regionmesh migrate' again."
                       if paused_at is not None else "Fix the cause and run 'regionmesh migrate' again."),
                    before,
                ) from exc
            say(f"{name}: upgraded {before[name] or '(empty)'} -> {current_revision(engine)}")
        out.append(RegionRevision(name, before[name], current_revision(engine)))
    if any(subs.values()) or len(config.regions) == 1:  # a new mesh is seeded by 'replication setup'
        seeded = seed_from_file(config, engines)
        if seeded and seeded[1]:
            say(f"{seeded[0]}: zones {', '.join(seeded[1])} from the mesh file (replicated to every region)")
    config = with_mesh_zones(config)  # the payload publications' filters follow the zones the mesh holds
    published: dict[str, list[str]] = {}
    to_switch: set[tuple[str, str]] = set()
    marks: dict[str, str] = {}
    if any(subs.values()):
        # Subscriptions older than the per-destination payload publications switch after resuming.
        to_switch = publications.unswitched(engines, names)
        added, marks = publications.publish_all(config, engines, names, to_switch)
        for name, engine in engines.items():
            if added[name]:
                say(f"{name}: publication {PUBLICATION} + {', '.join(added[name])}")
            published[name] = publishing.publication_tables(engine, PUBLICATION) + (
                list(ZONED_TABLES) if replicated_tables.payload_zoned(engine) else [])
    paused_s = None
    if paused_at is not None:
        for n in names:
            for sub in subs[n]:
                subscribing.set_subscription_enabled(engines[n], sub, True)
        paused_s = time.monotonic() - paused_at
        for n in names:
            for sub in subs[n]:
                facts = subscribing.subscription_facts(engines[n], sub)
                publisher = next((p for p in published if subscription_name(n, p) == sub), None)
                missing = set(published.get(publisher or "", [])) - set(facts["tables"] if facts else [])
                if missing:
                    subscribing.refresh_subscription(engines[n], sub)
                    say(f"{n}: {sub} applies {', '.join(sorted(missing))} from now on")
            if subs[n]:
                say(f"{n}: apply resumed")
        say(f"apply was paused for {paused_s:.2f}s")
    if to_switch:
        try:
            publications.switch(config, engines, to_switch, marks, timeout=switch_timeout, say=say)
        except publications.SwitchTimeout as exc:
            raise MigrationError(f"every region is at head, but {exc}", before) from exc
    return UpgradeReport(out, paused_s, [s for n in names for s in subs[n]])


def revisions(config: MeshConfig) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in config.regions:
        out[name] = current_revision(engine_for(config, name))
    return out
