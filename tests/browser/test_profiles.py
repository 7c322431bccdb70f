"""The profiles page and choosing by tag, in Chromium: edit, delete (and its refusal), import, a batch by tag."""

from __future__ import annotations

from flask import Flask
from playwright.sync_api import Page, expect

from app.extensions import db
from app.models import Batch
from tests.views.conftest import Factory


def test_edit_a_profile(page: Page, app: Flask) -> None:
    profile_id = Factory(app).profiles(1)[0]
    page.goto("/profiles")
    page.locator(f'tr[data-profile-id="{profile_id}"] [data-action=edit]').click()
    page.fill("#name", "berlin")
    page.fill("#attributes", '{"region": "eu"}')
    page.fill("#tags", "eu-west gpu")
    page.click("button:has-text('Save')")
    page.wait_for_url("**/profiles")
    expect(page.locator("#flashes")).to_contain_text("Profile “berlin” saved.")
    row = page.locator(f'tr[data-profile-id="{profile_id}"]')
    expect(row.locator("a.tag")).to_have_text(["eu-west", "gpu"])
    expect(row).to_contain_text('"region": "eu"')


def test_delete_is_refused_with_the_reason_while_a_queued_batch_uses_the_profile(page: Page, app: Flask) -> None:
    make = Factory(app)
    used, unused = make.profiles(2)
    batch_id = make.batch("queued", position=1, profile_ids=[used])
    page.goto("/profiles")
    page.locator(f'tr[data-profile-id="{used}"] [data-action=delete]').click()
    page.click("[data-action=confirm-delete]")
    expect(page.locator("#delete-error")).to_contain_text(f"used by queued or running batch {batch_id}")
    page.goto("/profiles")
    expect(page.locator(f'tr[data-profile-id="{used}"]')).to_have_count(1)

    page.locator(f'tr[data-profile-id="{unused}"] [data-action=delete]').click()
    page.click("[data-action=confirm-delete]")
    page.wait_for_url("**/profiles")
    expect(page.locator("#flashes")).to_contain_text("Profile “p-1” deleted.")
    expect(page.locator(f'tr[data-profile-id="{unused}"]')).to_have_count(0)


def test_import_upload_names_the_bad_line_then_imports_the_fixed_file(page: Page, app: Flask) -> None:
    Factory(app).profiles(0)
    page.goto("/profiles")
    bad = b"name,tags,region\nberlin,eu-west,eu\n,eu-west,eu\n"
    page.set_input_files("#import-file", files=[{"name": "people.csv", "mimeType": "text/csv", "buffer": bad}])
    page.click("#import-form button[type=submit]")
    expect(page.locator("#import-errors")).to_contain_text("Line 3: name:")
    expect(page.locator("#profile-table tr[data-profile-id]")).to_have_count(0)

    good = b"name,tags,region\nberlin,eu-west,eu\nparis,eu-west,fr\n"
    page.set_input_files("#import-file", files=[{"name": "people.csv", "mimeType": "text/csv", "buffer": good}])
    page.click("#import-form button[type=submit]")
    expect(page.locator("#flashes")).to_contain_text("Imported people.csv: 2 created, 0 updated.")
    page.select_option("#tag-filter", "eu-west")
    page.click("form[role=search] button[type=submit]")
    expect(page.locator("#profile-table tr[data-profile-id]")).to_have_count(2)


def test_choose_profiles_by_tag_on_the_creation_form(page: Page, app: Flask) -> None:
    make = Factory(app)
    ids = make.profiles(5)
    make.tag(ids[:3], "eu-west")
    make.tag(ids[3:4], "us-east")
    make.pause()  # the new batch waits in the queue; no worker is needed
    page.goto("/batches/new")
    tag_box = page.locator("#profile-tags label", has_text="eu-west")
    expect(tag_box).to_contain_text("(3)")
    page.fill("#name", "by tag")
    tag_box.locator("input").check()
    page.locator("#profile-list label", has_text="p-4").locator("input").check()
    page.click("button:has-text('Create batch')")
    page.wait_for_url("**/batches")
    expect(page.locator("#flashes")).to_contain_text("“by tag” queued at #1.")
    with app.app_context():
        assert db.session.query(Batch).filter_by(name="by tag").one().profile_ids == [ids[4], *ids[:3]]
        db.session.remove()
