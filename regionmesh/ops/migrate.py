"""Schema migrations across the mesh: one Alembic history, applied to every region.

DDL does not replicate, so every region runs every migration. Regions can
replicate to each other only while they agree on the row shapes of the
replicated tables: every region must be at a revision this code knows, and
the set of revisions must lie on one line of history (additive migrations
first, so an older region can still apply a newer one's rows until it is
upgraded too).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import as_file, files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from regionmesh.config import MeshConfig
from regionmesh.errors import MigrationError
from regionmesh.models.engine import engine_for


def script_location() -> str:
    """The migrations folder as shipped inside the package (a wheel or an editable install)."""
    with as_file(files("regionmesh.migrations")) as path:
        return str(path)


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    rev = script().get_current_head()
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


def check_compatible(revisions: dict[str, str | None]) -> None:
    """Refuse revisions that cannot replicate to each other (or to head).

    Raises MigrationError naming each region's revision.
    """
    sd = script()
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


def upgrade_all(config: MeshConfig, *, regions: list[str] | None = None) -> list[RegionRevision]:
    """Upgrade every region to head (after checking compatibility). Returns revisions before/after."""
    names = regions or list(config.regions)
    engines = {name: engine_for(config, name) for name in names}
    before = {name: current_revision(engine) for name, engine in engines.items()}
    check_compatible(before)
    out = []
    for name, engine in engines.items():
        command.upgrade(alembic_config(engine), "head")
        out.append(RegionRevision(name, before[name], current_revision(engine)))
    return out


def revisions(config: MeshConfig) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in config.regions:
        out[name] = current_revision(engine_for(config, name))
    return out
