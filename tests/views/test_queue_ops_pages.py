"""The table's resume, retry, run-again, drain, failure-policy and confirmation controls."""

from __future__ import annotations

from bs4 import BeautifulSoup
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Batch
from tests.views.conftest import Factory

HTMX = {"HX-Request": "true"}


def _page(client: FlaskClient, path: str = "/batches") -> BeautifulSoup:
    response = client.get(path)
    assert response.status_code == 200
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def _status(app: Flask, batch_id: int) -> tuple[str, int | None, int | None]:
    with app.app_context():
        batch = db.session.get(Batch, batch_id)
        assert batch is not None
        result = (batch.status, batch.queue_position, batch.retry_of)
        db.session.remove()
    return result


def _row_actions(page: BeautifulSoup, batch_id: int) -> set[str]:
    row = page.select_one(f'tr[data-batch-id="{batch_id}"]')
    assert row is not None
    return {control["data-action"] for control in row.select("[data-action]")}


def test_resume_and_retry_show_only_where_they_apply(make: Factory, client: FlaskClient) -> None:
    ids = make.profiles(2)
    stopped = make.batch("stopped", profile_ids=ids)
    failed = make.batch("failed", profile_ids=ids, failed_items=1)
    failed_without_failures = make.batch("failed", profile_ids=ids)
    done = make.batch("done", profile_ids=ids)
    page = _page(client)
    assert "resume" in _row_actions(page, stopped) and "retry" not in _row_actions(page, stopped)
    assert "retry" in _row_actions(page, failed) and "resume" not in _row_actions(page, failed)
    assert not {"resume", "retry"} & (_row_actions(page, failed_without_failures) | _row_actions(page, done))
    assert "run-again" in _row_actions(page, done)


def test_resume_from_the_table_queues_the_batch_and_says_so(app: Flask, make: Factory, client: FlaskClient) -> None:
    make.pause()
    ids = make.profiles(1)
    stopped = make.batch("stopped", profile_ids=ids)
    response = client.post(f"/batches/{stopped}/resume", data={"next": "/batches"}, follow_redirects=True)
    assert "queued again at #1" in response.get_data(as_text=True)
    assert _status(app, stopped)[:2] == ("queued", 1)


def test_retry_from_the_table_makes_the_linked_batch(app: Flask, make: Factory, client: FlaskClient) -> None:
    make.pause()
    ids = make.profiles(2)
    failed = make.batch("failed", profile_ids=ids, failed_items=1)
    with app.app_context():
        db.session.execute(db.text("UPDATE batch_items SET status = 'failed' WHERE position = 1"))
        db.session.commit()
        db.session.remove()
    response = client.post(f"/batches/{failed}/retry", data={"next": "/batches"}, follow_redirects=True)
    assert f"retries the failed items of batch {failed}" in response.get_data(as_text=True)
    assert _status(app, failed + 1) == ("queued", 1, failed)


def test_a_refused_resume_is_a_flash_error_and_changes_nothing(app: Flask, make: Factory, client: FlaskClient) -> None:
    done = make.batch("done")
    response = client.post(f"/batches/{done}/resume", follow_redirects=True)
    assert "only a stopped batch can be resumed" in response.get_data(as_text=True)
    assert _status(app, done)[0] == "done"


def test_run_again_prefills_the_form_and_an_unknown_batch_gives_the_blank_form(
    make: Factory, client: FlaskClient
) -> None:
    ids = make.profiles(3)
    source = make.batch("done", profile_ids=ids[:2], name="nightly", processor="sleep", item_timeout=90.0)
    with client.application.app_context():
        db.session.execute(
            db.text("""UPDATE batches SET parameters = '{"seconds": 2.5, "fail_profiles": ["p-1"]}' WHERE id = :id"""),
            {"id": source},
        )
        db.session.commit()
        db.session.remove()
    page = _page(client, f"/batches/new?from={source}")
    assert page.select_one("input[name=name]")["value"] == "nightly"
    assert page.select_one("select[name=processor] option[selected]")["value"] == "sleep"
    checked = {int(box["value"]) for box in page.select("input[name=profile_ids][checked]")}
    assert checked == set(ids[:2])
    assert page.select_one("input[name=item_timeout]")["value"] == "90"
    assert page.select_one("[name=param-sleep-seconds]")["value"] == "2.5"
    assert "p-1" in page.select_one("[name=param-sleep-fail_profiles]").get_text()
    blank = _page(client, "/batches/new?from=999")
    assert blank.select_one("input[name=name]").get("value", "") == ""
    assert "There is no batch 999 to run again" in blank.get_text()


def test_stop_and_remove_without_javascript_lead_to_a_confirmation_page(
    app: Flask, make: Factory, client: FlaskClient
) -> None:
    running = make.batch("in_progress", 0)
    queued = make.batch("queued", 1)
    page = _page(client)
    stop_form = page.select_one(f'tr[data-batch-id="{running}"] [data-action=stop]').find_parent("form")
    assert stop_form["method"] == "get" and stop_form["hx-confirm"].startswith(f"Stop batch {running}")
    confirm = _page(client, f"/batches/{running}/stop?next=/batches")
    form = confirm.select_one("#confirm-form")
    assert form["method"] == "post" and form.select_one("input[name=csrf_token]") is not None
    assert _status(app, running)[0] == "in_progress"  # asking changed nothing
    remove = _page(client, f"/batches/{queued}/cancel")
    assert remove.select_one("[data-action=confirm-cancel]") is not None
    client.post(f"/batches/{running}/stop", data={"next": "/batches"})
    assert _status(app, running)[0] in ("stopping", "stopped")


def test_drain_button_pauses_after_the_running_batch_and_turns_into_cancel(
    app: Flask, make: Factory, client: FlaskClient
) -> None:
    running = make.batch("in_progress", 0)
    make.batch("queued", 1)
    page = _page(client)
    assert page.select_one("#drain-button").get_text(strip=True) == "Pause after this batch"
    response = client.post("/queue/drain", data={"next": "/batches"}, headers=HTMX)
    region = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert region.select_one("#drain-button").get_text(strip=True) == "Cancel drain"
    assert f"Pausing after batch {running}" in region.select_one("#drain-banner").get_text()
    assert region.select_one("#start-button").has_attr("disabled")
    client.post("/queue/start", data={"next": "/batches"})
    page = _page(client)
    assert page.select_one("#drain-banner") is None
    assert page.select_one("#drain-button").get_text(strip=True) == "Pause after this batch"


def test_policy_form_changes_the_policy_and_a_bad_value_changes_nothing(
    app: Flask, make: Factory, client: FlaskClient
) -> None:
    response = client.post(
        "/queue/policy", data={"on_failure": "continue", "pause_after_failures": "3"}, follow_redirects=True
    )
    assert "pause after 3 failed batches in a row" in response.get_data(as_text=True)
    page = _page(client)
    assert page.select_one("#policy-pause-after")["value"] == "3"
    response = client.post(
        "/queue/policy", data={"on_failure": "sometimes", "pause_after_failures": "x"}, follow_redirects=True
    )
    text = response.get_data(as_text=True)
    assert "Failure policy: " in text and "on failure" in text
    assert _page(client).select_one("#policy-pause-after")["value"] == "3"


def test_a_policy_pause_says_so_on_the_table(app: Flask, make: Factory, client: FlaskClient) -> None:
    with app.app_context():
        db.session.execute(
            db.text(
                "UPDATE queue_state SET paused = true, paused_by = 'failure policy', paused_at = now(),"
                " paused_reason = '3 failed batches in a row (failure policy)'"
            )
        )
        db.session.commit()
        db.session.remove()
    banner = _page(client).select_one("#queue-banner").get_text(" ", strip=True)
    assert "Paused after 3 failed batches in a row (policy)" in banner
