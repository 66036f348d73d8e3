"""Sweep pieces without Ray: grid expansion, trial concurrency, the summary table, resume checks."""

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from orchestrator.config import load_config
from orchestrator.sweep.grid import (
    GridPoint,
    axis_columns,
    check_fixed_overrides,
    expand_grid,
    parse_grid_options,
    point_config,
    read_sweep_section,
)
from orchestrator.sweep.report import (
    SummaryRow,
    summary_rows,
    table_markdown,
    write_summary,
    write_table_csv,
)
from orchestrator.sweep.resources import max_concurrent_trials, trial_demand
from orchestrator.sweep.run import prepare_sweep_dir
from viewcoop_core.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"


# ------------------------------------------------------------------------ grid


def test_axes_cross_points_like_nested_loops():
    axes = {"graph.tau": ["0", "1or2"], "views.patch_size": [8, "pixel"]}
    points = {
        "a": {"prompt.variant": "coop"},
        "b": {"prompt.variant": "viewcoop", "loss.terms": "full"},
    }
    expected = []
    for point_name, point_overrides in points.items():
        for tau in axes["graph.tau"]:
            for patch in axes["views.patch_size"]:
                expected.append(
                    (
                        f"{point_name}, tau={tau}, patch_size={patch}",
                        {**point_overrides, "graph.tau": tau, "views.patch_size": patch},
                    )
                )
    grid = expand_grid(axes, points)
    assert [(p.name, p.overrides) for p in grid] == expected
    assert len({p.slug for p in grid}) == len(grid)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.slug) for p in grid)
    assert axis_columns(axes, points) == [
        "prompt.variant",
        "loss.terms",
        "graph.tau",
        "views.patch_size",
    ]


def test_axes_alone_points_alone_and_neither():
    assert [
        (p.name, p.slug, p.overrides) for p in expand_grid({"graph.tau": ["1", "1or2"]}, {})
    ] == [
        ("tau=1", "tau_1", {"graph.tau": "1"}),
        ("tau=1or2", "tau_1or2", {"graph.tau": "1or2"}),
    ]
    grid = expand_grid({}, {"w/ CMG": {"prompt.variant": "coop"}, "Ours": {}})
    assert [(p.name, p.slug, p.overrides) for p in grid] == [
        ("w/ CMG", "w_CMG", {"prompt.variant": "coop"}),
        ("Ours", "Ours", {}),
    ]
    assert [(p.name, p.overrides) for p in expand_grid({}, {})] == [("default", {})]
    # Keys sharing a last component keep their full dotted name in labels.
    names = [p.name for p in expand_grid({"a.x": [1], "b.x": [2]}, {})]
    assert names == ["a.x=1, b.x=2"]


def test_grid_conflicts_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"'a' sets \['graph.tau'\]"):
        expand_grid({"graph.tau": ["0"]}, {"a": {"graph.tau": "2"}})
    with pytest.raises(ConfigError, match="'a b' and 'a/b'"):
        expand_grid({}, {"a b": {}, "a/b": {}})
    grid = expand_grid({"graph.tau": ["0", "2"]}, {})
    with pytest.raises(ConfigError, match=r"\['graph.tau'\]"):
        check_fixed_overrides(grid, {"graph.tau": "1", "train.epochs": 3})
    check_fixed_overrides(grid, {"train.epochs": 3})


def test_read_sweep_section_and_grid_options(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "train": {"epochs": 3},
                "sweep": {
                    "graph.tau": ["0", "2"],
                    "points": {"base": None, "coop": {"prompt.variant": "coop"}},
                },
            }
        )
    )
    assert read_sweep_section(path) == (
        {"graph.tau": ["0", "2"]},
        {"base": {}, "coop": {"prompt.variant": "coop"}},
    )
    assert load_config(path).train.epochs == 3  # the sweep section is not a config field

    path.write_text(yaml.safe_dump({"sweep": {"graph.tau": "1or2"}}))
    with pytest.raises(ConfigError, match="axis 'graph.tau' must be a non-empty list"):
        read_sweep_section(path)
    path.write_text(yaml.safe_dump({"sweep": {"points": {"x": ["prompt.variant=coop"]}}}))
    with pytest.raises(ConfigError, match="point 'x' must be a mapping"):
        read_sweep_section(path)
    assert parse_grid_options(["graph.tau=['1', '1or2']", "views.patch_size=[8, pixel]"]) == {
        "graph.tau": ["1", "1or2"],
        "views.patch_size": [8, "pixel"],
    }
    with pytest.raises(ConfigError, match="--grid: axis 'graph.tau'"):
        parse_grid_options(["graph.tau=1"])


TABLES = {
    "table1_modules.yaml": [
        ("Baseline", "viewcoop", ["v"]),
        ("w/ ViewCoOp", "viewcoop", ["v", "t", "cm"]),
        ("w/ CMG", "coop", ["v", "t", "g", "cm"]),
        ("Ours", "viewcoop", ["v", "t", "g", "cm"]),
        ("Ours (as printed)", "viewcoop", ["v", "t", "g", "cm"]),
    ],
    "table2_prompts.yaml": ["coop", "cocoop", "uncoop", "viewcoop_static", "viewcoop"],
    "table3_tau.yaml": [[0], [1], [1, 2], [2]],
    "table4_patch.yaml": ["pixel", 8, 16, 32],
}


@pytest.mark.parametrize("profile", [None, "smoke", "bench"])
@pytest.mark.parametrize("file", sorted(TABLES))
def test_paper_table_sweeps_expand_to_their_rows(file, profile):
    path = EXPERIMENTS / file
    axes, points = read_sweep_section(path)
    grid = expand_grid(axes, points)
    configs = [point_config(path, {}, profile, point) for point in grid]
    if file.startswith("table1"):
        assert [(p.name, c.prompt.variant, c.loss.terms) for p, c in zip(grid, configs)] == TABLES[
            file
        ]
    elif file.startswith("table2"):
        assert [c.prompt.variant for c in configs] == TABLES[file]
    elif file.startswith("table3"):
        assert [c.graph.tau for c in configs] == TABLES[file]
    else:
        assert [c.views.patch_size for c in configs] == TABLES[file]
    cfg = configs[0]
    if profile == "bench":  # the synthetic benchmark: one shared set, 2 trials on 2 cores
        assert (cfg.data.root, cfg.data.synthetic.camera_looks) == (
            "data/synthetic-bench-looks",
            None,
        )
        assert (cfg.cluster.camera_norm, cfg.loss.cm_form, cfg.loss.text_targets) == (
            "mean",
            "clip",
            "image_clusters",
        )
        if file.startswith("table1"):  # the literal paper setting stays a row
            literal = configs[-1]
            assert (literal.cluster.camera_norm, literal.loss.cm_form) == ("none", "eq8")
            assert (literal.loss.cm_positives, literal.loss.text_targets) == (
                "pair",
                "text_clusters",
            )
        assert (cfg.model.pretrained, cfg.ray.num_workers, cfg.ray.use_gpu) == (
            "synthetic",
            1,
            False,
        )
    if profile is None:  # the paper's GPU setting
        assert (cfg.data.dataset, cfg.data.root, cfg.data.masks_dir) == (
            "veri776",
            "data/VeRi",
            "data/VeRi/masks",
        )
        assert (cfg.model.name, cfg.model.pretrained, cfg.model.image_size) == (
            "ViT-B-16-quickgelu",
            "openai",
            256,
        )
        assert (
            cfg.train.epochs,
            cfg.train.iters,
            cfg.train.batch_size,
            cfg.train.num_instances,
        ) == (50, 600, 64, 4)
        assert (cfg.optim.step_size, cfg.optim.gamma) == (20, 0.1)
        assert (cfg.ray.num_workers, cfg.ray.use_gpu) == (2, True)
    else:  # a trial fits one of a 2-CPU local Ray's CPUs, so two run side by side
        assert (cfg.data.dataset, cfg.model.name, cfg.ray.use_gpu) == (
            "synthetic",
            "viewcoop-tiny",
            False,
        )
        assert cfg.ray.num_workers * cfg.ray.cpus_per_worker + 0.01 <= 1.0


# ----------------------------------------------------------------- concurrency


def packed_trials(cpus, gpus, need_cpus, need_gpus, num_trials):
    """Naive reference: place trials one after another while both resources last."""
    placed = 0
    while placed < num_trials and cpus >= need_cpus - 1e-9 and gpus >= need_gpus - 1e-9:
        cpus, gpus, placed = cpus - need_cpus, gpus - need_gpus, placed + 1
    return max(placed, 1)


@pytest.mark.parametrize(
    "cluster, trial, num_trials",
    [
        # (CPUs, GPUs), (num_workers, cpus_per_worker, use_gpu, actor_cpus, actor_gpus), trials
        ((2, 0), (2, 0.49, False, 0.0, 0.0), 4),
        ((2, 0), (2, 1.0, False, 0.0, 0.0), 4),
        ((64, 8), (2, 8, True, 1.0, 1.0), 4),
        ((64, 8), (1, 4, True, 1.0, 0.0), 5),
        ((16, 8), (2, 4, True, 1.0, 1.0), 4),
        ((8, 0), (4, 1, False, 0.0, 0.0), 3),
    ],
)
def test_concurrency_is_what_fits_side_by_side(cluster, trial, num_trials):
    workers, per_worker, use_gpu, actor_cpus, actor_gpus = trial
    cpus, gpus = trial_demand(*trial)
    assert cpus == pytest.approx(0.01 + workers * per_worker + actor_cpus)
    assert gpus == (workers if use_gpu else 0) + actor_gpus
    assert max_concurrent_trials(*cluster, cpus, gpus, num_trials) == packed_trials(
        *cluster, cpus, gpus, num_trials
    )


def test_concurrency_bounds():
    assert max_concurrent_trials(2, 0, 0.99, 0, 4) == 2
    assert max_concurrent_trials(2, 0, 1.01, 0, 4) == 1
    assert (
        max_concurrent_trials(2, 0, 4.01, 0, 4) == 1
    )  # bigger than the cluster: one waits for nodes
    assert max_concurrent_trials(64, 8, 17.01, 3, 2) == 2  # never more than there are trials


# ---------------------------------------------------------------------- summary


def fake_grid():
    return expand_grid({"graph.tau": ["0", "1", "1or2", "2"]}, {})


def history(*maps):
    return [{"epoch": e, "mAP": m, "R1": m + 0.1, "R5": m + 0.2, "R10": m + 0.3} for e, m in maps]


def test_summary_rows_mark_the_best_complete_row():
    grid = fake_grid()
    histories = {
        "tau_0": history((1, 0.10), (2, 0.20)),
        "tau_1": history((1, 0.30), (2, 0.35)),
        "tau_1or2": history((1, 0.50)),  # best mAP so far but stopped early
        "tau_2": history((1, 0.20), (2, 0.35)),  # ties with tau_1: the first one wins
    }
    rows = summary_rows(
        grid, histories, {p.slug: 2 for p in grid}, errors={"tau_1or2": "RuntimeError: boom"}
    )
    complete = [(r.metrics["mAP"], -i) for i, r in enumerate(rows) if r.epoch == 2]
    best = -max(complete)[1]
    assert [r.best for r in rows] == [i == best for i in range(len(rows))] and rows[1].best
    assert [r.status for r in rows] == [
        "finished",
        "finished",
        "failed: RuntimeError: boom",
        "finished",
    ]
    assert rows[0].metrics == pytest.approx({"mAP": 20.0, "R1": 30.0, "R5": 40.0, "R10": 50.0})
    assert (rows[2].epoch, rows[2].complete) == (1, False)

    missing = summary_rows(grid[:1], {}, {"tau_0": 2}, errors={})
    assert (missing[0].status, missing[0].best, missing[0].metrics["mAP"]) == (
        "no result",
        False,
        None,
    )


def test_markdown_and_csv_tables(tmp_path):
    grid = fake_grid()[:3]
    histories = {"tau_0": history((2, 0.123456)), "tau_1": history((2, 0.5))}
    rows = summary_rows(grid, histories, {p.slug: 2 for p in grid}, errors={})
    columns = axis_columns({"graph.tau": []}, {})
    markdown = table_markdown(rows, columns, "t3").splitlines()
    table = [line for line in markdown if line.startswith("|")]
    assert table[0] == "| point | graph.tau | epoch | mAP | R1 | R5 | R10 | best | status |"
    assert table[2] == "| tau=0 | 0 | 2/2 | 12.3 | 22.3 | 32.3 | 42.3 |  | finished |"
    assert (
        table[3]
        == "| **tau=1** | **1** | **2/2** | **50.0** | **60.0** | **70.0** | **80.0** | * | finished |"
    )
    assert table[4] == "| tau=1or2 | 1or2 | - | - | - | - | - |  | no result |"

    with write_table_csv(rows, columns, tmp_path / "t.csv").open() as handle:
        records = list(csv.DictReader(handle))
    assert [r["best"] for r in records] == ["0", "1", "0"]
    assert float(records[0]["mAP"]) == pytest.approx(12.3456, abs=1e-4)
    assert (records[2]["mAP"], records[2]["epoch"], records[2]["epochs"]) == ("", "", "2")


def test_write_summary_draws_the_plots(tmp_path):
    axes, points = {"graph.tau": ["0", "2"]}, {"a": {"prompt.variant": "coop"}, "b": {}}
    grid = expand_grid(axes, points)
    histories = {
        p.slug: history((1, 0.1 * (i + 1)), (2, 0.1 * (i + 2))) for i, p in enumerate(grid)
    }
    rows = summary_rows(grid, histories, {p.slug: 2 for p in grid}, errors={})
    paths = write_summary(
        rows,
        grid,
        axis_columns(axes, points),
        histories,
        tmp_path / "summary",
        "t",
        per_point_bars=True,
    )
    names = sorted(p.name for p in paths)
    assert names == [
        "bars_graph.tau.png",
        "bars_point.png",
        "bars_prompt.variant.png",
        "mAP_per_epoch.png",
        "table.csv",
        "table.md",
    ]
    for path in paths:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------- resume


def test_existing_sweeps_need_resume_and_the_same_settings(tmp_path):
    spec = {
        "name": "s",
        "grid": [{"name": "tau=0", "slug": "tau_0", "overrides": {"graph.tau": "0"}}],
        "base": {"train": {"epochs": 2, "iters": 3}},
    }
    sweep_dir = tmp_path / "s"
    with pytest.raises(FileNotFoundError, match="no sweep 's' to resume"):
        prepare_sweep_dir(sweep_dir, spec, resume=True)
    prepare_sweep_dir(sweep_dir, spec, resume=False)
    assert json.loads((sweep_dir / "sweep.json").read_text()) == spec
    with pytest.raises(ConfigError, match="already exists"):
        prepare_sweep_dir(sweep_dir, spec, resume=False)
    prepare_sweep_dir(sweep_dir, spec, resume=True)
    # A field added by a code update since the sweep began is not a change of settings.
    prepare_sweep_dir(
        sweep_dir,
        {**spec, "base": {"train": {"epochs": 2, "iters": 3, "new_field": 1}}},
        resume=True,
    )
    changed = {**spec, "base": {"train": {"epochs": 2, "iters": 5}}}
    with pytest.raises(ConfigError, match=r"\['train.iters'\]"):
        prepare_sweep_dir(sweep_dir, changed, resume=True)
    regridded = {
        **spec,
        "grid": [{"name": "tau=2", "slug": "tau_2", "overrides": {"graph.tau": "2"}}],
    }
    with pytest.raises(ConfigError, match=r"grid \['tau=0'\] -> \['tau=2'\]"):
        prepare_sweep_dir(sweep_dir, regridded, resume=True)


def test_summary_row_completeness_is_the_last_epoch():
    point = GridPoint("p", "p", {})
    assert SummaryRow(point, 2, 2, {"mAP": 10.0}, "finished").complete
    assert not SummaryRow(point, 1, 2, {"mAP": 10.0}, "finished").complete
    assert not SummaryRow(point, None, 2, {"mAP": None}, "no result").complete
