"""Camera-aware proxies: an intra-camera contrast added to L_v (an option, not the paper).

With a look per camera (its own light, background, angle), an image's nearest neighbours
are mostly from its own camera and a pseudo-identity's memory row averages camera looks.
Camera-aware proxy methods (Wang et al., CAP, AAAI 2021) split every pseudo-identity into
one proxy per camera that saw it, and contrast each image only against the proxies of its
own camera: the loss then separates identities *within* a camera, where the camera's
look is shared by every candidate and cannot be what tells them apart.

``camera_proxy_labels`` turns this epoch's image pseudo-labels and the cameras into proxy
ids; ``CameraProxyMemory`` is a ``ClusterMemory`` over the proxy centroids whose
scores mask every proxy of another camera. ``loss.camera_proxies`` (a weight,
0 = off) adds it to L_v as ``L_v_cam``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from viewcoop_core.losses.memory import IGNORE_LABEL, ClusterMemory


def camera_proxy_labels(y_img: np.ndarray, camids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One proxy per (image cluster, camera) pair that occurs.

    Args:
        y_img: int [N] image pseudo-labels, -1 = outlier.
        camids: int [N] camera of each sample.

    Returns:
        proxy: int64 [N], the proxy of each sample (-1 for outliers), numbered in
        (cluster, camera) order; proxy_cams: int64 [P], the camera of each proxy.
    """
    y_img, camids = np.asarray(y_img, dtype=np.int64), np.asarray(camids, dtype=np.int64)
    if y_img.shape != camids.shape:
        raise ValueError(f"y_img {y_img.shape} and camids {camids.shape} must match")
    proxy = np.full(y_img.shape, IGNORE_LABEL, dtype=np.int64)
    valid = y_img >= 0
    if not valid.any():
        return proxy, np.zeros(0, dtype=np.int64)
    pairs, inverse = np.unique(
        np.stack([y_img[valid], camids[valid]], 1), axis=0, return_inverse=True
    )
    proxy[valid] = inverse.reshape(-1)
    return proxy, pairs[:, 1].astype(np.int64)


class CameraProxyMemory(ClusterMemory):
    """Proxy memory whose cross-entropy runs over the proxies of the sample's camera."""

    proxy_cams: Tensor

    def __init__(
        self, num_features: int, temperature: float = 0.05, momentum: float = 0.2, gather=None
    ):
        super().__init__(num_features, temperature, momentum, gather)
        self.register_buffer("proxy_cams", torch.zeros(0, dtype=torch.long), persistent=False)

    @torch.no_grad()
    def reset_proxies(self, centroids: Tensor, proxy_cams: Tensor) -> None:
        """Proxy centroids [P, D] and the camera of each proxy [P]."""
        if proxy_cams.shape != (centroids.shape[0],):
            raise ValueError(
                f"proxy_cams must be [P] = [{centroids.shape[0]}], got {tuple(proxy_cams.shape)}"
            )
        self.reset(centroids)
        self.proxy_cams = proxy_cams.to(device=self.memory.device, dtype=torch.long)

    def logits(self, features: Tensor, labels: Tensor) -> Tensor:
        """[B, P] scores against the proxies, -inf for every proxy of another camera than
        the sample's own (its proxy's camera; outliers' rows are ignored by the loss)."""
        logits = super().logits(features, labels)
        own_camera = self.proxy_cams[labels.clamp(min=0)]
        other = self.proxy_cams[None, :] != own_camera[:, None]
        return logits.masked_fill(other, float("-inf"))
