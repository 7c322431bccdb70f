"""`flask profiles import FILE` as a subprocess: POST /profiles/import's service and checks, with progress."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from flask import Flask

from tests.cli.conftest import FLASK, ROOT, Cli, Stack, query


def names(app: Flask) -> dict[str, tuple[list[str], dict[str, str]]]:
    rows = query(app, "SELECT name, tags, attributes FROM profiles WHERE deleted_at IS NULL")
    return {row.name: (list(row.tags), row.attributes) for row in rows}


def test_profiles_import_creates_then_updates_by_name_with_progress_lines(app: Flask, cli: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("name,tags,city\nalice,night eu,Paris\nbob,night,\n")
    first = cli("profiles", "import", str(csv), "--json")
    assert first.json() == {"created": 2, "updated": 0}
    assert names(app) == {"alice": (["eu", "night"], {"city": "Paris"}), "bob": (["night"], {})}
    # Not a terminal: plain progress lines on stderr, stdout keeps the answer.
    assert first.err.splitlines() == ["2 profiles valid; writing", "written 2/2"]

    lines = tmp_path / "more.txt"
    lines.write_text('{"name": "alice", "attributes": {"city": "Lyon"}}\n{"name": "carol", "tags": ["x"]}\n')
    second = cli("profiles", "import", str(lines), "--format", "jsonl")
    assert second.code == 0 and second.out == "Imported more.txt: 1 created, 1 updated.\n"
    assert names(app)["alice"] == ([], {"city": "Lyon"})


def test_profiles_import_refuses_a_bad_line_naming_it_and_imports_nothing(app: Flask, cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "dave"}\n\n{"name": "", "tags": ["ok"]}\n{"name": "erin"}\n')
    refused = cli("profiles", "import", str(bad))
    assert refused.code == 1 and refused.out == ""
    assert "Error: line 3: name: Length must be between 1 and 200.; nothing was imported" in refused.err
    assert "lines.3.name: Length must be between 1 and 200." in refused.err
    as_json = cli("profiles", "import", str(bad), "--json")
    assert as_json.code == 1 and '"fields": {"lines": {"3": {"name": ' in as_json.err
    assert names(app) == {}

    unknown = tmp_path / "people.txt"
    unknown.write_text("name\nfrank\n")
    usage = cli("profiles", "import", str(unknown))
    assert usage.code == 2 and "--format csv|jsonl" in usage.err
    assert cli("profiles", "import", str(tmp_path / "missing.csv")).code == 2
    assert names(app) == {}


def test_profiles_import_shows_a_progress_bar_on_a_terminal(app: Flask, stack: Stack, cli: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "many.csv"
    csv.write_text("name\n" + "".join(f"n{i}\n" for i in range(5000)))
    leader, follower = os.openpty()
    try:
        done = subprocess.run(
            [str(FLASK), "--app", "wsgi", "profiles", "import", str(csv)],
            cwd=ROOT,
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0, shown
    assert done.stdout == b"Imported many.csv: 5000 created, 0 updated.\n"
    text = shown.decode()
    assert "importing" in text and "100%" in text and "written" not in text
    assert len(names(app)) == 5000
