"""The cross-modal mutual graph (Eq. 4) and its positive / negative sets (Eq. 5).

Eq. 4: an edge (a, b) exists iff ``Dic[a, b]`` is in the accepted set ``tau``. The
paper's ablation (Table 3) uses the sets {0}, {1}, {1, 2} ("1 or 2", its default and
best) and {2} (``vocabulary.TAU_PRESETS``). Eq. 5: a sample's graph neighbours are
its positives, every other sample a negative; the graph drops self pairs by default.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from viewcoop_core.arrays import as_numpy
from viewcoop_core.graph.labels import index_tensor, is_cupy
from viewcoop_core.vocabulary import DEFAULT_TAU, DIC_VALUES, parse_tau


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
    if not (isinstance(dic, (np.ndarray, torch.Tensor)) or is_cupy(dic)):
        dic = as_numpy(dic, "dic")  # a list; anything else is a TypeError
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
        edges[torch.arange(n_rows, device=edges.device), index_tensor(rows, edges.device)] = False
    elif is_cupy(edges):
        import cupy

        edges[cupy.arange(n_rows), cupy.asarray(np.asarray(rows))] = False
    else:
        edges[np.arange(n_rows), np.asarray(rows)] = False


# -------------------------------------------------------------------- statistics
