"""schools, agents, admins, partners

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 16:28:37.888133
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.sqltypes

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('partners',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('client_secret_hash', sa.String(length=64), nullable=False),
    sa.Column('previous_secret_hash', sa.String(length=64), nullable=True),
    sa.Column('previous_secret_expires_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('webhook_url', sa.String(length=2000), nullable=True),
    sa.Column('webhook_secret_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('rate_limit_per_minute', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('active', 'disabled', name='partnerstatus', native_enum=False, length=32), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('partners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_partners_client_id'), ['client_id'], unique=True)

    op.create_table('schools',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('dfe_number', sa.String(length=7), nullable=False),
    sa.Column('urn', sa.String(length=8), nullable=True),
    sa.Column('status', sa.Enum('active', 'closed', name='schoolstatus', native_enum=False, length=32), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('closed_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('schools', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_schools_dfe_number'), ['dfe_number'], unique=True)

    op.create_table('agents',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('key_hint', sa.String(length=16), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('revoked_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_heartbeat_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('telemetry', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agents_school_id'), ['school_id'], unique=False)

    op.create_table('partner_area_requests',
    sa.Column('partner_id', sa.String(length=40), nullable=False),
    sa.Column('area', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=True),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], ),
    sa.PrimaryKeyConstraint('partner_id', 'area')
    )
    op.create_table('school_admins',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('totp_secret_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('totp_last_step', sa.Integer(), nullable=True),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('disabled_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('school_admins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_school_admins_email'), ['email'], unique=True)
        batch_op.create_index(batch_op.f('ix_school_admins_school_id'), ['school_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('school_admins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_school_admins_school_id'))
        batch_op.drop_index(batch_op.f('ix_school_admins_email'))

    op.drop_table('school_admins')
    op.drop_table('partner_area_requests')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agents_school_id'))

    op.drop_table('agents')
    with op.batch_alter_table('schools', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_schools_dfe_number'))

    op.drop_table('schools')
    with op.batch_alter_table('partners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_partners_client_id'))

    op.drop_table('partners')

