"""drop ix_cached_records_changed_at: no query uses it, and every upload paid for it

Reads that filter on `changed_at` (updated_since) page in seq order and use
ix_cached_records_seq; the planner never chose this index (SQLite's plan names the seq
index).  Keeping it cost each inserted record about a third of its insert, and an updated
record a delete and an insert in it.  On PostgreSQL too the query is served by the seq
index (the rows it wants are those of highest seq).

Revision ID: 0011_drop_changed_at_index
Revises: 0010_minimisation
Create Date: 2026-12-03 05:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0011_drop_changed_at_index'
down_revision: str | None = '0010_minimisation'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('cached_records', schema=None) as batch_op:
        batch_op.drop_index('ix_cached_records_changed_at')


def downgrade() -> None:
    with op.batch_alter_table('cached_records', schema=None) as batch_op:
        batch_op.create_index(
            'ix_cached_records_changed_at', ['school_id', 'area', 'changed_at'], unique=False
        )
