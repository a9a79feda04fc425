"""access log: operation (read, or a partner's write)

Revision ID: 0009_access_log_operation
Revises: 0008_writes
Create Date: 2026-12-02 20:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009_access_log_operation'
down_revision: str | None = '0008_writes'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('operation', sa.String(length=8), nullable=False, server_default='read')
        )


def downgrade() -> None:
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.drop_column('operation')
