"""cache tables

Revision ID: 0002_cache
Revises: 0001
Create Date: 2026-11-23 16:48:31
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.sqltypes

revision: str = '0002_cache'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('cached_areas',
    sa.Column('school_id', sa.String(length=256), nullable=False),
    sa.Column('area', sa.String(length=64), nullable=False),
    sa.Column('as_of', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('purge_after', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('tier', sa.Enum('warm', 'cold', name='cachetier', native_enum=False, length=32), nullable=False),
    sa.Column('data_version', sa.BigInteger(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('record_count', sa.Integer(), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('last_read_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_requested_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('refresh_requested_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('cold_blob_key', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('school_id', 'area')
    )
    with op.batch_alter_table('cached_areas', schema=None) as batch_op:
        batch_op.create_index('ix_cached_areas_purge_after', ['purge_after'], unique=False)

    op.create_table('cached_records',
    sa.Column('school_id', sa.String(length=256), nullable=False),
    sa.Column('area', sa.String(length=64), nullable=False),
    sa.Column('record_key', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('changed_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('as_of', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('content_hash', sa.LargeBinary(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('blob_key', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('school_id', 'area', 'record_key')
    )
    with op.batch_alter_table('cached_records', schema=None) as batch_op:
        batch_op.create_index('ix_cached_records_changed_at', ['school_id', 'area', 'changed_at'], unique=False)
        batch_op.create_index('ix_cached_records_seq', ['school_id', 'area', 'seq'], unique=True)

    op.create_table('data_keys',
    sa.Column('school_id', sa.String(length=256), nullable=False),
    sa.Column('version', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('kek_id', sa.String(length=64), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('school_id', 'version')
    )
    with op.batch_alter_table('data_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_data_keys_kek_id'), ['kek_id'], unique=False)

    op.create_table('shredded_schools',
    sa.Column('school_id', sa.String(length=256), nullable=False),
    sa.Column('shredded_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('school_id')
    )


def downgrade() -> None:
    op.drop_table('shredded_schools')
    with op.batch_alter_table('data_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_data_keys_kek_id'))

    op.drop_table('data_keys')
    with op.batch_alter_table('cached_records', schema=None) as batch_op:
        batch_op.drop_index('ix_cached_records_seq')
        batch_op.drop_index('ix_cached_records_changed_at')

    op.drop_table('cached_records')
    with op.batch_alter_table('cached_areas', schema=None) as batch_op:
        batch_op.drop_index('ix_cached_areas_purge_after')

    op.drop_table('cached_areas')
