"""prepaid option: per member category, prepaid on/off, threshold and overdraft bound;
the prepaid sessions flagged for going past the overdraft bound

Revision ID: 0011_prepaid
Revises: 0010_badge_counters
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.adapters.orm


revision: str = '0011_prepaid'
down_revision: str | None = '0010_badge_counters'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('billing_category_pricing', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prepaid', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('prepaid_threshold_cents', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('prepaid_overdraft_cents', sa.BigInteger(), server_default='0', nullable=False))

    op.create_table('billing_prepaid_overdraft',
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('machine_id', sa.String(length=63), nullable=False),
    sa.Column('balance_cents', sa.BigInteger(), nullable=False),
    sa.Column('overdraft_cents', sa.BigInteger(), nullable=False),
    sa.Column('flagged_at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('session_id', name=op.f('pk_billing_prepaid_overdraft'))
    )
    with op.batch_alter_table('billing_prepaid_overdraft', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_billing_prepaid_overdraft_member_id'), ['member_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('billing_prepaid_overdraft', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_billing_prepaid_overdraft_member_id'))
    op.drop_table('billing_prepaid_overdraft')
    with op.batch_alter_table('billing_category_pricing', schema=None) as batch_op:
        batch_op.drop_column('prepaid_overdraft_cents')
        batch_op.drop_column('prepaid_threshold_cents')
        batch_op.drop_column('prepaid')
