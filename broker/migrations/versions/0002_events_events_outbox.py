"""events outbox

Revision ID: 0002_events
Revises: 0002_cache
Create Date: 2026-11-23 16:43:09.032955
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.sqltypes

revision: str = '0002_events'
down_revision: str | None = '0002_cache'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('events_outbox',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('partner_id', sa.String(length=40), nullable=True),
    sa.Column('area', sa.String(length=64), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('dispatched_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_events_outbox_pending', ['dispatched_at', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_outbox_school_id'), ['school_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('events_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_outbox_school_id'))
        batch_op.drop_index('ix_events_outbox_pending')

    op.drop_table('events_outbox')
