"""writes: partner write-back queued for the school's agent

Revision ID: 0008_writes
Revises: 0007_held_deletions
Create Date: 2026-12-02 19:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.sqltypes

revision: str = '0008_writes'
down_revision: str | None = '0007_held_deletions'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('writes',
    sa.Column('results', sa.JSON(), nullable=True),
    sa.Column('payload_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('partner_id', sa.String(length=40), nullable=False),
    sa.Column('consent_id', sa.String(length=40), nullable=True),
    sa.Column('area', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('body_digest', sa.String(length=64), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'delivered', 'applied', 'partially_applied', 'failed', 'expired', 'cancelled', name='writestatus', native_enum=False, length=32), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=True),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('delivered_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('finished_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('purged_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('cancelled_by', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('partner_id', 'idempotency_key', name='uq_writes_partner_key')
    )
    with op.batch_alter_table('writes', schema=None) as batch_op:
        batch_op.create_index('ix_writes_partner_created', ['partner_id', 'created_at'], unique=False)
        batch_op.create_index('ix_writes_school_status', ['school_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('writes', schema=None) as batch_op:
        batch_op.drop_index('ix_writes_school_status')
        batch_op.drop_index('ix_writes_partner_created')

    op.drop_table('writes')
