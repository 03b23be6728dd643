"""Alembic environment: runs against the engine regionmesh passes in, or a URL.

``regionmesh migrate`` passes an engine per region. For plain ``alembic``
commands set ``REGIONMESH_DATABASE_URL`` (or ``-x url=...``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

import regionmesh.models.tables  # noqa: F401  - registers the tables on the metadata
from regionmesh.config import database_url_from_env
from regionmesh.migrations.history import bind_legacy_revisions
from regionmesh.models.base import Base
from regionmesh.models.engine import make_engine

config = context.config
target_metadata = Base.metadata


def _engine() -> Engine:
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine  # type: ignore[no-any-return]
    url = context.get_x_argument(as_dictionary=True).get("url") or database_url_from_env()
    if not url:
        raise SystemExit("alembic: set REGIONMESH_DATABASE_URL or pass -x url=postgresql://...")
    return make_engine(url, pool_size=1)


def run_migrations_online() -> None:
    # Revisions 0008-0017 apply models/sql files by name: they get those files as of 0017.
    bind_legacy_revisions(context.script)
    with _engine().connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("alembic: offline mode is not supported; run against a database")
run_migrations_online()
