"""Liveness and bounded stalls: process heartbeats, item time limits, repair and loss times.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 13:00:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('service_processes',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('pool', sa.String(length=50), nullable=True),
    sa.Column('concurrency', sa.Integer(), nullable=True),
    sa.Column('queues', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('worker', 'beat')", name='service_process_kind_known'),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        # Existing batches get the contract's default limit.
        batch_op.add_column(sa.Column('item_timeout', sa.Float(), nullable=False, server_default='3600'))
        batch_op.add_column(sa.Column('worker_name', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('lost_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.alter_column('item_timeout', server_default=None)
    with op.batch_alter_table('queue_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('repaired_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('queue_state', schema=None) as batch_op:
        batch_op.drop_column('repaired_at')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('lost_at')
        batch_op.drop_column('worker_name')
        batch_op.drop_column('item_timeout')
    op.drop_table('service_processes')
