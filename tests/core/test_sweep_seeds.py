"""Seeds as a sweep feature: the seed axis, mean ± std per point, differences beyond 2 std."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from orchestrator.sweep.grid import expand_grid
from orchestrator.sweep.report import TABLE_METRICS, SummaryRow
from orchestrator.sweep.seeds import (
    SEED_KEY,
    seed_rows,
    seed_table_markdown,
    with_seed_axis,
    write_seed_csv,
)
from viewcoop_core.config import ConfigError

POINTS = {"Baseline": {"loss.terms": "baseline"}, "Ours": {"loss.terms": "full"}}


def test_the_seed_axis_is_innermost_so_each_point_repeats_over_seeds():
    axes = with_seed_axis({"graph.tau": ["1", "2"]}, 3)
    grid = expand_grid(axes, POINTS)
    assert len(grid) == 2 * 2 * 3
    assert [p.name for p in grid[:4]] == [
        "Baseline, tau=1, seed=0",
        "Baseline, tau=1, seed=1",
        "Baseline, tau=1, seed=2",
        "Baseline, tau=2, seed=0",
    ]
    assert grid[2].overrides == {"loss.terms": "baseline", "graph.tau": "1", SEED_KEY: 2}
    assert with_seed_axis({"graph.tau": ["1"]}, None) == {"graph.tau": ["1"]}


@pytest.mark.parametrize("seeds", [0, -1, 101, 2.5, True])
def test_bad_seed_counts_are_named(seeds):
    with pytest.raises(ConfigError, match="--seeds"):
        with_seed_axis({}, seeds)


def test_seeds_and_a_seed_axis_together_are_refused():
    with pytest.raises(ConfigError, match="train.seed"):
        with_seed_axis({SEED_KEY: [0, 1]}, 2)


def rows_for(maps: dict[str, list[float | None]], epochs: int = 4) -> list[SummaryRow]:
    """Summary rows of a seeded grid: point name -> mAP per seed (None: unfinished)."""
    grid = expand_grid(with_seed_axis({}, len(next(iter(maps.values())))), POINTS)
    rows = []
    for point in grid:
        name = point.name.split(", ")[0]
        value = maps[name][point.overrides[SEED_KEY]]
        metrics = {k: (None if value is None else value + i) for i, k in enumerate(TABLE_METRICS)}
        rows.append(SummaryRow(point, epochs if value is not None else 2, epochs, metrics, "x"))
    return rows


def test_mean_and_std_match_numpy_over_the_finished_seeds():
    rows = seed_rows(rows_for({"Baseline": [10.0, 12.0, None], "Ours": [20.0, 21.0, 25.0]}))
    base, ours = rows
    assert (base.name, base.n, base.total) == ("Baseline", 2, 3)
    assert base.mean["mAP"] == pytest.approx(11.0)
    assert base.std["mAP"] == pytest.approx(np.std([10.0, 12.0], ddof=1))
    assert ours.mean["R1"] == pytest.approx(np.mean([21.0, 22.0, 26.0]))
    assert ours.std["mAP"] == pytest.approx(np.std([20.0, 21.0, 25.0], ddof=1))
    assert base.overrides == {"loss.terms": "baseline"}


def naive_real(a: list[float], b: list[float]) -> bool:
    pooled = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    return bool(abs(np.mean(a) - np.mean(b)) > 2 * pooled)


@pytest.mark.parametrize(
    "baseline, ours",
    [
        ([10.0, 11.0, 12.0], [20.0, 21.0, 22.0]),  # far apart: real
        ([10.0, 15.0, 20.0], [13.0, 18.0, 23.0]),  # noisy: within 2 std
        ([10.0, 10.5, 11.0], [11.0, 12.0, 13.0]),  # close to the line
    ],
)
def test_differences_to_the_best_are_marked_by_the_2_std_rule(baseline, ours):
    base, best = seed_rows(rows_for({"Baseline": baseline, "Ours": ours}))
    assert best.best and not base.best
    assert base.delta == pytest.approx(np.mean(baseline) - np.mean(ours))
    assert base.real is naive_real(baseline, ours)
    assert best.real is None


def test_one_seed_has_no_std_and_no_verdict():
    base, best = seed_rows(rows_for({"Baseline": [10.0], "Ours": [20.0]}))
    assert base.std["mAP"] is None and base.real is None and base.delta == pytest.approx(-10)


def test_seed_tables_in_markdown_and_csv(tmp_path):
    rows = seed_rows(rows_for({"Baseline": [10.0, 11.0, 12.0], "Ours": [20.0, 21.0, 22.0]}))
    text = seed_table_markdown(rows, ["loss.terms", SEED_KEY], "table 1")
    assert "| Baseline | baseline | 3/3 | 11.0 ± 1.0 |" in text
    assert "-10.0 (> 2 std)" in text and "| best |" in text
    assert SEED_KEY not in text.split("\n")[4]  # the seed is not a column
    path = write_seed_csv(rows, ["loss.terms", SEED_KEY], tmp_path / "t.csv")
    records = list(csv.DictReader(path.open()))
    assert records[0]["mAP_mean"] == "11.0000" and records[0]["mAP_std"] == "1.0000"
    assert (records[0]["beyond_2std"], records[1]["best"]) == ("1", "1")


def test_the_benchmark_report_pools_seeds_per_point():
    import importlib.util

    path = Path(__file__).parents[2] / "benchmarks" / "sweep_report.py"
    spec = importlib.util.spec_from_file_location("sweep_report", path)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    runs = {
        "loss.terms=baseline": [{"mAP": 10.0}, {"mAP": 11.0}, {"mAP": 12.0}],
        "loss.terms=full": [{"mAP": 20.0}, {"mAP": 21.0}, {}],
    }
    text = report.markdown_table("t1", [runs])
    assert "| loss.terms=baseline | - | 11.0 ± 1.0 |" in text
    assert "| 3 | -9.5 (> 2 std) |" in text and "| 2 | best |" in text
