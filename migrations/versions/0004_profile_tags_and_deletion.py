"""Profiles get tags (text[] with a GIN index) and deleted_at; names are unique among live profiles.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:00:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tags', postgresql.ARRAY(sa.String(length=64)), server_default=sa.text("'{}'"), nullable=False))
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint('profiles_name_key', type_='unique')
        batch_op.create_index('profile_name_live', ['name'], unique=True, postgresql_where=sa.text('deleted_at IS NULL'))
        batch_op.create_index('profile_tags', ['tags'], unique=False, postgresql_using='gin')


def downgrade():
    # Deleted profiles would break the plain unique constraint; only live names come back unique.
    op.execute("UPDATE profiles SET name = left(name, 180) || ' (deleted ' || id || ')' WHERE deleted_at IS NOT NULL")
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.drop_index('profile_tags', postgresql_using='gin')
        batch_op.drop_index('profile_name_live', postgresql_where=sa.text('deleted_at IS NULL'))
        batch_op.create_unique_constraint('profiles_name_key', ['name'])
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('tags')
