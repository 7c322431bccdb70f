"""Indexes for the retention purge: old finished batches in order, and the two foreign keys a delete follows.

The purge (app/services/retention.py) takes the oldest finished batches first, in chunks: `batch_purged_order`
finds them in every terminal status (`batch_finished_at` covers only done and failed). Deleting a batch makes
PostgreSQL look up the batches that name it in `retry_of` (ON DELETE SET NULL), and deleting a webhook delivery
the attempts that name it (ON DELETE CASCADE): without `batch_retry_of` and `callback_attempt_by_delivery` each
of those lookups reads the whole table, once per deleted row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-14 10:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('batch_purged_order', ['finished_at'], unique=False,
                              postgresql_where=sa.text("status IN ('done', 'failed', 'stopped', 'cancelled')"))
        batch_op.create_index('batch_retry_of', ['retry_of'], unique=False,
                              postgresql_where=sa.text('retry_of IS NOT NULL'))
    op.create_index('callback_attempt_by_delivery', 'callback_attempts', ['delivery_id'])


def downgrade():
    op.drop_index('callback_attempt_by_delivery', table_name='callback_attempts')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('batch_retry_of', postgresql_where=sa.text('retry_of IS NOT NULL'))
        batch_op.drop_index('batch_purged_order',
                            postgresql_where=sa.text("status IN ('done', 'failed', 'stopped', 'cancelled')"))
