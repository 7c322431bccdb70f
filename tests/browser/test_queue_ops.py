"""Resume, retry, run again, drain, the failure policy and Stop's confirmation, in Chromium with the real worker."""

from __future__ import annotations

from typing import Any

from flask import Flask
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import LiveServer, signed_in_tab
from tests.browser.test_table import open_table, row
from tests.conftest import ApiClient, wait_for


def _status(api: ApiClient, batch_id: int) -> str:
    return api.batch_of(batch_id)["status"]


def test_stop_asks_first_then_resume_queues_the_batch_again(
    page: Page, app: Flask, api: ApiClient, celery_worker: Any
) -> None:
    profile_ids = api.profiles(1)
    running = api.batch(profile_ids, processor="sleep", name="long", seconds=30)
    wait_for(lambda: api.items_of(running["id"])[0]["status"] == "running")
    open_table(page)
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    row(page, running["id"]).locator('[data-action="stop"]').click()
    wait_for(lambda: questions)
    assert questions[0].startswith(f"Stop batch {running['id']}")
    assert _status(api, running["id"]) == "in_progress"
    page.once("dialog", lambda dialog: dialog.accept())
    row(page, running["id"]).locator('[data-action="stop"]').click()
    expect(row(page, running["id"]).locator("td.batch-status")).to_have_text("stopped", ignore_case=True)
    assert api.post("/queue/start").status_code == 200
    row(page, running["id"]).locator('[data-action="resume"]').click()
    # Nothing runs and the queue is not paused: the resumed batch starts at once, like a new one.
    expect(row(page, running["id"]).locator("td.queue-position")).to_have_text("In Progress")
    assert any(line.startswith("resumed by alice") for line in api.log_of(running["id"]))
    api.post(f"/batches/{running['id']}/stop")


def test_stop_without_javascript_goes_through_a_confirmation_page(
    browser: Browser, live_server: LiveServer, api: ApiClient, user: str, celery_worker: Any
) -> None:
    profile_ids = api.profiles(1)
    running = api.batch(profile_ids, processor="sleep", name="long", seconds=30)
    wait_for(lambda: api.items_of(running["id"])[0]["status"] == "running")
    with signed_in_tab(browser, live_server, java_script_enabled=False) as tab:
        tab.goto("/batches")
        row(tab, running["id"]).locator('[data-action="stop"]').click()
        expect(tab.locator("h1")).to_contain_text(f"Stop batch {running['id']}")
        assert _status(api, running["id"]) == "in_progress"
        tab.locator('[data-action="confirm-stop"]').click()
        expect(tab.locator("h1")).to_have_text("Batches")
        expect(tab.locator("#flashes")).to_contain_text("the queue is paused until Start")
        wait_for(lambda: _status(api, running["id"]) == "stopped")


def test_retry_and_run_again(page: Page, app: Flask, api: ApiClient, celery_worker: Any) -> None:
    profile_ids = api.profiles(3)
    flaky = api.batch(profile_ids, processor="sleep", name="flaky", seconds=0, fail_profiles=["p-1"])
    wait_for(lambda: _status(api, flaky["id"]) == "failed")
    open_table(page)
    row(page, flaky["id"]).locator('[data-action="retry"]').click()
    expect(page.locator("#flashes")).to_contain_text(f"retries the failed items of batch {flaky['id']}")
    retried = flaky["id"] + 1
    expect(row(page, retried)).to_be_visible()
    wait_for(lambda: api.batch_of(retried)["retry_of"] == flaky["id"])
    assert api.batch_of(retried)["profile_ids"] == [profile_ids[1]]

    row(page, flaky["id"]).locator('[data-action="run-again"]').click()
    page.wait_for_url(f"**/batches/new?from={flaky['id']}")
    expect(page.locator("input[name=name]")).to_have_value("flaky")
    expect(page.locator("select[name=processor]")).to_have_value("sleep")
    for profile_id in profile_ids:
        expect(page.locator(f"input[name=profile_ids][value='{profile_id}']")).to_be_checked()


def test_drain_button_pauses_after_the_running_batch_and_cancels(
    page: Page, app: Flask, api: ApiClient, celery_worker: Any, gate: Any
) -> None:
    profile_ids = api.profiles(1)
    running = api.batch(profile_ids, processor="gate", name="held")
    behind = api.batch(profile_ids, processor="noop", name="behind")
    open_table(page)
    expect(page.locator("#start-button")).to_be_disabled()
    page.locator("#drain-button").click()
    expect(page.locator("#drain-banner")).to_contain_text(f"Pausing after batch {running['id']}")
    expect(page.locator("#drain-button")).to_have_text("Cancel drain")
    assert api.get("/queue").get_json()["draining"] is True
    page.locator("#drain-button").click()  # cancel: Start's job, while the start button stays disabled
    expect(page.locator("#drain-button")).to_have_text("Pause after this batch")
    assert api.get("/queue").get_json()["draining"] is False
    page.locator("#drain-button").click()
    expect(page.locator("#drain-button")).to_have_text("Cancel drain")
    gate.open()
    expect(page.locator("#queue-banner")).to_contain_text("drained as asked by alice")
    expect(row(page, behind["id"]).locator("td.queue-position")).to_have_text("#1")
    expect(page.locator("#start-button")).to_be_enabled()
    assert api.get("/queue").get_json()["paused_reason"] == "drained"


def test_policy_form_and_a_policy_pause_in_the_banner(
    page: Page, app: Flask, api: ApiClient, celery_worker: Any
) -> None:
    open_table(page)
    page.select_option("#policy-on-failure", "pause")
    page.locator('[data-action="policy"]').click()
    expect(page.locator("#flashes")).to_contain_text("pause after any failed batch")
    assert api.get("/queue/policy").get_json()["on_failure"] == "pause"
    profile_ids = api.profiles(1)
    failing = api.batch(profile_ids, processor="sleep", name="fails", seconds=0, fail_profiles=["p-0"])
    behind = api.batch(profile_ids, processor="noop", name="behind")
    wait_for(lambda: _status(api, failing["id"]) == "failed")
    expect(page.locator("#queue-banner")).to_contain_text("Paused after 1 failed batch in a row (policy)")
    assert _status(api, behind["id"]) == "queued"
