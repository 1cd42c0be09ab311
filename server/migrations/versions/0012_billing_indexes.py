"""billing at scale: the fingerprint of a period's priced drafts, indexes of the close

Revision ID: 0012_billing_indexes
Revises: 0011_prepaid
Create Date: 2026-12-02

- `billing_period.priced_fingerprint`: a digest of the inputs the drafts were priced
  from; a recompute whose inputs did not change keeps the drafts.
- `billing_statement (period_id, status, member_id)`: a period's drafts, joined to their
  lines by member, deleted, summed and approved.
- partial indexes on `usage_session.started_at` for the supervised sessions and the
  maintenance overrides that the credit sweep reads (a few percent of the sessions).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_billing_indexes"
down_revision: str | None = "0011_prepaid"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUPERVISED = sa.text("supervisor_member_id IS NOT NULL")
_MAINTENANCE = sa.text("maintenance_override")


def upgrade() -> None:
    with op.batch_alter_table("billing_period", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priced_fingerprint", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_billing_statement_period_status_member",
        "billing_statement",
        ["period_id", "status", "member_id"],
    )
    op.create_index(
        "ix_usage_session_supervised",
        "usage_session",
        ["started_at"],
        postgresql_where=_SUPERVISED,
        sqlite_where=_SUPERVISED,
    )
    op.create_index(
        "ix_usage_session_maintenance",
        "usage_session",
        ["started_at"],
        postgresql_where=_MAINTENANCE,
        sqlite_where=_MAINTENANCE,
    )


def downgrade() -> None:
    op.drop_index("ix_usage_session_maintenance", table_name="usage_session")
    op.drop_index("ix_usage_session_supervised", table_name="usage_session")
    op.drop_index("ix_billing_statement_period_status_member", table_name="billing_statement")
    with op.batch_alter_table("billing_period", schema=None) as batch_op:
        batch_op.drop_column("priced_fingerprint")
