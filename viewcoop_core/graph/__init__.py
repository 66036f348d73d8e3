"""Modal mutual dictionary (paper Eq. 3) and cross-modal mutual graph (Eq. 4, 5).

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

``dictionary.py`` (Eq. 3), ``edges.py`` (Eq. 4-5), ``statistics.py`` (pair counts and
edge quality); tau values are parsed by ``viewcoop_core.vocabulary.parse_tau``.
"""

from viewcoop_core.graph.dictionary import (
    BACKENDS,
    batch_dictionary,
    dictionary_rows,
    mutual_dictionary,
)
from viewcoop_core.graph.edges import graph_edges
from viewcoop_core.graph.labels import OUTLIER
from viewcoop_core.graph.statistics import graph_statistics
from viewcoop_core.vocabulary import DEFAULT_TAU, DIC_VALUES, TAU_PRESETS, parse_tau, tau_name

__all__ = [
    "BACKENDS",
    "DEFAULT_TAU",
    "DIC_VALUES",
    "OUTLIER",
    "TAU_PRESETS",
    "batch_dictionary",
    "dictionary_rows",
    "graph_edges",
    "graph_statistics",
    "mutual_dictionary",
    "parse_tau",
    "tau_name",
]
