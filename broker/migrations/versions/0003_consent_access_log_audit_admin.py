"""consents, consent events, access log, audit events and keys, admin sessions

Revision ID: 0003_consent
Revises: 0002_events
Create Date: 2026-11-23 16:50:19.112170
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.sqltypes

revision: str = '0003_consent'
down_revision: str | None = '0002_events'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('admin_login_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('admin_login_failures', schema=None) as batch_op:
        batch_op.create_index('ix_admin_login_failures_email_at', ['email', 'at'], unique=False)

    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)

    op.create_table('audit_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('access_log',
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('partner_id', sa.String(length=40), nullable=False),
    sa.Column('consent_id', sa.String(length=40), nullable=True),
    sa.Column('areas', sa.JSON(), nullable=False),
    sa.Column('record_count', sa.Integer(), nullable=False),
    sa.Column('decision', sa.Enum('allowed', 'denied', name='logdecision', native_enum=False, length=32), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('school_id', 'seq')
    )
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.create_index('ix_access_log_school_at', ['school_id', 'at'], unique=False)
        batch_op.create_index('ix_access_log_school_partner_at', ['school_id', 'partner_id', 'at'], unique=False)

    op.create_table('access_log_heads',
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_hash', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('school_id')
    )
    op.create_table('consents',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('partner_id', sa.String(length=40), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('granted_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('granted_by', sa.String(length=80), nullable=False),
    sa.Column('status', sa.Enum('active', 'ending', 'suspended', 'revoked', name='consentstatus', native_enum=False, length=32), nullable=False),
    sa.Column('areas', sa.JSON(), nullable=False),
    sa.Column('ends_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.Column('updated_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('live_key', sa.String(length=82), nullable=True),
    sa.Column('finalized_at', consent.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['partner_id'], ['partners.id'], ),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('live_key', name='uq_consents_live_key')
    )
    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_consents_partner_id'), ['partner_id'], unique=False)
        batch_op.create_index('ix_consents_school_partner', ['school_id', 'partner_id'], unique=False)

    op.create_table('admin_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('admin_id', sa.String(length=40), nullable=False),
    sa.Column('school_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['admin_id'], ['school_admins.id'], ),
    sa.ForeignKeyConstraint(['school_id'], ['schools.id'], ),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('admin_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_admin_sessions_admin_id'), ['admin_id'], unique=False)

    op.create_table('consent_events',
    sa.Column('consent_id', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('at', consent.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('actor', sa.String(length=80), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['consent_id'], ['consents.id'], ),
    sa.PrimaryKeyConstraint('consent_id', 'seq')
    )


def downgrade() -> None:
    op.drop_table('consent_events')
    with op.batch_alter_table('admin_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_admin_sessions_admin_id'))

    op.drop_table('admin_sessions')
    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.drop_index('ix_consents_school_partner')
        batch_op.drop_index(batch_op.f('ix_consents_partner_id'))

    op.drop_table('consents')
    op.drop_table('access_log_heads')
    with op.batch_alter_table('access_log', schema=None) as batch_op:
        batch_op.drop_index('ix_access_log_school_partner_at')
        batch_op.drop_index('ix_access_log_school_at')

    op.drop_table('access_log')
    op.drop_table('audit_keys')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))

    op.drop_table('audit_events')
    with op.batch_alter_table('admin_login_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_admin_login_failures_email_at')

    op.drop_table('admin_login_failures')
