"""minimisation: partner request versions, pupil restrictions, audience views and departures

Revision ID: 0010_minimisation
Revises: 0009_access_log_operation
Create Date: 2026-12-02 19:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.sqltypes

revision: str = '0010_minimisation'
down_revision: str | None = '0009_access_log_operation'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fields', sa.JSON(), nullable=True))
    op.create_table('partner_request_versions',
    sa.Column('partner_id', sa.String(length=40), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], ),
    sa.PrimaryKeyConstraint('partner_id', 'version')
    )
    op.create_table('student_restrictions',
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('school_id')
    )
    op.create_table('audience_views',
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('partner_id', sa.String(length=40), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('members_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('updated_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], ),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('school_id', 'partner_id')
    )
    op.create_table('audience_departures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('partner_id', sa.String(length=40), nullable=False),
    sa.Column('left_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('ids_sealed', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], ),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audience_departures', schema=None) as batch_op:
        batch_op.create_index('ix_audience_departures_pair_at', ['school_id', 'partner_id', 'left_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audience_departures', schema=None) as batch_op:
        batch_op.drop_index('ix_audience_departures_pair_at')
    op.drop_table('audience_departures')
    op.drop_table('audience_views')
    op.drop_table('student_restrictions')
    op.drop_table('partner_request_versions')
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.drop_column('fields')
