"""Pair counts, edge densities and edge precision / recall of the mutual graph, from
group sizes in O(N log N): no N x N matrix (``graph_statistics``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from viewcoop_core.graph.labels import OUTLIER, check_labels, numpy_labels, validate_pair
from viewcoop_core.vocabulary import TAU_PRESETS, parse_tau, tau_name


def _pairs_within_groups(*keys: np.ndarray) -> int:
    """Ordered pairs (a != b) that agree on every key, outliers (-1 in any key) excluded.

    Sum over groups of the combined key of n * (n - 1): O(N log N), no N x N.
    """
    valid = np.ones(keys[0].shape[0], dtype=bool)
    for key in keys:
        valid &= key != OUTLIER
    if not valid.any():
        return 0
    stacked = np.stack([key[valid] for key in keys], axis=1)
    _, counts = np.unique(stacked, axis=0, return_counts=True)
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1)).sum())


def _ratio(num: int, den: int) -> float:
    # Zero denominators give 0.0 (scikit-learn's zero_division=0 convention), so a
    # degenerate epoch (no edges, no same-identity pairs) logs finite numbers.
    return float(num) / float(den) if den > 0 else 0.0


def _pairs_by_dic_value(same_img: int, same_txt: int, same_both: int, total: int) -> dict[int, int]:
    """Split ``total`` pairs by Dic value from the per-modality agreement counts.

    Inclusion-exclusion: Dic == 2 is agreement in both, Dic == 1 in exactly one.
    """
    return {
        2: same_both,
        1: same_img + same_txt - 2 * same_both,
        0: total - same_img - same_txt + same_both,
    }


def graph_statistics(
    y_img: Any,
    y_txt: Any,
    taus: Iterable[Any] = tuple(TAU_PRESETS.values()),
    true_ids: Any = None,
) -> dict[str, float]:
    """Pair counts, edge densities and (with ground truth) edge precision / recall.

    Everything is counted over ordered off-diagonal pairs (a, b), a != b, of which
    there are N * (N - 1), from group sizes of the combined label keys: O(N log N).

    Args:
        y_img, y_txt: [N] integer cluster labels (-1 = outlier).
        taus: tau settings to report (anything ``parse_tau`` takes each).
        true_ids: optional [N] true identities. The outlier rule applies to them too:
            a -1 identity (unknown / junk) is the same identity as nothing.

    Returns:
        A flat dict (MLflow-ready names; counts as floats):
        ``n``, ``pairs``, ``clusters_img``, ``clusters_txt``, ``outliers_img``,
        ``outliers_txt``, ``pairs_dic{0,1,2}`` and per tau ``edges_tau{name}``,
        ``density_tau{name}`` (edges / pairs). With ``true_ids`` also
        ``same_id_pairs`` and ``precision_tau{name}`` / ``recall_tau{name}``
        (true-positive edges / edges and / same-identity pairs), plus the same for
        the single-modality relations: ``precision_img``, ``recall_img``,
        ``precision_txt``, ``recall_txt`` ("same image cluster" / "same text
        cluster" as edges) and for the pairs one modality links and the other does not:
        ``precision_txt_only`` / ``recall_txt_only`` (same text cluster, not the same
        image cluster: the Dic 1 edges only the text adds) and ``precision_img_only`` /
        ``recall_img_only``. A ratio with a zero denominator is 0.0.
    """
    yi, yt = numpy_labels(y_img, "y_img"), numpy_labels(y_txt, "y_txt")
    validate_pair(yi, yt)
    n = yi.shape[0]
    total = n * (n - 1)
    same_img, same_txt = _pairs_within_groups(yi), _pairs_within_groups(yt)
    by_value = _pairs_by_dic_value(same_img, same_txt, _pairs_within_groups(yi, yt), total)

    stats: dict[str, float] = {
        "n": float(n),
        "pairs": float(total),
        "clusters_img": float(np.unique(yi[yi != OUTLIER]).size),
        "clusters_txt": float(np.unique(yt[yt != OUTLIER]).size),
        "outliers_img": float((yi == OUTLIER).sum()),
        "outliers_txt": float((yt == OUTLIER).sum()),
    }
    stats.update({f"pairs_dic{v}": float(c) for v, c in by_value.items()})
    tau_sets = [parse_tau(t) for t in taus]
    for tau in tau_sets:
        edges = sum(by_value[v] for v in tau)
        stats[f"edges_tau{tau_name(tau)}"] = float(edges)
        stats[f"density_tau{tau_name(tau)}"] = _ratio(edges, total)

    if true_ids is not None:
        ids = numpy_labels(true_ids, "true_ids")
        check_labels(ids, "true_ids", n=n)
        stats.update(_identity_statistics(yi, yt, ids, same_img, same_txt, by_value, tau_sets))
    return stats


def _identity_statistics(
    yi: np.ndarray,
    yt: np.ndarray,
    ids: np.ndarray,
    same_img: int,
    same_txt: int,
    by_value: Mapping[int, int],
    tau_sets: list[frozenset[int]],
) -> dict[str, float]:
    """Precision / recall of graph edges against "same true identity" pairs."""
    same_id = _pairs_within_groups(ids)
    tp_img, tp_txt = _pairs_within_groups(yi, ids), _pairs_within_groups(yt, ids)
    tp_both = _pairs_within_groups(yi, yt, ids)
    tp_by_value = _pairs_by_dic_value(tp_img, tp_txt, tp_both, same_id)
    both = by_value[2]
    stats = {
        "same_id_pairs": float(same_id),
        "precision_img": _ratio(tp_img, same_img),
        "recall_img": _ratio(tp_img, same_id),
        "precision_txt": _ratio(tp_txt, same_txt),
        "recall_txt": _ratio(tp_txt, same_id),
        # What each modality adds to the other: its pairs outside the Dic 2 ones.
        "precision_txt_only": _ratio(tp_txt - tp_both, same_txt - both),
        "recall_txt_only": _ratio(tp_txt - tp_both, same_id),
        "precision_img_only": _ratio(tp_img - tp_both, same_img - both),
        "recall_img_only": _ratio(tp_img - tp_both, same_id),
    }
    for tau in tau_sets:
        edges = sum(by_value[v] for v in tau)
        tp = sum(tp_by_value[v] for v in tau)
        stats[f"precision_tau{tau_name(tau)}"] = _ratio(tp, edges)
        stats[f"recall_tau{tau_name(tau)}"] = _ratio(tp, same_id)
    return stats
