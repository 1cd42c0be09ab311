"""badge anti-cloning: protection, highest counter, cloned mark, counters written

Revision ID: 0010_badge_counters
Revises: 0009_web_accounts
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.adapters.orm


revision: str = '0010_badge_counters'
down_revision: str | None = '0009_web_accounts'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('badge', schema=None) as batch_op:
        batch_op.add_column(sa.Column('protection', sa.String(length=20), server_default='plain', nullable=False))
        batch_op.add_column(sa.Column('counter_high', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('cloned_at', server.adapters.orm.UtcDateTime(), nullable=True))
    op.create_table('badge_counter_use',
    sa.Column('badge_id', sa.Integer(), nullable=False),
    sa.Column('counter', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('machine_id', sa.String(length=63), nullable=False),
    sa.Column('at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['badge_id'], ['badge.id'], name=op.f('fk_badge_counter_use_badge_id_badge')),
    sa.PrimaryKeyConstraint('badge_id', 'counter', name=op.f('pk_badge_counter_use'))
    )


def downgrade() -> None:
    op.drop_table('badge_counter_use')
    with op.batch_alter_table('badge', schema=None) as batch_op:
        batch_op.drop_column('cloned_at')
        batch_op.drop_column('counter_high')
        batch_op.drop_column('protection')
