"""The handoff's statements keep their index plans when PostgreSQL prepares them.

psycopg prepares a statement once a connection has run it five times, and PostgreSQL may then
switch to a generic plan that ignores the parameters' values. A status bound as a parameter can't
prove a partial index's predicate in such a plan: the check that no batch runs then reads every
batch instead of one index entry (bench.size: 161 ms per promotion at a million batches, against
0.3 ms). Each statement is prepared here and planned generically, as a long-lived worker runs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import ClauseElement, Connection, select, text
from sqlalchemy.dialects import postgresql

from app.extensions import db
from app.metrics import gauges
from app.models import Batch
from app.models.batches import RUNNING_SLOT
from app.services import batches, queue_create, queue_statements

# Each statement with the partial indexes its generic plan must use; "a|b": either will do (two partial
# indexes with the same predicate: on the test's small tables the planner's pick between them turns on
# what the tables hold at the moment, and either proves the statuses without a scan).
FINISHED_IN_ORDER = "batch_finished_at|batch_recent_finished"
PLANS: dict[str, tuple[ClauseElement, set[str]]] = {
    "PROMOTE_HEAD": (queue_statements.PROMOTE_HEAD, {"batch_one_running", FINISHED_IN_ORDER}),
    "PROMOTE_HEAD_UNLESS_FAILING": (queue_statements.PROMOTE_HEAD_UNLESS_FAILING, {"batch_one_running"}),
    "PAUSE_DRAINED": (queue_statements.PAUSE_DRAINED, {"batch_one_running"}),
    "CREATE_BATCH": (queue_create.CREATE_BATCH, {"batch_one_running"}),
    "the gauges": (gauges._SNAPSHOT, {"batch_one_running"}),
    # queue_manager.get_running_batch and the repair round's lock of the running batch.
    "the running batch": (select(Batch).where(text(RUNNING_SLOT)), {"batch_one_running"}),
    "the creators": (batches._CREATORS, {"batch_created_by"}),
}


@pytest.fixture
def connection(app: Flask) -> Iterator[Connection]:
    with app.app_context(), db.engine.connect() as connection:
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        # The test's tables are small, where a scan is as cheap as an index: only a partial index
        # the plan can prove usable lets the planner avoid the scan it is told to avoid.
        connection.exec_driver_sql("SET enable_seqscan = off")
        yield connection
        connection.rollback()


def generic_plan(connection: Connection, statement: ClauseElement) -> str:
    """The statement's plan as PREPARE makes it, with its bound status names as parameters too."""
    compiled = statement.compile(dialect=postgresql.dialect(), compile_kwargs={"render_postcompile": True})
    names: list[str] = []

    def positional(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return f"${len(names)}"

    sql = re.sub(r"%\((\w+)\)s", positional, str(compiled))
    connection.exec_driver_sql(f"PREPARE planned AS {sql}")
    try:
        values = ", ".join("NULL" for _ in names)
        rows = connection.exec_driver_sql(f"EXPLAIN EXECUTE planned({values})" if names else "EXPLAIN EXECUTE planned")
        return "\n".join(row[0] for row in rows)
    finally:
        connection.exec_driver_sql("DEALLOCATE planned")


@pytest.mark.parametrize("name", PLANS)
def test_a_prepared_statement_still_reads_its_partial_indexes(connection: Connection, name: str) -> None:
    statement, indexes = PLANS[name]
    plan = generic_plan(connection, statement)
    used = set(re.findall(r"(?:\busing|Bitmap Index Scan on) (\w+)", plan))
    missing = [index for index in indexes if not used & set(index.split("|"))]
    assert not missing, f"{name}'s generic plan uses {sorted(used)}, not {missing}:\n{plan}"
