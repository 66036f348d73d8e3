"""The training objective: loss terms (Eq. 6-8), cluster memories, Eq. 9 and its routing."""

from viewcoop_core.losses.memory import ClusterMemory, cluster_centroids, momentum_update
from viewcoop_core.losses.objective import ViewCoOpLoss
from viewcoop_core.losses.terms import (
    batch_hard_triplet,
    cross_modal_infonce,
    cross_modal_loss,
    graph_constraint_loss,
    text_cluster_loss,
)

__all__ = [
    "ClusterMemory",
    "ViewCoOpLoss",
    "batch_hard_triplet",
    "cluster_centroids",
    "cross_modal_infonce",
    "cross_modal_loss",
    "graph_constraint_loss",
    "momentum_update",
    "text_cluster_loss",
]
