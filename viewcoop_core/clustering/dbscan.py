"""DBSCAN on a sparse precomputed distance matrix, behind one seam of backends.

``dbscan(..., backend=...)``: ``"sklearn"`` (the reference), ``"torch"`` (exact, sparse,
CPU or CUDA, label-for-label equal to scikit-learn), ``"cuml"`` (dense device matrix,
N^2 floats; imported lazily, only where installed) and ``"auto"`` (logged choice). An
explicit backend that cannot run here raises; ``auto`` never picks one that cannot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from viewcoop_core.vocabulary import AUTO, DBSCAN_BACKENDS

logger = logging.getLogger(__name__)

BACKENDS = DBSCAN_BACKENDS


def _cuml_unavailable_reason() -> str | None:
    """Why the cuML backend cannot run here, or None when it can."""
    # Checked first: importing cuml without a device can fail in odd ways, and is slow.
    if not torch.cuda.is_available():
        return "cuml needs a CUDA device and torch sees none"
    try:
        import cuml.cluster  # noqa: F401
    except (ImportError, RuntimeError, OSError) as err:  # OSError, RuntimeError: CUDA libraries
        return f"cuml does not import ({type(err).__name__}: {err})"
    return None


def _sklearn_unavailable_reason() -> str | None:
    try:
        import sklearn.cluster  # noqa: F401
    except ImportError as err:
        return f"scikit-learn does not import ({err})"
    return None


def available_backends() -> list[str]:
    """Names of the DBSCAN backends that can run in this process, in ``BACKENDS`` order."""
    reasons = {
        "sklearn": _sklearn_unavailable_reason(),
        "torch": None,
        "cuml": _cuml_unavailable_reason(),
    }
    return [name for name in BACKENDS if reasons[name] is None]


def _resolve_backend(backend: str, n: int) -> str:
    """Map a requested backend name to one that can run; raise if an explicit one cannot."""
    if backend not in (*BACKENDS, AUTO):
        raise ValueError(
            f"unknown DBSCAN backend {backend!r}; allowed: auto, {', '.join(BACKENDS)}"
        )
    if backend == AUTO:
        return _auto_backend(n)
    reason = {
        "sklearn": _sklearn_unavailable_reason,
        "torch": lambda: None,
        "cuml": _cuml_unavailable_reason,
    }[backend]()
    if reason is not None:
        raise RuntimeError(
            f"DBSCAN backend {backend!r} is unavailable: {reason}. "
            f"Available here: {available_backends()}; cuml comes with the extra "
            f"'viewcoop[gpu-cu12]' or 'viewcoop[gpu-cu13]'."
        )
    return backend


def _auto_backend(n: int) -> str:
    """The exact sparse torch backend on CUDA (cuML's dense N x N input only when asked
    for by name); scikit-learn on the CPU."""
    if torch.cuda.is_available():
        logger.info("DBSCAN backend auto -> torch (CUDA; sparse, exact)")
        return "torch"
    logger.info("DBSCAN backend auto -> sklearn (no CUDA device)")
    return "sklearn"


@dataclass(frozen=True)
class _EpsGraph:
    """The eps-neighbourhoods scikit-learn's DBSCAN sees for a sparse precomputed matrix.

    src, dst: (E,) int64 numpy, off-diagonal stored pairs with distance <= eps (row src
    lists dst); self_neighbour: (N,) bool, whether i counts itself (its diagonal value,
    0 when not stored, is <= eps).
    """

    src: np.ndarray
    dst: np.ndarray
    self_neighbour: np.ndarray

    @property
    def num_nodes(self) -> int:
        return self.self_neighbour.shape[0]

    def is_symmetric(self) -> bool:
        n = self.num_nodes
        adjacency = sp.csr_matrix(
            (np.ones(self.src.size, dtype=np.int8), (self.src, self.dst)), shape=(n, n)
        )
        return (adjacency != adjacency.T).nnz == 0


def _eps_graph(distances: sp.csr_matrix, eps: float) -> _EpsGraph:
    """Neighbourhoods with scikit-learn's semantics: stored entries <= eps (compared in the
    matrix dtype, as sklearn does) and the point itself through its diagonal value."""
    rows = np.repeat(np.arange(distances.shape[0]), np.diff(distances.indptr))
    off_diagonal = rows != distances.indices
    within = off_diagonal & (distances.data <= eps)
    return _EpsGraph(
        src=rows[within].astype(np.int64),
        dst=distances.indices[within].astype(np.int64),
        self_neighbour=distances.diagonal() <= eps,
    )


def _rows_sorted_by_distance(distances: sp.csr_matrix) -> sp.csr_matrix:
    """The same matrix with each row's entries ordered by distance (ties by column).

    scikit-learn wants precomputed sparse rows in that order and otherwise re-sorts them
    row by row in Python (half of its DBSCAN time at N = 10,000). Labels do not depend
    on the order within a row.
    """
    rows = np.repeat(np.arange(distances.shape[0], dtype=np.int64), np.diff(distances.indptr))
    # Non-negative float32 distances order like their bit patterns; one int64 argsort.
    bits = distances.data.astype(np.float32).view(np.int32).astype(np.int64)
    order = np.argsort((rows << 32) | bits, kind="stable")
    return sp.csr_matrix(
        (distances.data[order], distances.indices[order], distances.indptr),
        shape=distances.shape,
    )


def _dbscan_sklearn(distances: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """scikit-learn DBSCAN on the sparse matrix: absent entries are not neighbours."""
    from sklearn.cluster import DBSCAN

    model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed")
    return model.fit(_rows_sorted_by_distance(distances)).labels_.astype(np.int64)


def _torch_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _connected_component_roots(n: int, src: Tensor, dst: Tensor) -> Tensor:
    """(N,) int64: the smallest node index of each node's connected component.

    Min-label propagation over a symmetric edge list with pointer jumping: a label is
    always a node of the same component with label[label] <= label, so jumping keeps it
    valid and shortens chains; the fixed point is the component minimum.
    """
    label = torch.arange(n, device=src.device)
    while True:
        hooked = label.scatter_reduce(0, src, label[dst], reduce="amin", include_self=True)
        jumped = hooked[hooked]
        while not torch.equal(jumped, hooked):
            hooked, jumped = jumped, jumped[jumped]
        if torch.equal(jumped, label):
            return label
        label = jumped


def _dbscan_torch(distances: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """Exact DBSCAN on the sparse eps-graph, label-for-label equal to scikit-learn."""
    graph = _eps_graph(distances, eps)
    if not graph.is_symmetric():
        raise ValueError(
            "the torch DBSCAN backend needs a symmetric distance matrix (neighbourhoods "
            "within eps must be mutual); symmetrise it, e.g. D.maximum(D.T), or use "
            "backend='sklearn'"
        )
    device = _torch_device()
    return dbscan_on_edges(
        torch.from_numpy(graph.src).to(device),
        torch.from_numpy(graph.dst).to(device),
        torch.from_numpy(graph.self_neighbour).to(device),
        min_samples,
    )


def dbscan_on_edges(
    src: Tensor, dst: Tensor, self_neighbour: Tensor, min_samples: int
) -> np.ndarray:
    """Exact DBSCAN from a symmetric eps-graph on its device, labels as scikit-learn's.

    sklearn grows one cluster at a time from the lowest-index unlabelled core point, so:
    clusters are numbered by their smallest core index, and a border point reachable from
    several clusters keeps the one numbered lowest.

    Args:
        src, dst: (E,) int64, both directions of every off-diagonal pair within eps.
        self_neighbour: (N,) bool, whether each point counts itself (diagonal <= eps).
        min_samples: neighbourhood size (self included) that makes a core point.

    Returns:
        (N,) int64 labels on the CPU, -1 for outliers.
    """
    n = self_neighbour.numel()
    device = self_neighbour.device
    degree = torch.bincount(src, minlength=n) + self_neighbour.long()
    is_core = degree >= min_samples
    labels = torch.full((n,), -1, dtype=torch.int64, device=device)
    if not bool(is_core.any()):
        return labels.cpu().numpy()

    core_edge = is_core[src] & is_core[dst]
    roots = _connected_component_roots(n, src[core_edge], dst[core_edge])
    core_index = is_core.nonzero().squeeze(1)
    # torch.unique sorts, so cluster ids follow the smallest core index of each cluster.
    _, cluster_of_core = torch.unique(roots[core_index], sorted=True, return_inverse=True)
    labels[core_index] = cluster_of_core

    border_edge = is_core[src] & ~is_core[dst]
    unreached = torch.iinfo(torch.int64).max
    border_label = torch.full((n,), unreached, dtype=torch.int64, device=device)
    border_label.scatter_reduce_(0, dst[border_edge], labels[src[border_edge]], reduce="amin")
    is_border = ~is_core & (border_label != unreached)
    labels[is_border] = border_label[is_border]
    return labels.cpu().numpy()


def dbscan_upper_pairs(
    n: int, rows: Tensor, cols: Tensor, distances: Tensor, eps: float, min_samples: int
) -> np.ndarray:
    """Exact DBSCAN (torch, on the tensors' device) from the upper triangle of a symmetric
    distance matrix: pairs (rows <= cols) as ``jaccard.jaccard_upper_pairs`` gives them,
    every diagonal entry present as 0. No CSR, no host round trip.

    Returns:
        (N,) int64 labels on the CPU, -1 for outliers.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    start = time.perf_counter()
    within = (rows != cols) & (distances <= eps)
    r, c = rows[within], cols[within]
    self_neighbour = torch.zeros(n, dtype=torch.bool, device=rows.device)
    diagonal = rows == cols
    self_neighbour[rows[diagonal]] = distances[diagonal] <= eps
    labels = dbscan_on_edges(torch.cat([r, c]), torch.cat([c, r]), self_neighbour, min_samples)
    _log_result("torch (on device)", labels, eps, min_samples, time.perf_counter() - start)
    return labels


def _dbscan_cuml(distances: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """cuML DBSCAN on a dense device copy of the matrix.

    Memory: N^2 float32 on the GPU (5.3 GiB at N = 37,778; 48 GiB at N = 113,346); for
    large N prefer the "torch" backend, which stays sparse.
    """
    import cupy as cp
    from cuml.cluster import DBSCAN

    n = distances.shape[0]
    coo = distances.tocoo()
    # Absent pairs must not be neighbours: any value above eps (and above 1) will do.
    dense = cp.full((n, n), 2.0 * max(eps, 1.0), dtype=cp.float32)
    dense[cp.asarray(coo.row), cp.asarray(coo.col)] = cp.asarray(coo.data, dtype=cp.float32)
    # sklearn counts a point as its own neighbour through its diagonal (0 when absent).
    diagonal = cp.asarray(distances.diagonal(), dtype=cp.float32)
    dense[cp.arange(n), cp.arange(n)] = diagonal
    model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed", output_type="numpy")
    labels = np.asarray(model.fit_predict(dense)).astype(np.int64)
    del dense
    return labels


_BACKEND_FUNCTIONS: dict[str, Callable[[sp.csr_matrix, float, int], np.ndarray]] = {
    "sklearn": _dbscan_sklearn,
    "torch": _dbscan_torch,
    "cuml": _dbscan_cuml,
}


def _canonical_csr(distances: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    if not sp.issparse(distances) or distances.ndim != 2:
        raise TypeError(
            f"distances must be a scipy.sparse N x N matrix, got {type(distances).__name__}"
        )
    if distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances must be square, got shape {distances.shape}")
    csr = sp.csr_matrix(distances)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr


def dbscan(
    distances: sp.spmatrix | sp.sparray,
    eps: float = 0.6,
    min_samples: int = 4,
    backend: str = AUTO,
) -> np.ndarray:
    """DBSCAN on a sparse precomputed distance matrix.

    Stored entries are distances; absent entries mean "not neighbours". A point is its
    own neighbour (its diagonal value, 0 when absent, is compared with eps) and
    ``min_samples`` counts it, as in scikit-learn.

    Args:
        distances: (N, N) scipy sparse matrix, non-negative.
        eps: neighbourhood radius, inclusive (distance <= eps), > 0.
        min_samples: neighbourhood size (self included) that makes a core point, >= 1.
        backend: "auto", "sklearn", "torch" or "cuml" (see ``available_backends``).

    Returns:
        (N,) int64 labels 0..C-1, -1 for outliers.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    csr = _canonical_csr(distances)
    n = csr.shape[0]
    name = _resolve_backend(backend, n)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    start = time.perf_counter()
    labels = _BACKEND_FUNCTIONS[name](csr, eps, min_samples)
    _log_result(name, labels, eps, min_samples, time.perf_counter() - start)
    return labels


def _log_result(
    name: str, labels: np.ndarray, eps: float, min_samples: int, seconds: float
) -> None:
    n = labels.size
    num_clusters = int(labels.max()) + 1 if n else 0
    num_outliers = int((labels == -1).sum())
    logger.info(
        "DBSCAN backend=%s N=%d eps=%g min_samples=%d: %d clusters, %d outliers, %.2f s",
        name,
        n,
        eps,
        min_samples,
        num_clusters,
        num_outliers,
        seconds,
    )
    if n and num_outliers == n:
        logger.warning(
            "DBSCAN found no cluster: all %d points are outliers (eps=%g, min_samples=%d)",
            n,
            eps,
            min_samples,
        )
