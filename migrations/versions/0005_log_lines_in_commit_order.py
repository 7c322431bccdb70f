"""A batch's log lines take their ids in commit order (a trigger); an index for the level filter.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 16:00:00

"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# The advisory lock space of log ordering: first key 0x626c ("bl"), second the
# batch id. It must differ from the run leases' (app/services/leases.py, 0x6271).
# Why a lock, and why no deadlock: docs/architecture.md#log-lines-in-commit-order.
ORDER_LINES = """
CREATE FUNCTION batch_logs_in_commit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Held to the end of the transaction: a batch's next line gets its id only
    -- once this transaction's lines are committed (or rolled back), so readers
    -- paging with ?after= never see a higher id before a lower one. The column
    -- default already took a number before this trigger ran, so the id is taken
    -- again, under the lock.
    PERFORM pg_advisory_xact_lock(25196, NEW.batch_id);
    NEW.id := nextval('batch_logs_id_seq');
    RETURN NEW;
END
$$;
CREATE TRIGGER batch_logs_in_commit_order BEFORE INSERT ON batch_logs
    FOR EACH ROW EXECUTE FUNCTION batch_logs_in_commit_order();
"""


def upgrade():
    op.execute(ORDER_LINES)
    # ?level= reads each level's newest lines by id (app/services/logs.py).
    op.create_index('batch_log_by_level', 'batch_logs', ['batch_id', 'level', 'id'])


def downgrade():
    op.drop_index('batch_log_by_level', table_name='batch_logs')
    op.execute("DROP TRIGGER batch_logs_in_commit_order ON batch_logs")
    op.execute("DROP FUNCTION batch_logs_in_commit_order()")
