"""Tokens and users get a role; tokens can expire and be revoked; users can be disabled and signed out.

Existing tokens become operators: they were made for services that submit and steer batches, which is what
operator allows. Existing users become admins: before roles every user could do everything, settings included,
so the upgrade takes nothing away from the people running the service and leaves it with an admin who can
hand out narrower roles.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 10:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

ROLE_CHECK = "role IN ('viewer', 'operator', 'admin')"


def upgrade():
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=20), server_default='operator', nullable=False))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_check_constraint('api_token_role_known', ROLE_CHECK)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=20), server_default='admin', nullable=False))
        batch_op.add_column(sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='1', nullable=False))
        batch_op.create_check_constraint('user_role_known', ROLE_CHECK)
    # The defaults above filled the existing rows; new rows get theirs from the application.
    op.alter_column('api_tokens', 'role', server_default=None)
    op.alter_column('users', 'role', server_default=None)
    op.alter_column('users', 'session_version', server_default=None)


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint('user_role_known', type_='check')
        for column in ('session_version', 'disabled_at', 'role'):
            batch_op.drop_column(column)
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint('api_token_role_known', type_='check')
        for column in ('revoked_at', 'expires_at', 'role'):
            batch_op.drop_column(column)
