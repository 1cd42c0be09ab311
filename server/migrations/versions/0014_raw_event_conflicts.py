"""ingest at scale: a partial index on each stream's conflicts

Revision ID: 0014_raw_event_conflicts
Revises: 0013_billing_lines_keyed
Create Date: 2026-12-03

- `raw_event (controller_id, outbox_id, conflict_seq) WHERE conflict_seq IS NOT NULL`:
  every ack reads its stream's conflicting seqs; without it the read scanned all the
  stream's events (its cost grew with the stream, one such read per stream per batch).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_raw_event_conflicts"
down_revision: str | None = "0013_billing_lines_keyed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONFLICT = sa.text("conflict_seq IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_raw_event_conflict",
        "raw_event",
        ["controller_id", "outbox_id", "conflict_seq"],
        postgresql_where=_CONFLICT,
        sqlite_where=_CONFLICT,
    )


def downgrade() -> None:
    op.drop_index("ix_raw_event_conflict", table_name="raw_event")
