"""Batches counted by status as they change, for /metrics at any size.

The gauges counted every batch by status at each scrape: an index-only scan of `batch_status`,
one entry per batch, 56 ms at a million (bench.size; issue 15 asks for 50). Now the database keeps
the counts itself: every change of a batch's status adds signed rows to `batch_status_changes`, and
a count is the sum of its status's rows. The rows are added by triggers, so every path that changes a
status (the queue manager, repairs, retention, a hand-written UPDATE) is counted, and nothing in
Python can forget to. A row per change rather than a counter per status: a counter row would be
locked by every transaction that changes a status until it commits, a queue of its own on the
handoff's path, and two transactions taking two counters in opposite orders would deadlock. The
repair timers fold the rows into one per status every round (app/services/status_counts.py).

Bulk inserts and deletes (the retention purge, a fill) add one row per status per statement, from
the statement's transition table; a status change is one batch at a time, counted per row, and only
when the status itself changed. A TRUNCATE of batches empties the counts.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 18:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'batch_status_changes',
        sa.Column('id', sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('delta', sa.BigInteger(), nullable=False),
    )
    op.execute(
        """
        CREATE FUNCTION batch_status_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO batch_status_changes (status, delta)
            SELECT status, count(*) FROM inserted GROUP BY status;
            RETURN NULL;
        END $$;

        CREATE FUNCTION batch_status_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO batch_status_changes (status, delta)
            SELECT status, -count(*) FROM deleted GROUP BY status;
            RETURN NULL;
        END $$;

        CREATE FUNCTION batch_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO batch_status_changes (status, delta) VALUES (OLD.status, -1), (NEW.status, 1);
            RETURN NULL;
        END $$;

        CREATE FUNCTION batch_status_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM batch_status_changes;
            RETURN NULL;
        END $$;

        CREATE TRIGGER batch_status_inserted AFTER INSERT ON batches
            REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION batch_status_inserted();
        CREATE TRIGGER batch_status_deleted AFTER DELETE ON batches
            REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION batch_status_deleted();
        CREATE TRIGGER batch_status_changed AFTER UPDATE OF status ON batches
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION batch_status_changed();
        CREATE TRIGGER batch_status_truncated AFTER TRUNCATE ON batches
            FOR EACH STATEMENT EXECUTE FUNCTION batch_status_truncated();
        """
    )
    # Counted once here, after the triggers: creating them locked batches against writes until this
    # migration commits, so no change falls between this count and the first one counted by them.
    op.execute("INSERT INTO batch_status_changes (status, delta) SELECT status, count(*) FROM batches GROUP BY status")


def downgrade():
    op.execute(
        """
        DROP TRIGGER batch_status_truncated ON batches;
        DROP TRIGGER batch_status_changed ON batches;
        DROP TRIGGER batch_status_deleted ON batches;
        DROP TRIGGER batch_status_inserted ON batches;
        DROP FUNCTION batch_status_truncated();
        DROP FUNCTION batch_status_changed();
        DROP FUNCTION batch_status_deleted();
        DROP FUNCTION batch_status_inserted();
        """
    )
    op.drop_table('batch_status_changes')
