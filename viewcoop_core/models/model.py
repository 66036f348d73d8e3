"""CLIP image encoder + prompt learner + text encoder as one module (what DDP wraps)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from viewcoop_core.models.prompts import PromptLearner, encode_prompts


class ViewCoOpModel(nn.Module):
    """Image features from CLIP's visual tower, text features from the learned prompts.

    ``train_text`` False freezes the text side (transformer, projection, prompt learner):
    the loss presets without L_t and L_cm (baseline, +cmg) still need text features for
    clustering, but nothing trains them. Callers pass ``vocabulary.needs_text(terms)``;
    the routing contract of Eq. 9 is stated in ``viewcoop_core.losses.objective``.
    """

    def __init__(
        self, clip_model: nn.Module, prompt_learner: PromptLearner, train_text: bool = True
    ):
        super().__init__()
        self.clip = clip_model
        self.prompt_learner = prompt_learner
        self.train_text = train_text
        self._freeze_unused(train_text)

    def _freeze_unused(self, train_text: bool) -> None:
        # CLIP's logit_scale is not used by any of the paper's losses.
        if hasattr(self.clip, "logit_scale"):
            self.clip.logit_scale.requires_grad_(False)
        for p in self.text_parameters():
            p.requires_grad_(train_text)
        # The vocabulary stays frozen: the prompt learner reads token embeddings, it does not train them.
        self.clip.token_embedding.requires_grad_(False)

    def text_parameters(self) -> list[nn.Parameter]:
        """The text side: transformer, final LayerNorm, projection, positional embedding, prompts."""
        modules = [self.clip.transformer, self.clip.ln_final, self.prompt_learner]
        params = [p for m in modules for p in m.parameters()]
        for name in ("positional_embedding", "text_projection"):
            value = getattr(self.clip, name, None)
            if isinstance(value, nn.Parameter):
                params.append(value)
            elif isinstance(value, nn.Module):
                params.extend(value.parameters())
        return params

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> L2-normalised CLS features [B, D]."""
        return F.normalize(self.clip.encode_image(images).float(), dim=-1)

    def text_features(
        self,
        image_features: torch.Tensor,
        view_percent: torch.Tensor | None,
        cluster_ids: torch.Tensor | None,
        clause_order: torch.Tensor | None,
    ) -> torch.Tensor:
        """L2-normalised prompt text features [B, D] (the meta-net sees detached image features)."""
        features = encode_prompts(
            self.clip,
            self.prompt_learner,
            image_features=image_features,
            view_percent=view_percent,
            cluster_ids=cluster_ids,
            clause_order=clause_order,
        )
        return F.normalize(features.float(), dim=-1)

    def forward(
        self,
        images: torch.Tensor,
        view_percent: torch.Tensor | None = None,
        cluster_ids: torch.Tensor | None = None,
        clause_order: torch.Tensor | None = None,
        with_text: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        img = self.image_features(images)
        txt = (
            self.text_features(img, view_percent, cluster_ids, clause_order) if with_text else None
        )
        return img, txt
