"""``regionmesh region resync``: the operator's side of rebuilding a region.

A region whose database is gone (dropped, or lost with its disk on a server whose
roles are back: ``dev up`` or the operator's own bootstrap makes them) first gets it
back: the database is created owned by the app role and named for its region, and its
in-database grants are made, and it is migrated to head on its own (nothing replicates
from an empty database, so nothing is paused; a database at an older revision is
refused: ``regionmesh migrate`` upgrades the mesh in order first). Then
``replication.resync`` throws away whatever copy is left and rebuilds it from the
seed while the other regions keep writing.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from sqlalchemy.engine import make_url

from regionmesh.config import MeshConfig
from regionmesh.models import admin
from regionmesh.models.engine import dispose, engine_for, make_engine
from regionmesh.ops.migrate import alembic_config, current_revision, head
from regionmesh.replication.join import JoinError
from regionmesh.replication.resync import ResyncReport, resync


def rebuild(config: MeshConfig, region: str, *, seed: str, admin_url: str, timeout: float = 120,
            say: Callable[[str], None] = lambda _line: None) -> ResyncReport:
    """Rebuild ``region`` from ``seed``, recreating and migrating its database first if it is
    gone. ``admin_url``: a superuser URL of ``region``'s database. Raises JoinError (from
    resync) or the driver's error if the region's server cannot be reached."""
    url = make_url(config.regions[region].database_url)
    database, app_role = url.database or "", url.username or ""
    server = make_engine(make_url(admin_url).set(database="postgres").render_as_string(hide_password=False),
                         pool_size=1)
    try:
        created = admin.ensure_database(server, database=database, app_role=app_role, region=region)
    finally:
        server.dispose()
    if created:
        say(f"{region}: database {database} was gone; created it, owned by {app_role}")
        dispose(config, region)  # pooled connections to the old database are dead
        db_admin = make_engine(admin_url, pool_size=1)
        try:
            admin.grant_in_database(db_admin, app_role=app_role)
        finally:
            db_admin.dispose()
    target = engine_for(config, region)
    before = current_revision(target)
    if before is None:  # empty: nothing replicates from it yet, so it is migrated on its own
        command.upgrade(alembic_config(target), "head")
        say(f"{region}: migrated (empty) -> {current_revision(target)}")
    elif before != head():
        # Its peers still apply its changes: a revision of its own would stop their links.
        raise JoinError(f"{region} is at schema revision {before}, not head ({head()}): run "
                        "'regionmesh migrate' first (it upgrades every region in order), then resync")
    return resync(config, region, seed=seed, admin_url=admin_url, timeout=timeout)
