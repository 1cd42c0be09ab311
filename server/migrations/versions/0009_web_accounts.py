"""web accounts: one-time set-password links, problem reports

Revision ID: 0009_web_accounts
Revises: 0008_security
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.adapters.orm


revision: str = '0009_web_accounts'
down_revision: str | None = '0008_security'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('account_link',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('purpose', sa.String(length=20), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=True),
    sa.Column('created_at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.Column('expires_at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.Column('used_at', server.adapters.orm.UtcDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_account_link_member_id_member')),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_account_link'))
    )
    with op.batch_alter_table('account_link', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_link_member_id'), ['member_id'], unique=False)

    op.create_table('problem_report',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('machine_id', sa.String(length=63), nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=True),
    sa.Column('text', sa.String(length=2000), nullable=False),
    sa.Column('created_at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machine.id'], name=op.f('fk_problem_report_machine_id_machine')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_problem_report'))
    )
    with op.batch_alter_table('problem_report', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_problem_report_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_problem_report_machine_id'), ['machine_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('problem_report', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_problem_report_machine_id'))
        batch_op.drop_index(batch_op.f('ix_problem_report_created_at'))
    op.drop_table('problem_report')
    with op.batch_alter_table('account_link', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_account_link_member_id'))
    op.drop_table('account_link')
