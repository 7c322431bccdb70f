"""The hand-written statements against the types that feed them and the rules they carry out."""

from __future__ import annotations

from dataclasses import fields

from sqlalchemy import TextClause

from app.models import RUNNING_STATUSES, Batch, BatchStatus
from app.models.batches import sql_list
from app.services import queue_statements
from app.services.queue_manager import RULES, Action
from app.services.queue_statements import ItemWrite


def _free(statement: TextClause) -> set[str]:
    """The parameters a caller must pass: those not bound to a status name."""
    return {name for name, value in statement.compile().params.items() if value is None}


def _bound_statuses(statement: TextClause) -> set[str]:
    return {value for value in statement.compile().params.values() if value is not None}


def _checks_the_running_slot(statement: TextClause) -> bool:
    """Whether the statement asks if a batch runs as the partial index batch_one_running's predicate."""
    return f"status IN ({sql_list(RUNNING_STATUSES)})" in statement.text


ITEM_FIELDS = {field.name for field in fields(ItemWrite)}


def test_the_running_slot_is_checked_as_its_partial_index_says() -> None:
    """The statements write the running statuses into their text: the same list as the index's predicate."""
    (index,) = [index for index in Batch.__table__.indexes if index.name == "batch_one_running"]
    assert str(index.dialect_options["postgresql"]["where"]) == f"status IN ({sql_list(RUNNING_STATUSES)})"


def test_a_group_of_items_is_written_from_its_rows_and_lines_for_the_run_owning_the_batch() -> None:
    assert _free(queue_statements.FINISH_ITEMS) == {"items", "lines", "batch_id", "token"}


def test_the_end_of_a_run_takes_an_item_write_beside_its_own_parameters() -> None:
    own = {"id", "token", "error", "now", "lease_class", "release_lease"}
    assert _free(queue_statements.END_RUN) == ITEM_FIELDS | own
    assert set(queue_statements.end_run_parameters(1, None)) == ITEM_FIELDS | own


def test_the_end_of_a_run_leads_from_the_running_statuses_to_its_rules_targets_only() -> None:
    rule = RULES[Action.END_RUN]
    batch_statuses = _bound_statuses(queue_statements.END_RUN) & set(BatchStatus)
    assert batch_statuses == set(rule.sources) | set(rule.targets)
    assert set(rule.sources) == set(RUNNING_STATUSES)


def test_a_promotion_starts_a_batch_as_its_rule_says() -> None:
    (target,) = RULES[Action.PROMOTE].targets
    assert _bound_statuses(queue_statements.PROMOTE_HEAD) == {target}
    assert _checks_the_running_slot(queue_statements.PROMOTE_HEAD)


def test_a_statement_binds_only_the_status_names_it_mentions() -> None:
    assert _free(queue_statements.PROMOTE_HEAD) == {"now", "token"}


def test_the_policy_promotion_starts_a_batch_as_its_rule_says_and_counts_only_ended_batches() -> None:
    (target,) = RULES[Action.PROMOTE].targets
    ended = {BatchStatus.DONE, BatchStatus.FAILED}
    assert _bound_statuses(queue_statements.PROMOTE_HEAD_UNLESS_FAILING) == {target, *ended}
    assert _checks_the_running_slot(queue_statements.PROMOTE_HEAD_UNLESS_FAILING)
    assert ended <= set(RULES[Action.END_RUN].targets)
    assert _free(queue_statements.PROMOTE_HEAD_UNLESS_FAILING) == {
        "now",
        "token",
        "queue_id",
        "pause_after",
        "streak_from",
    }


def test_a_drain_pauses_only_while_no_batch_holds_the_running_slot() -> None:
    assert _bound_statuses(queue_statements.PAUSE_DRAINED) == set()
    assert _checks_the_running_slot(queue_statements.PAUSE_DRAINED)
    assert _free(queue_statements.PAUSE_DRAINED) == {"now", "queue_id"}
