"""The headline figures of every benchmark, collected for `make bench`'s one table (bench/report.py).

Each benchmark prints its own detailed output, and records the few figures a
reader compares across runs here: the measure, its baseline measured in the
same run, and the target it is held to. `make bench` points BENCH_RESULTS at one
JSON Lines file for the whole run; a benchmark run by hand, without it, records
nothing. Appending one line per figure (O_APPEND) keeps benchmarks that run one
after the other, or a sampler beside them (bench/memory.py), from overwriting
each other.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_ENV = "BENCH_RESULTS"


@dataclass(frozen=True)
class Figure:
    """One measured figure; `better` says which way is good ("lower" for times, "higher" for rates)."""

    bench: str
    measure: str
    value: float
    unit: str
    better: str = "lower"
    baseline: float | None = None
    baseline_measure: str | None = None
    target: str | None = None
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        """value / baseline: how many times the baseline (for a time, lower is better)."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline


def record(
    bench: str,
    measure: str,
    value: float,
    unit: str,
    *,
    better: str = "lower",
    baseline: float | None = None,
    baseline_measure: str | None = None,
    target: str | None = None,
    met: bool | None = None,
) -> None:
    """Add a figure to the run's results file, if the run keeps one."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    figure = Figure(bench, measure, float(value), unit, better, baseline, baseline_measure, target, met)
    line = json.dumps(asdict(figure)) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(line)


def read(path: Path) -> list[Figure]:
    """The figures of a results file, in the order they were recorded."""
    if not path.exists():
        return []
    return [Figure(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
