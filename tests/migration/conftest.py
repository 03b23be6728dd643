"""Scratch databases in the test mesh's us-east cluster, dropped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text

from regionmesh.models.engine import make_engine
from tests.conftest import Mesh


@pytest.fixture(scope="module")
def new_database(mesh: Mesh) -> Iterator[Callable[[str], Engine]]:
    """``new_database(name)``: an engine on a new, empty database (superuser). Dropped at the module's end."""
    admin = make_engine(mesh.dev.admin_url("us-east"), pool_size=1)
    made: list[tuple[str, Engine]] = []

    def create(name: str) -> Engine:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine: Engine = make_engine(mesh.dev.admin_url("us-east", name), pool_size=1)
        made.append((name, engine))
        return engine

    try:
        yield create
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name, engine in made:
                engine.dispose()
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
