"""`make bench`'s one table: figures recorded by each benchmark, printed beside baselines and targets, saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import memory, report
from bench.results import RESULTS_ENV, Figure, read, record


def test_a_benchmark_records_only_when_the_run_keeps_a_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    record("handoff", "p50", 5.0, "ms")  # run by hand: nothing is written anywhere
    results = tmp_path / "run.jsonl"
    monkeypatch.setenv(RESULTS_ENV, str(results))
    record("handoff", "p50", 5.0, "ms", baseline=2.0, baseline_measure="bare", target="within 3x", met=True)
    record("viewers", "kept", 180, "viewers", better="higher", target="200", met=False)
    figures = read(results)
    assert [(f.bench, f.value, f.ratio, f.met) for f in figures] == [
        ("handoff", 5.0, 2.5, True),
        ("viewers", 180, None, False),
    ]


def test_the_table_shows_each_figure_beside_its_baseline_ratio_and_target() -> None:
    text = report.table(
        [
            Figure(
                "handoff", "p50", 6.0, "ms", baseline=2.0, baseline_measure="bare chain", target="within 3x", met=True
            ),
            Figure("memory", "peak RSS, web process", 180.4, "MB", target="< 150 MB", met=False),
        ]
    )
    lines = text.splitlines()
    assert lines[2] == "| handoff | p50 | 6 ms | 2 ms (bare chain) | 3.00x | within 3x | yes |"
    assert lines[3] == "| memory | peak RSS, web process | 180 MB |  |  | < 150 MB | **no** |"


def test_a_saved_run_is_json_with_its_machine_and_replaces_the_docs_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{report.START}\nold table\n{report.END}\n\n## Handoff\n")
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(report, "DOCS", docs)
    figures = [Figure("metrics", "GET /metrics, p50", 12.5, "ms", target="< 50 ms", met=True)]
    info = {"cores": 2, "cpu": "test CPU", "memory_gib": 24.0, "python": "3.11", "commit": "abc1234"}
    saved = report.save(figures, info)
    document = json.loads(saved.read_text())
    assert document["machine"]["cores"] == 2 and document["figures"][0]["value"] == 12.5
    assert (tmp_path / "results" / "latest.json").read_text() == saved.read_text()
    text = docs.read_text()
    assert "old table" not in text and "| metrics | GET /metrics, p50 | 12.5 ms |" in text
    assert "2 cores (test CPU)" in text and text.endswith("## Handoff\n")


@pytest.mark.parametrize(
    ("command", "role"),
    [
        (".venv/bin/python .venv/bin/gunicorn -c gunicorn.conf.py wsgi:app", "web process"),
        (".venv/bin/python .venv/bin/gunicorn -c gunicorn.conf.py bench.unshared_wsgi:app", None),
        ("python -m celery -A workers.celery_app worker --loglevel=INFO -Q batches,control", "worker"),
        ("python -m celery -A bench.bare_celery worker --include=bench.baseline", None),
        ("python -m celery -A workers.celery_app worker --include=bench.baseline", "worker"),
        ("python -m celery -A workers.celery_app beat --loglevel=WARNING", "beat"),
        ("python -m pytest -q", None),
    ],
)
def test_memory_counts_the_services_processes_only(command: str, role: str | None) -> None:
    assert memory.role_of(command) == role


def test_memory_tells_pool_children_from_their_main_process(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = "python -m celery -A workers.celery_app worker"
    processes = {
        10: (1, "sh -c make bench", 5.0),
        11: (10, worker, 120.0),
        12: (11, worker, 90.0),
        13: (11, worker, 95.0),
        20: (1, worker, 500.0),  # another run's worker on the machine: not this run's
    }
    monkeypatch.setattr(memory, "_processes", lambda: processes)
    peaks = memory.Peaks()
    memory.sample(peaks, root=10)
    assert peaks.mb == {"worker main process": 120.0, "worker pool child": 95.0}
    assert peaks.pids == {"worker main process": {11}, "worker pool child": {12, 13}}
