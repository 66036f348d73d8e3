"""The benchmark suite's peers and bookkeeping: each peer computes what it claims (so
the suite compares like with like), and the figures are reported as measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import peers  # noqa: E402
import suite_clustering  # noqa: E402
import suite_report  # noqa: E402

from viewcoop_core.clustering import jaccard_distance, nearest_neighbour_ranks, pseudo_labels  # noqa: E402
from viewcoop_core.metrics import rank_metrics, summarize  # noqa: E402


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    case = suite_clustering.Case("ours", 240, "easy", 1, dim=32, ids_per_cluster=8)
    return suite_clustering.make_features(case)[0]


def densify(matrix) -> np.ndarray:
    dense = np.ones(matrix.shape, dtype=np.float64)
    coo = matrix.tocoo()
    dense[coo.row, coo.col] = coo.data
    return dense


def test_dense_peer_is_the_projects_jaccard_distance(features):
    dense = peers.dense_jaccard(features, k1=30, k2=6)
    assert dense.dtype == np.float32 and dense.shape == (240, 240)
    np.testing.assert_allclose(dense, densify(jaccard_distance(features)), rtol=0, atol=1e-5)


def test_dense_peer_partition_equals_pseudo_labels(features):
    ours = pseudo_labels(features)
    theirs = peers.dense_pseudo_labels(features)
    assert ours.max() >= 5
    assert suite_clustering.adjusted_rand(ours, theirs) == 1.0


def test_knn_floor_finds_the_same_neighbours(features):
    x = torch.nn.functional.normalize(features, dim=1)
    floor = peers.knn_floor(features, 31)
    ours = nearest_neighbour_ranks(x, 31)
    assert torch.equal(floor[:, 0], torch.arange(len(x)))
    same = [set(a.tolist()) == set(b.tolist()) for a, b in zip(floor, ours)]
    assert np.mean(same) > 0.99  # only exact ties may order differently


def test_numpy_evaluation_peer_equals_rank_metrics():
    rng = np.random.default_rng(1)
    q_ids, g_ids = rng.integers(0, 20, 60), rng.integers(0, 20, 400)
    q_cams, g_cams = rng.integers(0, 4, 60), rng.integers(0, 4, 400)
    distmat = rng.random((60, 400)).astype(np.float32)
    expected = summarize(rank_metrics(distmat, q_ids, g_ids, q_cams, g_cams))
    got = peers.numpy_rank_metrics(distmat, q_ids, g_ids, q_cams, g_cams)
    for key in ("mAP", "R1", "R5", "R10"):
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def test_batch_hard_triplet_matches_a_loop():
    torch.manual_seed(0)
    feats, labels = torch.randn(12, 5), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    x = torch.nn.functional.normalize(feats, dim=1)
    losses = []
    for a in range(12):
        d = (x[a] - x).norm(dim=1)
        pos = d[labels == labels[a]].max()
        neg = d[labels != labels[a]].min()
        losses.append(torch.relu(pos - neg + 0.3))
    expected = torch.stack(losses).mean()
    torch.testing.assert_close(peers.batch_hard_triplet(feats, labels), expected, atol=1e-5, rtol=0)


def test_plain_reid_step_learns_a_separable_toy_problem():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8))
    model = peers.PlainReid(encoder, 8, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    labels = torch.arange(3).repeat_interleave(4)
    images = torch.randn(3, 1, 3, 4)[labels] + 0.1 * torch.randn(12, 1, 3, 4)
    first = peers.plain_reid_step(model, optimizer, images, labels, amp=False)
    for _ in range(30):
        last = peers.plain_reid_step(model, optimizer, images, labels, amp=False)
    assert last < first


def test_copy_bandwidth_is_positive():
    assert peers.copy_bandwidth(torch.device("cpu"), nbytes=1 << 20, repeats=1) > 0


def test_ari_counts_outliers_as_singletons_and_growth_exponents():
    a = np.array([0, 0, 1, 1, -1, -1])
    assert suite_clustering.adjusted_rand(a, a) == 1.0
    # Two outliers are not one cluster: grouping them is a different partition.
    assert suite_clustering.adjusted_rand(a, np.array([0, 0, 1, 1, 2, 2])) < 1.0
    sizes = [1000, 2000, 4000]
    assert suite_clustering.growth_exponent(sizes, [3e-6 * n**2 for n in sizes]) == pytest.approx(2)
    assert suite_clustering.growth_exponent([1000], [1.0]) is None


def test_a_measurement_reports_time_memory_and_labels(tmp_path):
    case = suite_clustering.Case("ours", 400, "hard", 1)
    result = suite_clustering.run_case(case, tmp_path / "labels.npy")
    labels = np.load(tmp_path / "labels.npy")
    assert labels.shape == (400,) and result["seconds"] > 0
    assert set(result["stages"]) >= {"knn", "expansion", "join"}
    assert result["method_peak_bytes"] >= 0 and result["peak_rss_bytes"] > 0


def test_report_renders_every_section():
    row = {
        "n": 2000, "features": "easy", "threads": 1, "device": "cpu", "ours_s": 0.5,
        "floor_s": 0.25, "ours_over_floor": 2.0, "ours_peak_bytes": 2**20, "ours_stages": {"knn": 0.2},
        "clusters": 10, "outlier_frac": 0.1, "dense_s": 5.0, "dense_peak_bytes": 2**24,
        "speedup_vs_dense": 10.0, "memory_ratio_vs_dense": 16.0, "ari_vs_dense": 1.0,
    }  # fmt: skip
    report = {
        "date": "2026-12-01 12:00",
        "device": "cpu",
        "versions": {"torch": "x"},
        "command": "python benchmarks/suite.py",
        "load_average": (1.0, 1.0, 1.0),
        "load_average_after": (1.0, 1.0, 1.0),
        "clustering": {"rows": [row], "growth": {"ours/easy/1t": 1.1}},
        "training": {
            "model": "m",
            "image_size": 64,
            "batch_size": 8,
            "amp": False,
            "steps": 2,
            "ours_images_per_s": 10.0,
            "plain_images_per_s": 20.0,
            "ours_over_plain": 0.5,
            "extract_images_per_s": 30.0,
            "num_train_images": 40,
        },  # fmt: skip
        "ray": {
            "ray_epoch_s": 11.0,
            "ray_train_s": 8.5,
            "plain_epoch_s": 10.0,
            "plain_train_s": 7.5,
            "overhead_frac_of_ray_epoch": 0.09,
            "epochs_timed": [2, 3, 4, 5],
            "num_workers": 2,
            "cpus_per_worker": 1.0,
        },
        "evaluation": {
            "num_query": 10,
            "num_gallery": 20,
            "ours_s": 0.001,
            "numpy_per_query_s": 0.1,
            "speedup": 100.0,
            "mAP_abs_diff_vs_numpy": 0.0,
        },  # fmt: skip
        "dictionary": [
            {
                "n": 10,
                "dictionary_s": 1.0,
                "write_floor_s": 0.5,
                "over_floor": 2.0,
                "copy_gb_s": 1.0,
                "copy_bandwidth_gb_s": 1.0,
            }
        ],  # fmt: skip
    }
    text = suite_report.markdown(report, note="measured under load")
    for expected in ("## 2026-12-01 12:00", "| 2000 | easy | 1 | 0.50 | 0.25 | 2.00", "16.00",
                     "Growth exponents", "measured under load", "Ray Train overhead", "0.09",
                     "epochs 2-5, medians", "2 worker(s) x 1.0 CPU", "| 8.50 |",
                     "Evaluation", "Mutual dictionary", "Training step"):  # fmt: skip
        assert expected in text, expected


def test_the_plain_epoch_is_the_engines_epoch_with_the_configs_options(tmp_path):
    """The Ray-overhead peer trains the run's own epoch (camera normalisation needs the
    cameras: the peer once built its clustering step without them and failed)."""
    import suite_training

    from orchestrator.config import load_config

    cfg = load_config(
        REPO / "experiments" / "smoke.yaml",
        [
            f"data.root={tmp_path / 'data'}",
            "cluster.camera_norm=mean",
            "train.epochs=2",
            "train.eval_every=1000",
            "train.device_cache=true",
        ],
    )
    plain = suite_training.plain_epoch_seconds(cfg, threads=1)
    assert plain["epoch_s"] > 0 and plain["train_s"] >= 0 and plain["img_clusters"] >= 0


def test_train_local_takes_overrides_before_or_after_its_options():
    import train_local

    after = train_local.parse_args(["cfg.yaml", "--profile", "bench", "a.b=1", "--seeds", "0", "1"])
    before = train_local.parse_args(
        ["cfg.yaml", "a.b=1", "--profile", "bench", "--seeds", "0", "1"]
    )
    for args in (after, before):
        assert (args.config, args.overrides, args.profile, args.seeds) == (
            "cfg.yaml",
            ["a.b=1"],
            "bench",
            [0, 1],
        )
        assert args.true_image_labels is False
        assert args.true_text_labels is False
    assert train_local.parse_args(["cfg.yaml", "--true-image-labels"]).true_image_labels
    assert train_local.parse_args(["cfg.yaml", "--true-text-labels"]).true_text_labels


def test_train_local_writes_the_environment_with_its_rows(tmp_path, capsys):
    """The figures' digits hold on one machine and stack: the JSON says which."""
    import train_local

    out = tmp_path / "rows.json"
    train_local.main(
        [
            str(REPO / "experiments" / "smoke.yaml"),
            f"data.root={tmp_path / 'data'}",
            "train.epochs=1",
            "--seeds",
            "0",
            "--threads",
            "1",
            "--json",
            str(out),
        ]
    )
    record = json.loads(out.read_text())
    assert record["environment"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["environment"]["torch_threads"] == "1"
    assert [row["epoch"] for row in record["runs"]["0"]] == [0, 1]
    assert (
        f"torch_cpu_capability {torch.backends.cpu.get_cpu_capability()}" in capsys.readouterr().out
    )
