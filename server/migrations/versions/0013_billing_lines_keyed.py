"""billing lines keyed by (statement, session), checked once per statement

Revision ID: 0013_billing_lines_keyed
Revises: 0012_billing_indexes
Create Date: 2026-12-02

Pricing a period writes a line per session in one statement; at a million sessions the
per-row foreign key check and the three indexes took most of its time. Now:

- `billing_line`'s key is (statement_id, session_id): the `id` column, its index and the
  indexes on `statement_id` (the key's prefix) and on `session_id` go. "Is this session
  on an approved statement" is asked through its member's approved statements and the
  key (a line's statement is always its session's member's).
- the foreign key line -> statement is replaced, on PostgreSQL, by checks once per
  statement over the transition table (merged with the approved-statement guard): every
  inserted or updated line's statement exists and is not approved, and a statement that
  still has lines cannot be deleted. SQLite gets the same rules as row triggers (its
  table rebuild drops the line triggers of 0007_billing, recreated here).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_billing_lines_keyed"
down_revision: str | None = "0012_billing_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_billing_line_statement_id_billing_statement"
_FROZEN = "RAISE(ABORT, 'the lines of an approved statement cannot change')"
_NO_STATEMENT = "RAISE(ABORT, 'a billing line needs an existing statement that is not approved')"
_HAS_LINES = "RAISE(ABORT, 'a statement that has lines cannot be deleted')"


def _status(row: str) -> str:
    return f"(SELECT status FROM billing_statement WHERE id = {row}.statement_id)"


SQLITE_TRIGGERS = [
    f"CREATE TRIGGER billing_line_approved_no_{op_} BEFORE {op_.upper()} ON billing_line "
    f"WHEN {_status(row)} = 'approved' BEGIN SELECT {_FROZEN}; END"
    for op_, row in (("insert", "NEW"), ("update", "OLD"), ("delete", "OLD"))
] + [
    *(
        f"CREATE TRIGGER billing_line_statement_{op_} BEFORE {op_.upper()} ON billing_line "
        f"WHEN {_status('NEW')} IS NULL OR {_status('NEW')} = 'approved' "
        f"BEGIN SELECT {_NO_STATEMENT}; END"
        for op_ in ("insert", "update")
    ),
    "CREATE TRIGGER billing_statement_lines_no_delete BEFORE DELETE ON billing_statement "
    "WHEN EXISTS (SELECT 1 FROM billing_line WHERE statement_id = OLD.id) "
    f"BEGIN SELECT {_HAS_LINES}; END",
]
SQLITE_DROP = [
    *(f"DROP TRIGGER IF EXISTS billing_line_approved_no_{o}" for o in ("insert", "update", "delete")),
    "DROP TRIGGER IF EXISTS billing_line_statement_insert",
    "DROP TRIGGER IF EXISTS billing_line_statement_update",
    "DROP TRIGGER IF EXISTS billing_statement_lines_no_delete",
]

# Every statement of `rows` exists and is a draft (one pass over the distinct ids).
_PG_WRITABLE = (
    "IF EXISTS (SELECT 1 FROM (SELECT DISTINCT statement_id FROM {rows}) AS r "
    "LEFT JOIN billing_statement s ON s.id = r.statement_id "
    "WHERE s.id IS NULL OR s.status = 'approved') THEN "
    "RAISE EXCEPTION 'a billing line needs an existing statement that is not approved'; "
    "END IF;"
)
POSTGRES_TRIGGERS = [
    "CREATE OR REPLACE FUNCTION billing_line_frozen_insert() RETURNS trigger AS $$ BEGIN "
    + _PG_WRITABLE.format(rows="new_rows")
    + " RETURN NULL; END; $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS billing_line_approved_no_update ON billing_line",
    "CREATE OR REPLACE FUNCTION billing_line_frozen_update() RETURNS trigger AS $$ BEGIN "
    + _PG_WRITABLE.format(rows="old_rows")
    + " "
    + _PG_WRITABLE.format(rows="new_rows")
    + " RETURN NULL; END; $$ LANGUAGE plpgsql",
    "CREATE TRIGGER billing_line_approved_no_update AFTER UPDATE ON billing_line "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION billing_line_frozen_update()",
    "CREATE FUNCTION billing_statement_lines_kept() RETURNS trigger AS $$ BEGIN "
    "IF EXISTS (SELECT 1 FROM old_rows s JOIN billing_line l ON l.statement_id = s.id) THEN "
    "RAISE EXCEPTION 'a statement that has lines cannot be deleted'; END IF; "
    "RETURN NULL; END; $$ LANGUAGE plpgsql",
    "CREATE TRIGGER billing_statement_lines_no_delete AFTER DELETE ON billing_statement "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION billing_statement_lines_kept()",
]
POSTGRES_DROP = [
    "DROP FUNCTION IF EXISTS billing_statement_lines_kept() CASCADE",
    # 0007_billing's guards, as they were.
    "CREATE OR REPLACE FUNCTION billing_line_frozen_insert() RETURNS trigger AS $$ BEGIN "
    "IF EXISTS (SELECT 1 FROM billing_statement s WHERE s.status = 'approved' AND "
    "s.id = ANY (ARRAY(SELECT DISTINCT statement_id FROM new_rows))) THEN "
    "RAISE EXCEPTION 'the lines of an approved statement cannot change'; END IF; "
    "RETURN NULL; END; $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS billing_line_approved_no_update ON billing_line",
    "CREATE OR REPLACE FUNCTION billing_line_frozen_update() RETURNS trigger AS $$ BEGIN "
    "IF EXISTS (SELECT 1 FROM billing_statement s WHERE s.status = 'approved' AND "
    "s.id = ANY (ARRAY(SELECT DISTINCT statement_id FROM old_rows))) THEN "
    "RAISE EXCEPTION 'the lines of an approved statement cannot change'; END IF; "
    "RETURN NULL; END; $$ LANGUAGE plpgsql",
    "CREATE TRIGGER billing_line_approved_no_update AFTER UPDATE ON billing_line "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION billing_line_frozen_update()",
]


def _run(statements: dict[str, list[str]]) -> None:
    for statement in statements.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def upgrade() -> None:
    _run({"sqlite": SQLITE_DROP})
    with op.batch_alter_table("billing_line", schema=None) as batch_op:
        batch_op.drop_index("ix_billing_line_session_id")
        batch_op.drop_index("ix_billing_line_statement_id")
        batch_op.drop_constraint(_FK, type_="foreignkey")
        batch_op.drop_constraint("pk_billing_line", type_="primary")
        batch_op.drop_column("id")
        batch_op.create_primary_key("pk_billing_line", ["statement_id", "session_id"])
    _run({"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGERS})


def downgrade() -> None:
    _run({"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP})
    with op.batch_alter_table("billing_line", schema=None) as batch_op:
        batch_op.drop_constraint("pk_billing_line", type_="primary")
        batch_op.add_column(
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                sa.Identity(),
                nullable=False,
            )
        )
        batch_op.create_primary_key("pk_billing_line", ["id"])
        batch_op.create_foreign_key(_FK, "billing_statement", ["statement_id"], ["id"])
        batch_op.create_index("ix_billing_line_statement_id", ["statement_id"], unique=False)
        batch_op.create_index("ix_billing_line_session_id", ["session_id"], unique=False)
    _run({"sqlite": SQLITE_DROP[:3]})
    _run(
        {
            "sqlite": [
                f"CREATE TRIGGER billing_line_approved_no_{op_} BEFORE {op_.upper()} "
                f"ON billing_line WHEN {_status(row)} = 'approved' BEGIN SELECT {_FROZEN}; END"
                for op_, row in (("insert", "NEW"), ("update", "OLD"), ("delete", "OLD"))
            ]
        }
    )
