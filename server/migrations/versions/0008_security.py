"""security: the audit log keeps no API token names; erased members' token names go

Revision ID: 0008_security
Revises: 0007_billing
Create Date: 2026-11-22

Data only (no schema change). Before this revision `api_token.create` entries copied the
name the member typed into `after`; erasure left token names in `api_token`.
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_security"
down_revision: str | None = "0007_billing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_audit = sa.table(
    "audit_entry", sa.column("id", sa.Integer), sa.column("action"), sa.column("after", sa.Text)
)
_token = sa.table("api_token", sa.column("member_id"), sa.column("name"))
_member = sa.table("member", sa.column("id"), sa.column("erased_at"))


# The log is append-only (triggers of revision 0002): this one rewrite lifts the guard
# for the length of the transaction that makes it.
_LIFT = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_entry_no_update",
    ],
    "postgresql": ["ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_no_change"],
}
_RESTORE = {
    "sqlite": [
        "CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_entry "
        "BEGIN SELECT RAISE(ABORT, 'audit_entry is append-only'); END",
    ],
    "postgresql": ["ALTER TABLE audit_entry ENABLE TRIGGER audit_entry_no_change"],
}


def _without_names() -> dict[int, str]:
    """New `after` of the api_token.create entries that hold a name."""
    rows = op.get_bind().execute(
        sa.select(_audit.c.id, _audit.c.after).where(_audit.c.action == "api_token.create")
    )
    changed: dict[int, str] = {}
    for entry_id, after in rows.all():
        facts = json.loads(after) if after else None
        if isinstance(facts, dict) and "name" in facts:
            del facts["name"]
            changed[entry_id] = json.dumps(facts, sort_keys=True)
    return changed


def upgrade() -> None:
    bind = op.get_bind()
    changed = _without_names()
    if changed:
        dialect = bind.dialect.name
        for statement in _LIFT.get(dialect, []):
            op.execute(statement)
        for entry_id, after in changed.items():
            bind.execute(_audit.update().where(_audit.c.id == entry_id).values(after=after))
        for statement in _RESTORE.get(dialect, []):
            op.execute(statement)
    erased = sa.select(_member.c.id).where(_member.c.erased_at.is_not(None))
    bind.execute(_token.update().where(_token.c.member_id.in_(erased)).values(name="erased"))


def downgrade() -> None:
    """The names are gone for good: nothing to restore."""
