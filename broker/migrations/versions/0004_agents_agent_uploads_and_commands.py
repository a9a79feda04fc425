"""agent uploads and commands

Revision ID: 0004_agents
Revises: 0003_consent
Create Date: 2026-11-23 16:45:50.148591
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.sqltypes

revision: str = '0004_agents'
down_revision: str | None = '0003_consent'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('agent_commands',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.Enum('extract', 'reconnect', 'restart', 'check_update', 'configure', name='commandkind', native_enum=False, length=32), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'sent', 'done', 'failed', 'expired', name='commandstatus', native_enum=False, length=32), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('sent_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('completed_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('result_detail', sa.String(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agent_commands', schema=None) as batch_op:
        batch_op.create_index('ix_agent_commands_pending', ['school_id', 'status'], unique=False)

    op.create_table('upload_batches',
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('area', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('body_digest', sa.String(length=64), nullable=False),
    sa.Column('extracted_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('received_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('response', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('batch_id')
    )
    with op.batch_alter_table('upload_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upload_batches_school_id'), ['school_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('upload_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upload_batches_school_id'))

    op.drop_table('upload_batches')
    with op.batch_alter_table('agent_commands', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_commands_pending')

    op.drop_table('agent_commands')
