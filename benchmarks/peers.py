"""The peers the benchmark suite measures the project against, written here on purpose.

Each is the plain way a user of the field would do the same job, independent of the
project's code, so that the suite compares like with like in one run:

- ``knn_floor``: exact k-NN by blocked matmul + top-k, the floor of any Jaccard distance.
- ``dense_jaccard``: Cluster Contrast's ``compute_jaccard_distance`` (dense N x N float32
  V, V_qe and distance, Python loops per row), with k1 + 1 neighbours per list as the
  project and the original re-ranking code use; scikit-learn DBSCAN then runs on the
  dense matrix (``dense_pseudo_labels``).
- ``numpy_rank_metrics``: per-query NumPy mAP / CMC, the loop of the Market-1501 / VeRi
  evaluation scripts.
- ``plain_reid_step``: one CLIP-ReID-like training step (CE on pseudo-labels + batch-hard
  triplet) of a bare image encoder, the loop a user would write instead of the method.
- ``copy_bandwidth``: bytes/s of a large memory copy, for the N^2-bytes write floor.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def knn_floor(features: Tensor, k: int, block: int = 1024) -> Tensor:
    """(N, k) int64 nearest neighbours by cosine (self included): blocked matmul + top-k."""
    x = F.normalize(features.float(), dim=1)
    out = torch.empty((x.shape[0], k), dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], block):
        out[start : start + block] = (x[start : start + block] @ x.T).topk(k, dim=1).indices
    return out


def _reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def dense_jaccard(features: Tensor, k1: int = 30, k2: int = 6) -> np.ndarray:
    """(N, N) float32 Jaccard distance, Cluster Contrast's algorithm and data layout."""
    x = F.normalize(features.float(), dim=1)
    n = x.shape[0]
    # Neighbour lists with the point itself first (k1 + 1 entries), as faiss would give.
    sim = []
    for start in range(0, n, 1024):
        s = x[start : start + 1024] @ x.T
        s[torch.arange(s.shape[0]), torch.arange(start, start + s.shape[0])] = float("inf")
        sim.append(s.topk(k1 + 1, dim=1).indices)
    initial_rank = torch.cat(sim).numpy()
    k_half = int(np.around(k1 / 2))
    nn_k1 = [_reciprocal(initial_rank, i, k1) for i in range(n)]
    nn_k1_half = [_reciprocal(initial_rank, i, k_half) for i in range(n)]
    v = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        reciprocal = nn_k1[i]
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_set = nn_k1_half[candidate]
            if len(np.intersect1d(candidate_set, reciprocal)) > 2 / 3 * len(candidate_set):
                expansion = np.append(expansion, candidate_set)
        expansion = np.unique(expansion)
        dist = 2 - 2 * (x[i].unsqueeze(0) @ x[expansion].T)
        v[i, expansion] = F.softmax(-dist, dim=1).view(-1).numpy()
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i, :] = np.mean(v[initial_rank[i, :k2], :], axis=0)
        v = v_qe
        del v_qe
    inverted = [np.where(v[:, i] != 0)[0] for i in range(n)]
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        shared = np.zeros((1, n), dtype=np.float32)
        columns = np.where(v[i, :] != 0)[0]
        for col in columns:
            rows = inverted[col]
            shared[0, rows] = shared[0, rows] + np.minimum(v[i, col], v[rows, col])
        jaccard[i] = 1 - shared / (2 - shared)
    del inverted, v
    jaccard[jaccard < 0] = 0.0
    return jaccard


def dense_pseudo_labels(
    features: Tensor, eps: float = 0.6, min_samples: int = 4, k1: int = 30, k2: int = 6
) -> np.ndarray:
    """Cluster Contrast's pseudo-labels: dense Jaccard, then DBSCAN on the dense matrix."""
    from sklearn.cluster import DBSCAN

    distances = dense_jaccard(features, k1, k2)
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distances)


def numpy_rank_metrics(
    distmat: np.ndarray,
    q_ids: np.ndarray,
    g_ids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
    max_rank: int = 50,
) -> dict[str, float]:
    """mAP and CMC per query in NumPy (the classic ``eval_func``): rank 1, 5, 10."""
    indices = np.argsort(distmat, axis=1)
    matches = (g_ids[indices] == q_ids[:, None]).astype(np.int32)
    all_cmc, all_ap = [], []
    for q in range(distmat.shape[0]):
        order = indices[q]
        keep = ~((g_ids[order] == q_ids[q]) & (g_cams[order] == q_cams[q]))
        raw = matches[q][keep]
        if not raw.any():
            continue
        cmc = raw.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        hits = raw.sum()
        precision = raw.cumsum() / (np.arange(len(raw)) + 1.0)
        all_ap.append((precision * raw).sum() / hits)
    cmc = np.asarray(all_cmc).astype(np.float64).mean(0)
    return {"mAP": float(np.mean(all_ap)), "R1": cmc[0], "R5": cmc[4], "R10": cmc[9]}


class PlainReid(nn.Module):
    """A bare image encoder with a linear pseudo-label classifier (CLIP-ReID's stage 2
    without prompts): features for the triplet, logits for the cross-entropy."""

    def __init__(self, encoder: nn.Module, dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(dim, num_classes, bias=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.encoder(images).float()
        return features, self.classifier(F.normalize(features, dim=1))


def batch_hard_triplet(features: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss on L2-normalised features."""
    x = F.normalize(features, dim=1)
    dist = (2 - 2 * x @ x.T).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    hardest_positive = (dist * same).max(1).values
    hardest_negative = dist.masked_fill(same, float("inf")).min(1).values
    return F.relu(hardest_positive - hardest_negative + margin).mean()


def plain_reid_step(
    model: PlainReid, optimizer: torch.optim.Optimizer, images: Tensor, labels: Tensor, amp: bool
) -> Tensor:
    """One step: CE (temperature 0.05 on cosine logits) + batch-hard triplet, backward, Adam."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        features, logits = model(images)
    loss = F.cross_entropy(logits.float() / 0.05, labels) + batch_hard_triplet(features, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 28, repeats: int = 5) -> float:
    """Best bytes/s of copying an ``nbytes`` uint8 buffer (read + write counted once)."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return nbytes / best
