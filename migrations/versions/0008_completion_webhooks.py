"""Completion webhooks: a batch's callback_url and submitting token, each token's webhook secret, the
deliveries (an outbox written by a trigger when a batch becomes terminal) and their attempts.

Tokens made before webhooks get no secret here: nobody would have seen one generated now. A batch asking for a
callback with such a token is refused, naming `flask token rotate-secret`, which gives it one and prints it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12 10:00:00

"""
from alembic import op
import sqlalchemy as sa

from app.models.callbacks import trigger_sql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('api_tokens', sa.Column('webhook_secret', sa.String(length=100), nullable=True))
    op.add_column('batches', sa.Column('callback_url', sa.String(length=2000), nullable=True))
    op.add_column('batches', sa.Column('callback_token_id', sa.Integer(), nullable=True))
    op.create_foreign_key(
        'batches_callback_token_id_fkey', 'batches', 'api_tokens', ['callback_token_id'], ['id'], ondelete='SET NULL'
    )
    op.create_table(
        'callback_deliveries',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('batch_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('payload', sa.Text(), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('gave_up_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('batch_id', 'status', name='callback_delivery_once'),
    )
    op.create_index(
        'callback_delivery_due',
        'callback_deliveries',
        ['next_attempt_at'],
        postgresql_where=sa.text('delivered_at IS NULL AND gave_up_at IS NULL'),
    )
    op.create_table(
        'callback_attempts',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('delivery_id', sa.BigInteger(), nullable=False),
        sa.Column('batch_id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['delivery_id'], ['callback_deliveries.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('callback_attempt_by_batch', 'callback_attempts', ['batch_id', 'id'])
    op.execute(trigger_sql())


def downgrade():
    op.execute("DROP TRIGGER batches_record_callback ON batches")
    op.execute("DROP FUNCTION batches_record_callback()")
    op.drop_index('callback_attempt_by_batch', table_name='callback_attempts')
    op.drop_table('callback_attempts')
    op.drop_index('callback_delivery_due', table_name='callback_deliveries')
    op.drop_table('callback_deliveries')
    op.drop_constraint('batches_callback_token_id_fkey', 'batches', type_='foreignkey')
    op.drop_column('batches', 'callback_token_id')
    op.drop_column('batches', 'callback_url')
    op.drop_column('api_tokens', 'webhook_secret')
