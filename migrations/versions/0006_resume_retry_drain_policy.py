"""Batches get retry_of; the queue state gets its pause reason, the drain and the failure policy.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 10:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retry_of', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('batches_retry_of_fkey', 'batches', ['retry_of'], ['id'], ondelete='SET NULL')
        batch_op.create_index('batch_finished_at', ['finished_at'], unique=False,
                              postgresql_where=sa.text("status IN ('done', 'failed')"))
    with op.batch_alter_table('queue_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('paused_reason', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('draining', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('drain_by', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('drain_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('on_failure', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('pause_after_failures', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('streak_from', sa.DateTime(timezone=True), nullable=True))
    # Pauses made before this revision were all made by a stop.
    op.execute("UPDATE queue_state SET paused_reason = 'stopped' WHERE paused")


def downgrade():
    with op.batch_alter_table('queue_state', schema=None) as batch_op:
        for column in ('streak_from', 'pause_after_failures', 'on_failure', 'drain_at', 'drain_by', 'draining',
                       'paused_reason'):
            batch_op.drop_column(column)
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('batch_finished_at', postgresql_where=sa.text("status IN ('done', 'failed')"))
        batch_op.drop_constraint('batches_retry_of_fkey', type_='foreignkey')
        batch_op.drop_column('retry_of')
