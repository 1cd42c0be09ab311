"""accounts, roles, categories, API tokens, training types, audit log, enrollments

Existing data is carried over: every machine becomes a training type of its own
covering just it, and its trainings move to that type; the member categories in use
become rows of member_category. The audit log is made append-only by triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.adapters.orm


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


DEFAULT_CATEGORIES = {
    "member": "Member",
    "student": "Student",
    "non-member": "Non-member",
    "partner": "Partner",
}

APPEND_ONLY = {
    "sqlite": [
        "CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_entry "
        "BEGIN SELECT RAISE(ABORT, 'audit_entry is append-only'); END",
        "CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_entry "
        "BEGIN SELECT RAISE(ABORT, 'audit_entry is append-only'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION audit_entry_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'audit_entry is append-only'; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER audit_entry_no_change BEFORE UPDATE OR DELETE ON audit_entry "
        "FOR EACH ROW EXECUTE FUNCTION audit_entry_append_only()",
    ],
}

DROP_APPEND_ONLY = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_entry_no_update",
        "DROP TRIGGER IF EXISTS audit_entry_no_delete",
    ],
    "postgresql": [
        "DROP TRIGGER IF EXISTS audit_entry_no_change ON audit_entry",
        "DROP FUNCTION IF EXISTS audit_entry_append_only()",
    ],
}


def upgrade() -> None:
    op.create_table('audit_entry',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.Column('actor_id', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('object_type', sa.String(length=40), nullable=False),
    sa.Column('object_id', sa.String(length=100), nullable=False),
    sa.Column('before', sa.Text(), nullable=True),
    sa.Column('after', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entry'))
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_entry_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entry_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entry_at'), ['at'], unique=False)
        batch_op.create_index('ix_audit_entry_object', ['object_type', 'object_id'], unique=False)

    op.create_table('member_category',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_category'))
    )
    op.create_table('training_type',
    sa.Column('id', sa.String(length=63), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('lapse_months', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_type'))
    )
    op.create_table('training_type_machine',
    sa.Column('training_type_id', sa.String(length=63), nullable=False),
    sa.Column('machine_id', sa.String(length=63), nullable=False),
    sa.ForeignKeyConstraint(['machine_id'], ['machine.id'], name=op.f('fk_training_type_machine_machine_id_machine')),
    sa.ForeignKeyConstraint(['training_type_id'], ['training_type.id'], name=op.f('fk_training_type_machine_training_type_id_training_type')),
    sa.PrimaryKeyConstraint('training_type_id', 'machine_id', name=op.f('pk_training_type_machine'))
    )
    op.create_table('api_token',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.Column('last_used_at', server.adapters.orm.UtcDateTime(), nullable=True),
    sa.Column('revoked_at', server.adapters.orm.UtcDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_api_token_member_id_member')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_token_token_hash'))
    )
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_token_member_id'), ['member_id'], unique=False)

    op.create_table('enrollment',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('machine_id', sa.String(length=63), nullable=False),
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('requested_by', sa.String(length=64), nullable=True),
    sa.Column('created_at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.Column('expires_at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.Column('badge_uid', sa.String(length=40), nullable=True),
    sa.Column('completed_at', server.adapters.orm.UtcDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['machine_id'], ['machine.id'], name=op.f('fk_enrollment_machine_id_machine')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_enrollment_member_id_member')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrollment'))
    )
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrollment_machine_id'), ['machine_id'], unique=False)

    op.create_table('login_session',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.Column('expires_at', server.adapters.orm.UtcDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_login_session_member_id_member')),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_login_session'))
    )
    with op.batch_alter_table('login_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_login_session_member_id'), ['member_id'], unique=False)

    op.create_table('member_role',
    sa.Column('member_id', sa.String(length=36), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_member_role_member_id_member')),
    sa.PrimaryKeyConstraint('member_id', 'role', name=op.f('pk_member_role'))
    )
    with op.batch_alter_table('controller', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mqtt_username', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('mqtt_password_hash', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('credentials_issued_at', server.adapters.orm.UtcDateTime(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_controller_mqtt_username'), ['mqtt_username'])

    conn = op.get_bind()
    categories = sa.table("member_category", sa.column("id", sa.String), sa.column("name", sa.String))
    used = {row[0] for row in conn.execute(sa.text("SELECT DISTINCT category FROM member"))}
    op.bulk_insert(
        categories,
        [{"id": c, "name": DEFAULT_CATEGORIES.get(c, c.title())} for c in sorted(set(DEFAULT_CATEGORIES) | used)],
    )
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_hash', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('erased_at', server.adapters.orm.UtcDateTime(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_member_category_member_category'), 'member_category', ['category'], ['id'])

    conn.execute(sa.text("INSERT INTO training_type (id, name) SELECT id, name FROM machine"))
    conn.execute(
        sa.text(
            "INSERT INTO training_type_machine (training_type_id, machine_id) SELECT id, id FROM machine"
        )
    )
    with op.batch_alter_table('training', schema=None) as batch_op:
        batch_op.add_column(sa.Column('training_type_id', sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column('revoked_by', sa.String(length=200), nullable=True))
    conn.execute(sa.text("UPDATE training SET training_type_id = machine_id"))
    with op.batch_alter_table('training', schema=None) as batch_op:
        batch_op.alter_column('training_type_id', existing_type=sa.String(length=63), nullable=False)
        batch_op.drop_index(batch_op.f('ix_training_machine_id'))
        batch_op.create_index(batch_op.f('ix_training_training_type_id'), ['training_type_id'], unique=False)
        batch_op.drop_constraint(batch_op.f('fk_training_machine_id_machine'), type_='foreignkey')
        batch_op.create_foreign_key(batch_op.f('fk_training_training_type_id_training_type'), 'training_type', ['training_type_id'], ['id'])
        batch_op.drop_column('machine_id')

    for statement in APPEND_ONLY[conn.dialect.name]:
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_APPEND_ONLY[op.get_bind().dialect.name]:
        op.execute(statement)
    with op.batch_alter_table('training', schema=None) as batch_op:
        batch_op.add_column(sa.Column('machine_id', sa.VARCHAR(length=63), nullable=False))
        batch_op.drop_constraint(batch_op.f('fk_training_training_type_id_training_type'), type_='foreignkey')
        batch_op.create_foreign_key(batch_op.f('fk_training_machine_id_machine'), 'machine', ['machine_id'], ['id'])
        batch_op.drop_index(batch_op.f('ix_training_training_type_id'))
        batch_op.create_index(batch_op.f('ix_training_machine_id'), ['machine_id'], unique=False)
        batch_op.drop_column('revoked_by')
        batch_op.drop_column('training_type_id')

    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_member_category_member_category'), type_='foreignkey')
        batch_op.drop_column('erased_at')
        batch_op.drop_column('password_hash')

    with op.batch_alter_table('controller', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_controller_mqtt_username'), type_='unique')
        batch_op.drop_column('credentials_issued_at')
        batch_op.drop_column('mqtt_password_hash')
        batch_op.drop_column('mqtt_username')

    op.drop_table('member_role')
    with op.batch_alter_table('login_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_session_member_id'))

    op.drop_table('login_session')
    with op.batch_alter_table('enrollment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_enrollment_machine_id'))

    op.drop_table('enrollment')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_token_member_id'))

    op.drop_table('api_token')
    op.drop_table('training_type_machine')
    op.drop_table('training_type')
    op.drop_table('member_category')
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_object')
        batch_op.drop_index(batch_op.f('ix_audit_entry_at'))
        batch_op.drop_index(batch_op.f('ix_audit_entry_actor_id'))
        batch_op.drop_index(batch_op.f('ix_audit_entry_action'))

    op.drop_table('audit_entry')
