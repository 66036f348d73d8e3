"""The ViewCoOp training objective, Eq. 9, with its gradient routing and ablation presets.

``L = L_v + L_t + L_g + L_cm`` (Eq. 9), where

* ``L_v = L_ce + L_tri``: cluster-memory cross-entropy of the image features against
  the visual centroids (:class:`~viewcoop_core.losses.memory.ClusterMemory`) plus a batch-hard
  triplet loss, both on the visual pseudo-labels y^i;
* ``L_t`` (Eq. 7): :func:`~viewcoop_core.losses.terms.text_cluster_loss`, the same
  memory cross-entropy for the text features against the text centroids with the
  text pseudo-labels y^t;
* ``L_g`` (Eq. 6): :func:`graph_constraint_loss`, on the image features, against the
  batch or (``loss.graph_scope: all``) an instance memory of all N image features;
* ``L_cm`` (Eq. 8): :func:`cross_modal_loss`, image against text features.

Gradient routing (the contract every caller relies on; stated here once). The paper updates the image encoder with L_v + L_g + L_cm and the
text side (prompt learner, meta-net, text encoder) with L_t + L_cm. One backward of
the sum gives exactly that provided the prompt's meta-net f_theta reads DETACHED image
features: then L_t reaches the image encoder through no path, L_v and L_g never touch
text features, and L_cm is the only term whose graph contains both encoders. Nothing
here detaches anything; the contract is on the prompt learner's input (``MetaNet`` in
``models/prompts/base.py`` detaches it). Presets without a text term (baseline, +cmg)
freeze the text side altogether (``ViewCoOpModel(train_text=needs_text(terms))``,
``vocabulary.needs_text``): their text features are still clustered for the graph.

Cosine-based terms normalise their inputs themselves; :class:`ViewCoOpLoss` also
normalises once per batch, because the memory cross-entropy and the triplet distance
are defined on the unit sphere (the same geometry as the cosine ranking at test time).

The presets of the paper's Table 1 (``vocabulary.LOSS_PRESETS``) choose which terms
are active.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from viewcoop_core.config import LossConfig
from viewcoop_core.losses.camera_proxies import CameraProxyMemory
from viewcoop_core.losses.memory import ClusterMemory
from viewcoop_core.losses.terms import (
    batch_hard_triplet,
    cross_modal_infonce,
    cross_modal_loss,
    graph_constraint_loss,
    text_cluster_loss,
)
from viewcoop_core.vocabulary import needs_text, parse_losses

logger = logging.getLogger(__name__)


class ViewCoOpLoss(nn.Module):
    """Eq. 9 with the active terms only, and the two cluster memories it needs.

    Output keys per term: ``v`` -> ``L_v_ce``, ``L_v_tri``; ``t`` -> ``L_t``;
    ``g`` -> ``L_g``; ``cm`` -> ``L_cm``; plus ``loss`` = their sum. Terms not enabled
    are neither computed nor returned.
    """

    def __init__(
        self,
        num_features: int,
        config: LossConfig | None = None,
        gather: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    ):
        super().__init__()
        self.config = config or LossConfig()
        self.terms = parse_losses(self.config.terms)
        self.margin = self.config.margin
        temperature, momentum = self.config.temperature, self.config.momentum
        self.image_memory = ClusterMemory(num_features, temperature, momentum, gather)
        self.text_memory = ClusterMemory(num_features, temperature, momentum, gather)
        self.proxy_memory = CameraProxyMemory(num_features, temperature, momentum, gather)
        # One row per training image (``loss.graph_scope: all``), refreshed every epoch
        # from the extracted features and momentum-updated by each batch, as the
        # cluster memories are; the rows are sample indices.
        self.instance_memory = ClusterMemory(num_features, temperature, momentum, gather)

    @property
    def graph_over_all(self) -> bool:
        """Whether L_g is active and evaluated against all N training images."""
        return self.config.graph_over_all

    def reset_instances(self, features: Tensor) -> None:
        """The instance memory of ``loss.graph_scope: all``: image features [N, D] of
        every training image, row n = sample n (normalised here)."""
        self.instance_memory.reset(features)

    @property
    def uses_camera_proxies(self) -> bool:
        return "v" in self.terms and self.config.camera_proxies > 0

    def reset_proxies(self, centroids: Tensor, proxy_cams: Tensor) -> None:
        """The camera proxies' centroids [P, D] and cameras [P] (``loss.camera_proxies``)."""
        self.proxy_memory.reset_proxies(centroids, proxy_cams)

    @property
    def needs_text(self) -> bool:
        """Whether the batch's text features are used (L_t or L_cm active)."""
        return needs_text(self.terms)

    @property
    def text_targets_are_image_clusters(self) -> bool:
        return self.config.text_targets == "image_clusters"

    def reset(self, img_centroids: Tensor, txt_centroids: Tensor | None = None) -> None:
        """Rebuild the memories from this epoch's centroids ([C_i, D] and [C, D]).

        ``txt_centroids``: the text centroids of L_t's targets, i.e. of the text clusters
        or, with ``text_targets: image_clusters``, of the image clusters (the mean text
        feature of each image pseudo-identity). May be None when L_t is off.
        """
        self.image_memory.reset(img_centroids)
        if txt_centroids is not None:
            self.text_memory.reset(txt_centroids)
        elif "t" in self.terms:
            raise ValueError("loss term 't' (L_t) is active: reset() needs txt_centroids")

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor | None,
        y_img: Tensor,
        y_txt: Tensor | None = None,
        graph_positive: Tensor | None = None,
        y_proxy: Tensor | None = None,
        batch_index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Eq. 9: the active loss terms and their sum (L_v + L_t + L_g + L_cm).

        Args:
            image_features: float [B, D] from the image encoder (any norm).
            text_features: float [B, D] from the text encoder; needed for L_t and L_cm.
            y_img: long [B] visual pseudo-labels (-1 ignored).
            y_txt: long [B] text pseudo-labels (-1 ignored); needed for L_t.
            graph_positive: bool mutual-graph edges of the batch's samples, needed for L_g:
                [B, B] among the batch, or [B, N] to every training image with
                ``loss.graph_scope: all``.
            y_proxy: long [B] camera-proxy ids (-1 ignored); needed with camera proxies.
            batch_index: long [B] training-set index of each sample; needed with
                ``loss.graph_scope: all`` (the rows of the instance memory).

        Returns:
            ``{term_key: scalar, ..., "loss": scalar}``. Updates the memories.
        """
        self._check_inputs(text_features, y_txt, graph_positive)
        image_unit = F.normalize(image_features, dim=1)
        out: dict[str, Tensor] = {}
        if "v" in self.terms:
            out["L_v_ce"] = self.image_memory(image_unit, y_img)
            out["L_v_tri"] = batch_hard_triplet(image_unit, y_img, self.margin)
        if self.uses_camera_proxies:
            if y_proxy is None:
                raise ValueError("loss.camera_proxies > 0 needs y_proxy, the camera-proxy ids")
            proxy_ce = self.proxy_memory(image_unit, y_proxy)
            out["L_v_cam"] = self.config.camera_proxies * proxy_ce
        if "t" in self.terms:
            targets = y_img if self.text_targets_are_image_clusters else y_txt
            out["L_t"] = text_cluster_loss(self.text_memory, text_features, targets)
        if "g" in self.terms:
            out["L_g"] = self.graph_constraint(image_unit, graph_positive, batch_index)
        if "cm" in self.terms:
            out["L_cm"] = self.cross_modal(image_unit, text_features, y_img)
        out["loss"] = torch.stack(list(out.values())).sum()
        return out

    def graph_constraint(
        self, image_unit: Tensor, positive: Tensor, batch_index: Tensor | None
    ) -> Tensor:
        """L_g in the configured scope and weighting; updates the instance memory."""
        weighting = self.config.graph_weighting
        if not self.graph_over_all:
            return graph_constraint_loss(image_unit, positive, weighting=weighting)
        if batch_index is None:
            raise ValueError("loss.graph_scope 'all' needs batch_index, the samples' indices")
        if self.instance_memory.num_clusters == 0:
            raise ValueError("loss.graph_scope 'all': reset_instances() before training")
        batch_index = batch_index.to(device=image_unit.device, dtype=torch.long)
        loss = graph_constraint_loss(
            image_unit,
            positive,
            partners=self.instance_memory.memory,
            self_index=batch_index,
            weighting=weighting,
        )
        self.instance_memory.update(image_unit.detach(), batch_index)
        return loss

    def cross_modal(self, image_unit: Tensor, text_features: Tensor, y_img: Tensor) -> Tensor:
        """L_cm in the configured form (Eq. 8 as printed, or CLIP's InfoNCE)."""
        if self.config.cm_form == "eq8":
            return cross_modal_loss(image_unit, text_features)
        positive = None
        if self.config.cm_positives == "image_cluster":
            positive = (y_img[:, None] == y_img[None, :]) & (y_img[:, None] >= 0)
        return cross_modal_infonce(image_unit, text_features, self.config.cm_temperature, positive)

    def _check_inputs(
        self, text_features: Tensor | None, y_txt: Tensor | None, graph_positive: Tensor | None
    ) -> None:
        missing = []
        if self.needs_text and text_features is None:
            missing.append("text_features (for 't' / 'cm')")
        if "t" in self.terms and y_txt is None and not self.text_targets_are_image_clusters:
            missing.append("y_txt (for 't')")
        if "g" in self.terms and graph_positive is None:
            missing.append("graph_positive (for 'g')")
        if missing:
            raise ValueError(f"loss terms {sorted(self.terms)} need: {', '.join(missing)}")

    def extra_repr(self) -> str:
        return f"terms={sorted(self.terms)}, margin={self.margin}, cm_form={self.config.cm_form}"
