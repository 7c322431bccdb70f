"""queue_state.version goes (the queue lock is SELECT ... FOR UPDATE; nothing read the counter); an index for estimates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 14:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('queue_state', schema=None) as batch_op:
        batch_op.drop_column('version')
    # Rows written by hand (seeds, benchmarks) get the contract's default item time limit.
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.alter_column('item_timeout', server_default='3600')
    # The estimates read each processor's last finished batches (app/services/waiting.py).
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('batch_recent_finished', ['processor', sa.literal_column('finished_at DESC')], unique=False, postgresql_where=sa.text("status IN ('done', 'failed')"))


def downgrade():
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.alter_column('item_timeout', server_default=None)
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('batch_recent_finished', postgresql_where=sa.text("status IN ('done', 'failed')"))
    with op.batch_alter_table('queue_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.BigInteger(), nullable=False, server_default='0'))
