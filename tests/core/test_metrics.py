"""Re-id metrics against a brute-force per-query reference written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from viewcoop_core import metrics as metrics_module
from viewcoop_core.metrics import (
    pairwise_distance,
    rank_metrics,
    summarize,
    vehicleid_metrics,
    vehicleid_split_indices,
)

TOL = 1e-6

# rank_metrics ranks a chunk either by sorting rows or by counting (few same-id items);
# these values of the switch force one or the other.
STRATEGIES = {"sort": -1, "count": 10**9}


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request, monkeypatch):
    monkeypatch.setattr(metrics_module, "_COUNTING_MAX_ITEMS_PER_QUERY", STRATEGIES[request.param])
    return request.param


def reference_rank_metrics(distmat, q_ids, g_ids, q_cams, g_cams, max_rank):
    """One query at a time: stable argsort, drop same id+cam, explicit AP and CMC."""
    distmat = np.asarray(distmat)
    aps, first_ranks, skipped = [], [], 0
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        kept = [j for j in order if not (g_ids[j] == q_ids[i] and g_cams[j] == q_cams[i])]
        is_match = [g_ids[j] == q_ids[i] for j in kept]
        if not any(is_match):
            skipped += 1
            continue
        hits, precisions = 0, []
        for rank, match in enumerate(is_match):
            if match:
                hits += 1
                precisions.append(hits / (rank + 1))
        aps.append(sum(precisions) / len(precisions))
        first_ranks.append(is_match.index(True))
    if not aps:
        return {"num_valid_queries": 0}
    cmc = np.array([sum(r <= k for r in first_ranks) / len(first_ranks) for k in range(max_rank)])
    return {
        "mAP": sum(aps) / len(aps),
        "cmc": cmc,
        "num_valid_queries": len(aps),
        "num_skipped_queries": skipped,
    }


def random_case(seed):
    """A small random query/gallery setup with the awkward cases mixed in.

    Odd seeds use integer distances in 0..3 (many ties), even seeds float32 with some
    +inf (tied at the end); query ids range wider than gallery ids (queries with no
    match); few cameras (same-camera removals); query 0 gets an id whose only gallery
    image shares its camera; max_rank may exceed G.
    """
    rng = np.random.default_rng(seed)
    while True:
        nq, ng = int(rng.integers(2, 25)), int(rng.integers(1, 35))
        num_ids, num_cams = int(rng.integers(1, 7)), int(rng.integers(1, 4))
        q_ids = rng.integers(0, num_ids + 2, nq)
        g_ids = rng.integers(0, num_ids, ng)
        q_cams = rng.integers(0, num_cams, nq)
        g_cams = rng.integers(0, num_cams, ng)
        q_ids[0], g_ids[0], g_cams[0] = 1000, 1000, q_cams[0]
        if seed % 2:
            distmat = rng.integers(0, 4, (nq, ng))
        else:
            distmat = rng.random((nq, ng)).astype(np.float32)
            distmat[rng.random((nq, ng)) < 0.1] = np.inf  # e.g. masked-out pairs: tied
        max_rank = int(rng.integers(1, ng + 8))
        args = (distmat, q_ids, g_ids, q_cams, g_cams)
        ref = reference_rank_metrics(*args, max_rank)
        if ref["num_valid_queries"] > 0:
            return args, max_rank, ref


def assert_metrics_close(got, want, tol=TOL):
    assert got["num_valid_queries"] == want["num_valid_queries"]
    assert got["num_skipped_queries"] == want["num_skipped_queries"]
    assert isinstance(got["mAP"], float)
    assert got["mAP"] == pytest.approx(want["mAP"], abs=tol)
    assert got["cmc"].dtype == np.float64
    np.testing.assert_allclose(got["cmc"], want["cmc"], atol=tol, rtol=0)


@pytest.mark.parametrize("seed", range(60))
def test_rank_metrics_matches_bruteforce(seed, strategy):
    args, max_rank, ref = random_case(seed)
    chunk_size = 1 + seed % 7
    got = rank_metrics(*args, max_rank=max_rank, chunk_size=chunk_size)
    assert ref["num_skipped_queries"] >= 1  # query 0: its only match shares its camera
    assert_metrics_close(got, ref)


def test_hand_computed_example(strategy):
    # Gallery: 0 (id1,cam1), 1 (id2,cam1), 2 (id1,cam0), 3 (id1,cam1).
    # q0 (id1,cam0): ranking 0 1 2 3, item 2 removed -> [hit, miss, hit]:
    #   AP = (1/1 + 2/3) / 2 = 5/6, first hit at rank 0.
    # q1 (id2,cam1): its only same-id item 1 shares its camera -> skipped.
    # q2 (id1,cam1): ranking 1 2 3 0, items 3 and 0 removed -> [miss, hit]:
    #   AP = 1/2, first hit at rank 1.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.2, 0.3]])
    got = rank_metrics(distmat, [1, 2, 1], [1, 2, 1, 1], [0, 1, 1], [1, 1, 0, 1], max_rank=6)
    assert got["mAP"] == pytest.approx((5 / 6 + 1 / 2) / 2, abs=1e-12)
    # Max rank 6 > 4 gallery items: padded with the last value.
    np.testing.assert_allclose(got["cmc"], [0.5, 1, 1, 1, 1, 1])
    assert got["num_valid_queries"] == 2
    assert got["num_skipped_queries"] == 1


def test_ties_keep_gallery_order(strategy):
    # Equal distances: the item with the lower gallery index ranks first.
    miss_first = rank_metrics(np.array([[1.0, 1.0]]), [1], [2, 1], [0], [1, 1], max_rank=2)
    hit_first = rank_metrics(np.array([[1.0, 1.0]]), [1], [1, 2], [0], [1, 1], max_rank=2)
    assert miss_first["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(miss_first["cmc"], [0.0, 1.0])
    assert hit_first["mAP"] == pytest.approx(1.0)
    np.testing.assert_allclose(hit_first["cmc"], [1.0, 1.0])


def test_matches_sklearn_average_precision_without_ties(strategy):
    rng = np.random.default_rng(7)
    nq, ng = 20, 50
    distmat = rng.random((nq, ng))
    q_ids, g_ids = rng.integers(0, 5, nq), rng.integers(0, 5, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    aps = []
    for i in range(nq):
        keep = ~((g_ids == q_ids[i]) & (g_cams == q_cams[i]))
        y_true = g_ids[keep] == q_ids[i]
        if y_true.any():
            aps.append(average_precision_score(y_true, -distmat[i, keep]))
    got = rank_metrics(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=10)
    assert got["num_valid_queries"] == len(aps)
    assert got["mAP"] == pytest.approx(np.mean(aps), abs=TOL)


def test_chunk_size_does_not_change_result(strategy):
    args, max_rank, _ = random_case(3)
    full = rank_metrics(*args, max_rank=max_rank, chunk_size=10_000)
    for chunk_size in (1, 2, 5):
        chunked = rank_metrics(*args, max_rank=max_rank, chunk_size=chunk_size)
        assert_metrics_close(chunked, full, tol=1e-12)


def test_torch_numpy_and_list_inputs_agree():
    (distmat, q_ids, g_ids, q_cams, g_cams), max_rank, _ = random_case(4)
    from_numpy = rank_metrics(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=max_rank)
    from_torch = rank_metrics(
        torch.from_numpy(distmat),
        torch.from_numpy(q_ids),
        torch.from_numpy(g_ids).int(),
        torch.from_numpy(q_cams),
        torch.from_numpy(g_cams).to(torch.int16),
        max_rank=max_rank,
    )
    from_lists = rank_metrics(
        distmat.tolist(),
        q_ids.tolist(),
        g_ids.tolist(),
        q_cams.tolist(),
        g_cams.tolist(),
        max_rank=max_rank,
    )
    assert_metrics_close(from_torch, from_numpy, tol=1e-12)
    assert_metrics_close(from_lists, from_numpy, tol=1e-12)


def test_rank_metrics_input_errors():
    distmat = np.zeros((2, 3))
    ok = {"q_ids": [0, 1], "g_ids": [0, 1, 1], "q_cams": [0, 0], "g_cams": [1, 1, 1]}
    with pytest.raises(ValueError, match="g_ids"):
        rank_metrics(distmat, **{**ok, "g_ids": [0, 1]})
    with pytest.raises(ValueError, match="q_cams"):
        rank_metrics(distmat, **{**ok, "q_cams": [0, 0, 0]})
    with pytest.raises(ValueError, match="2-D"):
        rank_metrics(np.zeros(3), **ok)
    with pytest.raises(ValueError, match="NaN"):
        rank_metrics(np.full((2, 3), np.nan), **ok)
    with pytest.raises(ValueError, match="none of the 2 queries"):
        rank_metrics(distmat, **{**ok, "q_ids": [5, 6]})
    with pytest.raises(ValueError, match="max_rank"):
        rank_metrics(distmat, **ok, max_rank=0)


def test_pairwise_distance_matches_manual_formulas():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    cos = np.array([[1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for b in g] for a in q])
    sq_euclid = np.array([[np.sum((a - b) ** 2) for b in g] for a in q])

    got_cos = pairwise_distance(q, g, "cosine")
    got_euclid = pairwise_distance(torch.from_numpy(q), torch.from_numpy(g), "euclidean")
    assert got_cos.shape == (5, 7) and got_cos.dtype == torch.float64
    np.testing.assert_allclose(got_cos.numpy(), cos, atol=1e-10)
    np.testing.assert_allclose(got_euclid.numpy(), sq_euclid, atol=1e-10)

    half = pairwise_distance(torch.from_numpy(q).half(), torch.from_numpy(g).half())
    assert half.dtype == torch.float32
    np.testing.assert_allclose(half.numpy(), cos, atol=2e-3)
    # A duplicate must be at distance exactly 0, never negative from rounding.
    assert pairwise_distance(q, q, "euclidean").min() >= 0


def test_pairwise_distance_errors():
    with pytest.raises(ValueError, match=r"\['cosine', 'euclidean'\].*'l1'"):
        pairwise_distance(np.zeros((2, 3)), np.zeros((2, 3)), "l1")
    with pytest.raises(ValueError, match="dims differ"):
        pairwise_distance(np.zeros((2, 3)), np.zeros((2, 4)))


PIDS = np.array([3, 3, 3, 7, 7, 9, 1, 1, 1, 1, 42, 5, 5, 5, 5, 5, 8, 8])  # 9, 42: singletons


def test_vehicleid_split_indices_structure():
    splits = vehicleid_split_indices(PIDS, num_splits=10, seed=0)
    assert len(splits) == 10
    for query_idx, gallery_idx in splits:
        assert query_idx.dtype == np.int64 and gallery_idx.dtype == np.int64
        assert np.intersect1d(query_idx, gallery_idx).size == 0
        np.testing.assert_array_equal(
            np.sort(np.concatenate([query_idx, gallery_idx])), np.arange(PIDS.size)
        )
        assert sorted(PIDS[gallery_idx].tolist()) == sorted(set(PIDS.tolist()))
        assert not {9, 42} & set(PIDS[query_idx].tolist())
    galleries = {tuple(g) for _, g in splits}
    assert len(galleries) > 1  # 3*2*4*5*2 = 240 possible galleries: 10 equal is ~impossible


def test_vehicleid_split_indices_deterministic():
    first = vehicleid_split_indices(PIDS, num_splits=4, seed=5)
    again = vehicleid_split_indices(PIDS.tolist(), num_splits=4, seed=5)
    prefix = vehicleid_split_indices(PIDS, num_splits=2, seed=5)
    other_seed = vehicleid_split_indices(PIDS, num_splits=4, seed=6)
    for (qa, ga), (qb, gb) in zip(first, again):
        np.testing.assert_array_equal(qa, qb)
        np.testing.assert_array_equal(ga, gb)
    for (_, ga), (_, gb) in zip(first, prefix):
        np.testing.assert_array_equal(ga, gb)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other_seed))


def test_vehicleid_split_is_uniform_within_an_identity():
    pids = np.zeros(4, dtype=np.int64)
    picks = [g[0] for _, g in vehicleid_split_indices(pids, num_splits=400, seed=1)]
    counts = np.bincount(picks, minlength=4)
    assert counts.min() > 60  # expected 100 each; a bias towards any position fails


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_vehicleid_metrics_is_mean_over_splits(metric):
    rng = np.random.default_rng(2)
    pids = np.repeat(np.arange(8), rng.integers(1, 5, 8))
    feats = rng.normal(size=(pids.size, 6)) + 0.8 * rng.normal(size=(8, 6))[pids]
    got = vehicleid_metrics(feats, pids, num_splits=3, seed=11, max_rank=12, metric=metric)

    refs = []
    for query_idx, gallery_idx in vehicleid_split_indices(pids, num_splits=3, seed=11):
        q, g = feats[query_idx], feats[gallery_idx]
        if metric == "cosine":
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            gn = g / np.linalg.norm(g, axis=1, keepdims=True)
            distmat = 1 - qn @ gn.T
        else:
            distmat = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
        refs.append(
            reference_rank_metrics(
                distmat,
                pids[query_idx],
                pids[gallery_idx],
                np.zeros(query_idx.size),
                np.ones(gallery_idx.size),
                max_rank=12,
            )
        )
    assert got["num_splits"] == 3
    assert got["num_valid_queries"] == pids.size - 8
    assert got["num_skipped_queries"] == 0
    assert got["mAP"] == pytest.approx(np.mean([r["mAP"] for r in refs]), abs=TOL)
    np.testing.assert_allclose(got["cmc"], np.mean([r["cmc"] for r in refs], axis=0), atol=TOL)


def test_summarize():
    metrics = {"mAP": np.float64(0.25), "cmc": np.linspace(0.1, 1.0, 10)}
    summary = summarize(metrics)
    assert summary == pytest.approx({"mAP": 0.25, "R1": 0.1, "R5": 0.5, "R10": 1.0})
    assert all(type(v) is float for v in summary.values())
    with pytest.raises(ValueError, match="max_rank"):
        summarize(metrics, ranks=(1, 20))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    rng = np.random.default_rng(0)
    nq, ng = 300, 900
    q_ids, g_ids = rng.integers(0, 40, nq), rng.integers(0, 40, ng)
    q_cams, g_cams = rng.integers(0, 5, nq), rng.integers(0, 5, ng)
    for distmat in (rng.random((nq, ng)), rng.integers(0, 6, (nq, ng)).astype(np.float32)):
        cpu = rank_metrics(distmat, q_ids, g_ids, q_cams, g_cams, chunk_size=64)
        cuda = rank_metrics(
            torch.from_numpy(distmat).cuda(),
            torch.from_numpy(q_ids).cuda(),
            g_ids,
            q_cams,
            torch.from_numpy(g_cams).cuda(),
            chunk_size=64,
        )
        assert_metrics_close(cuda, cpu, tol=1e-9)

    feats = rng.normal(size=(500, 32))
    pids = rng.integers(0, 100, 500)
    torch.testing.assert_close(
        pairwise_distance(torch.from_numpy(feats).cuda(), feats).cpu(),
        pairwise_distance(feats, feats),
    )
    cpu = vehicleid_metrics(feats, pids, num_splits=3)
    cuda = vehicleid_metrics(torch.from_numpy(feats).cuda(), torch.from_numpy(pids).cuda(), 3)
    assert_metrics_close(cuda, cpu, tol=1e-9)
