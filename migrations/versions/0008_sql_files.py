"""the engine's SQL from its files: every function and trigger re-applied from models/sql

From this revision on, the current definition of every function and trigger
lives in ``models/sql/*.sql`` (loaded by ``regionmesh.models.schema_sql``), and
a migration that changes one applies its file; that module's docstring has the
rule. The files hold exactly what 0002-0007 created, so on a database at 0007
this changes nothing (tests/migration proves it) and downgrade has nothing to
undo.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from regionmesh.models import schema_sql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Named one by one, not FILES: a file added later may need tables this revision does not have.
    schema_sql.apply(op.get_bind(), "stamp.sql", "engine.sql", "claims.sql", "conflicts.sql", "triggers.sql")


def downgrade() -> None:
    pass  # 0007 had these definitions already
