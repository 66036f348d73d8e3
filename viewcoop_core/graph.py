"""Modal mutual dictionary (paper Eq. 3) and cross-modal mutual graph (Eq. 4).

Inputs are the two DBSCAN partitions of the N training samples: ``y_img`` (clusters
of the image features) and ``y_txt`` (clusters of the ViewCoOp text features), 1-D
integer arrays where ``-1`` marks an outlier.

Eq. 3, with the outlier rule made explicit::

    Dic[a, b] = [y_img[a] == y_img[b] and y_img[a] != -1]
              + [y_txt[a] == y_txt[b] and y_txt[a] != -1]          in {0, 1, 2}, int8

An outlier is never "in the same cluster" as anything, not even another outlier
(DBSCAN's -1 is "no cluster", not a cluster). The diagonal follows the same rule, so
``Dic[a, a]`` is the number of modalities in which ``a`` is not an outlier; the graph
drops self pairs by default (``graph_edges(..., exclude_self=True)``).

Eq. 4: an edge (a, b) exists iff ``Dic[a, b]`` is in the accepted set ``tau``. The
paper's ablation (Table 3) uses the sets {0}, {1}, {1, 2} ("1 or 2", its default and
best) and {2}; ``parse_tau`` turns config values into these sets.

The dense N x N dictionary is only needed on the clustering actor (statistics,
debugging); training asks for ``dictionary_rows`` / ``batch_dictionary``, computed
from the labels, so nothing N x N leaves the actor, and ``graph_statistics`` gets
every pair count from group sizes in O(N log N).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

OUTLIER = -1
DIC_VALUES = (0, 1, 2)

TAU_PRESETS: dict[str, frozenset[int]] = {
    "0": frozenset({0}),
    "1": frozenset({1}),
    "1or2": frozenset({1, 2}),
    "2": frozenset({2}),
}
DEFAULT_TAU = TAU_PRESETS["1or2"]

BACKENDS = ("auto", "numpy", "torch", "cupy")

# numpy/torch on the CPU: row tiles whose scratch stays in the last-level cache, so
# the second pass over a tile does not go back to DRAM. Measured with numpy on a
# 2-core EPYC at N=37,778: 4 MiB tiles ~0.3 s, 1 GiB tiles ~2.7 s.
_CPU_TILE_BYTES = 4 << 20
# cupy: each launch covers fewer than 2**31 elements, so its flat index fits int32.
_GPU_MAX_ELEMENTS_PER_LAUNCH = (1 << 31) - 1

_TAU_FORMS = (
    "a preset name ('0', '1', '1or2', '2'), an int in {0, 1, 2}, a list/tuple/set of "
    "such ints (e.g. [1, 2]), or a string '1,2' / '1 or 2'"
)


# ----------------------------------------------------------------------------- tau


def parse_tau(value: Any) -> frozenset[int]:
    """Turn a config value into the set of accepted Dic values (Eq. 4's tau).

    Accepts a preset name ("0", "1", "1or2", "2"), an int, an iterable of ints, or a
    string of ints joined by "," or "or" ("1,2", "1 or 2"). The result is a non-empty
    subset of {0, 1, 2}.

    Raises:
        TypeError: an element is not an int (bools and floats included).
        ValueError: empty, or a value outside {0, 1, 2}; the message lists the forms.
    """
    if isinstance(value, frozenset | set | list | tuple):
        items = list(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in TAU_PRESETS:
            return TAU_PRESETS[text]
        items = [part.strip() for part in text.replace("or", ",").split(",")]
    else:
        items = [value]
    if not items:
        raise ValueError(f"tau must not be empty; expected {_TAU_FORMS}")
    return frozenset(_parse_tau_item(item, value) for item in items)


def _parse_tau_item(item: Any, whole: Any) -> int:
    # bool is an int subclass: True would silently mean {1}.
    if isinstance(item, bool | np.bool_) or not isinstance(item, int | np.integer | str):
        raise TypeError(f"invalid tau {whole!r}: {item!r} is not an int; expected {_TAU_FORMS}")
    if isinstance(item, str):
        if not item.lstrip("-").isdigit():
            raise ValueError(f"invalid tau {whole!r}; expected {_TAU_FORMS}")
        item = int(item)
    if int(item) not in DIC_VALUES:
        raise ValueError(
            f"invalid tau {whole!r}: {item!r} is not a Dic value in {set(DIC_VALUES)}; "
            f"expected {_TAU_FORMS}"
        )
    return int(item)


def tau_name(tau: Any) -> str:
    """Stable name of a tau setting, e.g. {1, 2} -> "1or2" (matches the preset names)."""
    return "or".join(str(v) for v in sorted(parse_tau(tau)))


# -------------------------------------------------------------------------- arrays


def _is_cupy(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def _check_labels(y: Any, name: str, n: int | None = None) -> None:
    """Raise unless ``y`` is a 1-D label vector (of length ``n`` if given) with values >= -1."""
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(
            f"{name} has {y.shape[0]} labels but y_img has {n}; both label all N samples"
        )
    if y.shape[0] == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < OUTLIER:
        raise ValueError(f"{name} has label {lo}; labels are cluster ids >= 0, or -1 for outliers")
    if hi > np.iinfo(np.int32).max:
        raise ValueError(f"{name} has label {hi}; cluster ids must fit in int32")


def _validate_pair(y_img: Any, y_txt: Any) -> None:
    _check_labels(y_img, "y_img")
    _check_labels(y_txt, "y_txt", n=y_img.shape[0])


def _index_tensor(index: Any, device: torch.device) -> torch.Tensor:
    """[K] int64 index tensor on ``device`` from ints, a range, a list, numpy or torch."""
    if not isinstance(index, torch.Tensor):
        index = torch.as_tensor(np.asarray(index))
    return index.to(device=device, dtype=torch.long).reshape(-1)


def _numpy_labels(y: Any, name: str) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    elif _is_cupy(y):
        y = y.get()
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer cluster labels, got dtype {y.dtype}")
    return y


def _torch_labels(y: Any, name: str, device: torch.device | None) -> torch.Tensor:
    if _is_cupy(y):
        y = torch.from_dlpack(y)
    elif not isinstance(y, torch.Tensor):
        y = torch.from_numpy(_numpy_labels(y, name))
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer cluster labels, got dtype {y.dtype}")
    return y if device is None else y.to(device)


def _label_device(*ys: Any) -> torch.device:
    """Device of the first torch tensor among ``ys`` (labels follow it), else CPU."""
    for y in ys:
        if isinstance(y, torch.Tensor):
            return y.device
    return torch.device("cpu")


def _column_keys(y: Any) -> Any:
    """Labels with outliers re-coded to -2, for the column side of a comparison.

    The row side keeps -1, so ``row_label == column_key`` is exactly Eq. 3's "same
    non-outlier cluster" in one comparison: a row outlier (-1) meets ids >= 0 or -2,
    a column outlier (-2) meets ids >= 0 or -1, and neither ever matches.
    Works on numpy, torch and cupy arrays alike; the dtype is kept.
    """
    if isinstance(y, torch.Tensor):
        return torch.where(y == OUTLIER, OUTLIER - 1, y)
    return y - (y == OUTLIER).astype(y.dtype)


def _rows_per_tile(n: int, tile_bytes: int) -> int:
    return max(1, tile_bytes // max(n, 1))


# ------------------------------------------------------------------ Dic backends


def _cupy_or_raise() -> Any:
    """Import CuPy and check that a CUDA device is visible; raise an actionable error if not."""
    try:
        import cupy
    except ImportError as err:
        raise RuntimeError(
            "backend='cupy' needs CuPy: pip install 'viewcoop[gpu-cu12]' (or gpu-cu13), "
            "or use backend='numpy' / 'torch'"
        ) from err
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError when there is no driver at all
        raise RuntimeError(f"backend='cupy' found no usable CUDA device ({err})") from err
    if n_devices == 0:
        raise RuntimeError("backend='cupy' found no CUDA device; use backend='numpy' or 'torch'")
    return cupy


def _cupy_usable() -> bool:
    try:
        _cupy_or_raise()
    except RuntimeError:
        return False
    return True


def _resolve_backend(backend: str, y_img: Any, y_txt: Any) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown mutual-dictionary backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    if _cupy_usable():
        chosen, why = "cupy", "CuPy is importable and a CUDA device is present"
    elif any(isinstance(y, torch.Tensor) and y.is_cuda for y in (y_img, y_txt)):
        # Labels already on a GPU without CuPy: stay there instead of copying to host.
        chosen, why = "torch", "no CuPy, labels are CUDA tensors"
    else:
        chosen, why = "numpy", "no CuPy with a CUDA device"
    logger.info("mutual_dictionary backend=auto -> %s (%s)", chosen, why)
    return chosen


def _dictionary_numpy(y_img: np.ndarray, y_txt: np.ndarray, tile_bytes: int) -> np.ndarray:
    n = y_img.shape[0]
    yi, yt = y_img.astype(np.int32), y_txt.astype(np.int32)
    ki, kt = _column_keys(yi), _column_keys(yt)
    dic = np.empty((n, n), dtype=np.int8)
    rows = _rows_per_tile(n, tile_bytes)
    scratch = np.empty((min(rows, n), n), dtype=np.bool_)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        tile, same_txt = dic[r0:r1], scratch[: r1 - r0]
        # bool and int8 share a byte layout (0/1): the image comparison is written
        # straight into the output and the text one is added as int8 (a same-dtype
        # add is ~1.5x faster than a mixed bool/int8 one), so one scratch tile is the
        # only temporary.
        np.equal(yi[r0:r1, None], ki[None, :], out=tile.view(np.bool_))
        np.equal(yt[r0:r1, None], kt[None, :], out=same_txt)
        np.add(tile, same_txt.view(np.int8), out=tile)
    return dic


def _dictionary_torch(y_img: torch.Tensor, y_txt: torch.Tensor, tile_bytes: int) -> torch.Tensor:
    n = y_img.shape[0]
    yi, yt = y_img.to(torch.int32), y_txt.to(torch.int32)
    ki, kt = _column_keys(yi), _column_keys(yt)
    dic = torch.empty((n, n), dtype=torch.int8, device=yi.device)
    rows = _rows_per_tile(n, tile_bytes)
    scratch = torch.empty((min(rows, n), n), dtype=torch.bool, device=yi.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        tile, same_txt = dic[r0:r1], scratch[: r1 - r0]
        torch.eq(yi[r0:r1, None], ki[None, :], out=tile.view(torch.bool))
        torch.eq(yt[r0:r1, None], kt[None, :], out=same_txt)
        tile.add_(same_txt.view(torch.int8))  # as in numpy; ~2x faster than bool
    return dic


@functools.lru_cache(maxsize=1)
def _cupy_dictionary_kernel() -> Any:
    """One elementwise kernel: both comparisons, the outlier rule and the sum, int8 out.

    Called with [R, 1] row labels and [1, N] column labels, CuPy broadcasts them to
    the [R, N] output tile, so each thread reads four int32 and writes one byte.
    """
    cupy = _cupy_or_raise()
    return cupy.ElementwiseKernel(
        "int32 img_row, int32 txt_row, int32 img_col, int32 txt_col",
        "int8 dic",
        "dic = (signed char)((img_row == img_col && img_row >= 0)"
        " + (txt_row == txt_col && txt_row >= 0));",
        "viewcoop_mutual_dictionary",
    )


def _to_cupy_labels(y: Any, name: str) -> Any:
    cupy = _cupy_or_raise()
    if _is_cupy(y):
        return y
    if isinstance(y, torch.Tensor) and y.is_cuda:
        return cupy.from_dlpack(y.detach())
    return cupy.asarray(_numpy_labels(y, name))


def _dictionary_cupy(y_img: Any, y_txt: Any, tile_bytes: int) -> Any:
    cupy = _cupy_or_raise()
    kernel = _cupy_dictionary_kernel()
    n = y_img.shape[0]
    yi, yt = y_img.astype(cupy.int32, copy=False), y_txt.astype(cupy.int32, copy=False)
    dic = cupy.empty((n, n), dtype=cupy.int8)
    # The kernel writes straight into the output (no scratch); tiles only bound the
    # elements per launch.
    rows = _rows_per_tile(n, min(tile_bytes, _GPU_MAX_ELEMENTS_PER_LAUNCH))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        kernel(yi[r0:r1, None], yt[r0:r1, None], yi[None, :], yt[None, :], dic[r0:r1])
    return dic


def mutual_dictionary(
    y_img: Any, y_txt: Any, backend: str = "auto", max_tile_bytes: int = 1 << 30
) -> Any:
    """The dense modal mutual dictionary Dic of Eq. 3.

    Args:
        y_img, y_txt: [N] integer cluster labels (-1 = outlier) as numpy arrays, torch
            tensors (CPU or CUDA) or cupy arrays.
        backend: "numpy" (CPU, row tiles), "torch" (row tiles on the labels' device:
            CUDA tensors stay on the GPU), "cupy" (one fused elementwise kernel per
            row tile) or "auto" (cupy when importable with a CUDA device, else torch
            for CUDA tensor labels, else numpy; the choice is logged). An explicit
            backend that is unavailable raises RuntimeError, never falls back.
        max_tile_bytes: upper bound on the scratch memory of one row tile (numpy /
            torch: a bool tile of rows x N; cupy writes straight into the output, so
            it bounds the elements per kernel launch). numpy and torch use smaller,
            cache-sized tiles when this bound allows.

    Returns:
        [N, N] int8 Dic in {0, 1, 2}: a numpy array, torch tensor or cupy array
        according to the backend. The diagonal holds the number of modalities in
        which the sample is not an outlier.
    """
    if max_tile_bytes < 1:
        raise ValueError(f"max_tile_bytes must be >= 1, got {max_tile_bytes}")
    backend = _resolve_backend(backend, y_img, y_txt)
    if backend == "numpy":
        yi, yt = _numpy_labels(y_img, "y_img"), _numpy_labels(y_txt, "y_txt")
        _validate_pair(yi, yt)
        return _dictionary_numpy(yi, yt, min(max_tile_bytes, _CPU_TILE_BYTES))
    if backend == "torch":
        device = _label_device(y_img, y_txt)
        yi, yt = _torch_labels(y_img, "y_img", device), _torch_labels(y_txt, "y_txt", device)
        _validate_pair(yi, yt)
        tile = max_tile_bytes if yi.is_cuda else min(max_tile_bytes, _CPU_TILE_BYTES)
        return _dictionary_torch(yi, yt, tile)
    yi, yt = _to_cupy_labels(y_img, "y_img"), _to_cupy_labels(y_txt, "y_txt")
    if yi.dtype.kind not in "iu" or yt.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtypes {yi.dtype} and {yt.dtype}")
    _validate_pair(yi, yt)
    return _dictionary_cupy(yi, yt, max_tile_bytes)


# ------------------------------------------------------------- rows for training


def dictionary_rows(y_img: Any, y_txt: Any, rows: Any, cols: Any = None) -> torch.Tensor:
    """Rows of Dic computed from the labels alone, on the labels' device.

    Args:
        y_img, y_txt: [N] integer labels (numpy, torch or cupy; -1 = outlier).
        rows: [B] sample indices (ints, list, numpy or torch).
        cols: optional [M] sample indices; all N columns when None.

    Returns:
        [B, M] int8 tensor, ``Dic[rows][:, cols]``; M = N when ``cols`` is None.
    """
    device = _label_device(y_img, y_txt)
    yi, yt = _torch_labels(y_img, "y_img", device), _torch_labels(y_txt, "y_txt", device)
    _validate_pair(yi, yt)
    yi, yt = yi.to(torch.int32), yt.to(torch.int32)  # unsigned dtypes cannot hold -2 keys
    row_idx = _index_tensor(rows, device)
    yi_r, yt_r = yi[row_idx], yt[row_idx]
    if cols is not None:
        col_idx = _index_tensor(cols, device)
        yi, yt = yi[col_idx], yt[col_idx]
    same_img = yi_r[:, None] == _column_keys(yi)[None, :]
    same_txt = yt_r[:, None] == _column_keys(yt)[None, :]
    return same_img.to(torch.int8) + same_txt.to(torch.int8)


def batch_dictionary(y_img_b: Any, y_txt_b: Any) -> torch.Tensor:
    """In-batch Dic: [B] labels of the batch samples -> [B, B] int8 on their device."""
    n = len(y_img_b)
    return dictionary_rows(y_img_b, y_txt_b, torch.arange(n))


# ----------------------------------------------------------------------- graph


def graph_edges(
    dic: Any, tau: Any = DEFAULT_TAU, exclude_self: bool = True, rows: Any = None
) -> Any:
    """Edges of the cross-modal mutual graph, Eq. 4: ``Dic[a, b] in tau``.

    Args:
        dic: [B, M] int8 Dic (numpy, torch or cupy), dense or a row block.
        tau: accepted Dic values, anything ``parse_tau`` takes.
        exclude_self: drop the self pairs (a, a). Dic keeps its diagonal (Eq. 3 holds
            there too); the graph is what losses read, and a sample is not its own
            neighbour.
        rows: for a row block ``dic = Dic[rows]``, the [B] sample index of each row,
            so its self pair is (k, rows[k]). Needed with ``exclude_self`` unless dic
            is square (then row k is sample k).

    Returns:
        [B, M] bool array of the same library and device as ``dic``.
    """
    accepted = parse_tau(tau)
    rejected = set(DIC_VALUES) - accepted
    if not rejected:
        edges = dic >= 0
    elif len(accepted) == 1:
        edges = dic == next(iter(accepted))
    else:  # two accepted values: one pass against the single rejected one
        edges = dic != next(iter(rejected))
    if exclude_self:
        _clear_self_pairs(edges, rows)
    return edges


def _clear_self_pairs(edges: Any, rows: Any) -> None:
    n_rows, n_cols = edges.shape
    if rows is None:
        if n_rows != n_cols:
            raise ValueError(
                f"graph_edges got a {n_rows} x {n_cols} row block with exclude_self=True: "
                "pass rows= (the sample index of each row) or exclude_self=False"
            )
        rows = range(n_rows)
    if isinstance(edges, torch.Tensor):
        edges[torch.arange(n_rows, device=edges.device), _index_tensor(rows, edges.device)] = False
    elif _is_cupy(edges):
        import cupy

        edges[cupy.arange(n_rows), cupy.asarray(np.asarray(rows))] = False
    else:
        edges[np.arange(n_rows), np.asarray(rows)] = False


# -------------------------------------------------------------------- statistics


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
        cluster" as edges). A ratio with a zero denominator is 0.0.
    """
    yi, yt = _numpy_labels(y_img, "y_img"), _numpy_labels(y_txt, "y_txt")
    _validate_pair(yi, yt)
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
        ids = _numpy_labels(true_ids, "true_ids")
        _check_labels(ids, "true_ids", n=n)
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
    tp_by_value = _pairs_by_dic_value(tp_img, tp_txt, _pairs_within_groups(yi, yt, ids), same_id)
    stats = {
        "same_id_pairs": float(same_id),
        "precision_img": _ratio(tp_img, same_img),
        "recall_img": _ratio(tp_img, same_id),
        "precision_txt": _ratio(tp_txt, same_txt),
        "recall_txt": _ratio(tp_txt, same_id),
    }
    for tau in tau_sets:
        edges = sum(by_value[v] for v in tau)
        tp = sum(tp_by_value[v] for v in tau)
        stats[f"precision_tau{tau_name(tau)}"] = _ratio(tp, edges)
        stats[f"recall_tau{tau_name(tau)}"] = _ratio(tp, same_id)
    return stats
