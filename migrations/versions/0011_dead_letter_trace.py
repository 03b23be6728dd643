"""dead letters that can be traced, an outbox keyed by run, rejections sent back

- ``dead_letters`` keeps the Celery task id, the content type, and for the body a bounded
  prefix plus its total size and SHA-256, so a big rejected message can be matched to what
  its producer sent.
- ``outbox`` is unique on ``run_id`` (tenant + idempotency key), not on the producer-chosen
  submission id: two tenants using the same key are two runs, both kept.
- ``outbox.rejected_at``/``rejection``: the home rejected a forwarded submission (or it never
  arrived after the allowed sends); the entry stays, visible, and is not sent again.
  ``sends`` counts publications.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("task_id", sa.Text(), nullable=True))
    op.add_column("dead_letters", sa.Column("content_type", sa.Text(), nullable=True))
    op.add_column("dead_letters", sa.Column("payload_size", sa.BigInteger(), nullable=True))
    op.add_column("dead_letters", sa.Column("payload_sha256", sa.Text(), nullable=True))
    op.create_index(op.f("ix_dead_letters_task_id"), "dead_letters", ["task_id"], unique=False)
    op.create_index(op.f("ix_dead_letters_submission_id"), "dead_letters", ["submission_id"], unique=False)

    # One entry per run: an older duplicate of the same run is the same submission.
    op.execute("DELETE FROM outbox a USING outbox b WHERE a.run_id = b.run_id AND a.id > b.id")
    op.drop_constraint(op.f("uq_outbox_submission_id"), "outbox", type_="unique")
    op.create_unique_constraint(op.f("uq_outbox_run_id"), "outbox", ["run_id"])
    op.create_index(op.f("ix_outbox_submission_id"), "outbox", ["submission_id"], unique=False)
    op.add_column("outbox", sa.Column("sends", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("outbox", sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("rejection", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "rejection")
    op.drop_column("outbox", "rejected_at")
    op.drop_column("outbox", "sends")
    op.drop_index(op.f("ix_outbox_submission_id"), table_name="outbox")
    op.drop_constraint(op.f("uq_outbox_run_id"), "outbox", type_="unique")
    op.execute("DELETE FROM outbox a USING outbox b WHERE a.submission_id = b.submission_id AND a.id > b.id")
    op.create_unique_constraint(op.f("uq_outbox_submission_id"), "outbox", ["submission_id"])
    op.drop_index(op.f("ix_dead_letters_submission_id"), table_name="dead_letters")
    op.drop_index(op.f("ix_dead_letters_task_id"), table_name="dead_letters")
    op.drop_column("dead_letters", "payload_sha256")
    op.drop_column("dead_letters", "payload_size")
    op.drop_column("dead_letters", "content_type")
    op.drop_column("dead_letters", "task_id")
