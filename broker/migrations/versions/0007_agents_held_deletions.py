"""held deletions: uploads that would delete too much of an area, until confirmed

Revision ID: 0007_held_deletions
Revises: 0006_console
Create Date: 2026-12-02 16:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.sqltypes

revision: str = '0007_held_deletions'
down_revision: str | None = '0006_console'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('held_deletions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('area', sa.String(length=64), nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=True),
    sa.Column('records', sa.Integer(), nullable=False),
    sa.Column('deleting', sa.Integer(), nullable=False),
    sa.Column('held_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('confirmed_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('confirmed_by', sa.String(length=200), nullable=True),
    sa.Column('released_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('held_deletions', schema=None) as batch_op:
        batch_op.create_index('ix_held_deletions_open', ['school_id', 'area', 'released_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('held_deletions', schema=None) as batch_op:
        batch_op.drop_index('ix_held_deletions_open')

    op.drop_table('held_deletions')
