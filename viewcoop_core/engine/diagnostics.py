"""Does the cross-modal half carry identity? Cheap measurements logged per epoch.

* ``knn_identity_precision``: of each sample's k nearest neighbours (cosine, self
  excluded), the share with its true identity; for image and for text features.
* ``text_variance_shares``: how much of the text features' spread comes from the image
  (and its pseudo-identity), from the view percentages and from the clause order,
  each varied alone on a fixed sample with the others held at one sample's values.
* ``loss_gradient_norms``: the gradient norm each loss term puts on the text side and
  on the image encoder, on one batch (a copy of the loss, so the memories are untouched).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from viewcoop_core.engine.extract import PromptInputs, extract_features
from viewcoop_core.engine.train import EpochLabels, graph_positives
from viewcoop_core.losses import ViewCoOpLoss
from viewcoop_core.models.model import ViewCoOpModel


@torch.no_grad()
def knn_identity_precision(
    features: Tensor, ids: Sequence[int] | np.ndarray, k: int = 10, block: int = 1024
) -> float:
    """Mean share of each row's ``k`` nearest rows (cosine, itself excluded) with its id.

    features: float [N, D] (any norm); ids: int [N]. Returns a value in [0, 1].
    """
    x = F.normalize(features.float(), dim=1)
    labels = torch.as_tensor(np.asarray(ids), device=x.device)
    n = x.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return 0.0
    hits = 0.0
    for start in range(0, n, block):
        stop = min(start + block, n)
        similarity = x[start:stop] @ x.T
        rows = torch.arange(start, stop, device=x.device)
        similarity[rows - start, rows] = -float("inf")
        neighbours = similarity.topk(k, dim=1).indices
        hits += float((labels[neighbours] == labels[rows, None]).float().sum())
    return hits / (n * k)


def _spread(features: Tensor) -> float:
    """Total variance: mean squared distance of the rows [n, D] to their mean."""
    return float(((features - features.mean(0)) ** 2).sum(1).mean())


_NO_VARIANCE = 1e-9
"""Total variance of unit-norm text features below which they are taken not to vary
(float32 rounding of identical features is ~1e-12)."""


@torch.no_grad()
def text_variance_shares(
    model: ViewCoOpModel, images: Tensor, prompts: PromptInputs, reference: int = 0
) -> dict[str, float]:
    """Shares of text-feature variance from the image, the view percentages and the clause
    order, on ``images`` [n, 3, H, W] with ``prompts`` rows 0..n-1.

    Each factor is varied alone over the n samples while the other two keep sample
    ``reference``'s values; the three spreads are normalised to sum to 1 (all three 0 when
    the text features do not vary at all). Pseudo-identity cluster ids (coop, uncoop)
    travel with the image: they are its identity input.
    """
    was_training = model.training
    model.eval()
    n = images.shape[0]
    image = model.image_features(images)
    rows = prompts.rows(torch.arange(n), images.device)

    def held(value: Tensor | None) -> Tensor | None:
        return None if value is None else value[reference : reference + 1].expand_as(value)

    fixed = {key: held(value) for key, value in rows.items()}
    designs = {
        "image": (image, {**fixed, "cluster_ids": rows["cluster_ids"]}),
        "view": (held(image), {**fixed, "view_percent": rows["view_percent"]}),
        "order": (held(image), {**fixed, "clause_order": rows["clause_order"]}),
    }
    spreads = {
        name: _spread(model.text_features(features, **inputs))
        for name, (features, inputs) in designs.items()
    }
    model.train(was_training)
    total = sum(spreads.values())
    # Text features that do not vary (CoOp before its first clustering: one prompt for
    # every image) leave only float32 rounding, which would split into arbitrary shares.
    varies = total > _NO_VARIANCE
    return {f"txt_var_{name}": value / total if varies else 0.0 for name, value in spreads.items()}


def loss_gradient_norms(
    model: ViewCoOpModel,
    loss_fn: ViewCoOpLoss,
    batch: dict,
    labels: EpochLabels,
    prompts: PromptInputs,
    tau: Sequence[int],
) -> dict[str, float]:
    """``grad_text_<term>`` and ``grad_image_<term>``: the L2 norm of each active loss
    term's gradient on the text side (prompt learner and text tower) and on the image
    encoder, for one batch. Uses a copy of the loss (memories and gather untouched) and
    the unwrapped model (no collectives)."""
    loss_fn = copy.deepcopy(loss_fn)
    memories = (
        loss_fn.image_memory,
        loss_fn.text_memory,
        loss_fn.proxy_memory,
        loss_fn.instance_memory,
    )
    for memory in memories:
        memory.gather = None
    device = next(model.parameters()).device
    idx = batch["index"]
    b_img, b_txt = labels.y_img[idx].to(device), labels.y_txt[idx].to(device)
    rows = {**prompts.rows(idx, device), "cluster_ids": b_img}
    img, txt = model(batch["image"].to(device), **rows, with_text=True)
    positive = None
    if "g" in loss_fn.terms:
        positive = graph_positives(
            labels, idx, tau, loss_fn.graph_over_all, device, loss_fn.config.graph_positives
        )
    b_proxy = None if labels.y_proxy is None else labels.y_proxy[idx].to(device)
    terms = loss_fn(img, txt, b_img, b_txt, positive, b_proxy, batch_index=idx.to(device))
    groups = {
        "text": [p for p in model.text_parameters() if p.requires_grad],
        "image": [p for p in model.clip.visual.parameters() if p.requires_grad],
    }
    norms: dict[str, float] = {}
    names = [key for key in terms if key != "loss"]
    for name in names:
        for side, params in groups.items():
            if not params or not terms[name].requires_grad:
                norms[f"grad_{side}_{name}"] = 0.0
                continue
            grads = torch.autograd.grad(terms[name], params, retain_graph=True, allow_unused=True)
            squared = sum(float((g.float() ** 2).sum()) for g in grads if g is not None)
            norms[f"grad_{side}_{name}"] = squared**0.5
    model.zero_grad(set_to_none=True)
    return norms


@torch.no_grad()
def feature_diagnostics(
    model: ViewCoOpModel,
    samples: Sequence,
    batches: Iterable[dict],
    prompts: PromptInputs,
    device: torch.device,
    variance_samples: int = 64,
    amp: bool = True,
) -> dict[str, float]:
    """k-NN identity precision (k = 10) of the image and text features of ``samples``
    (the training images, whose true ids are known on synthetic data) and the text
    variance shares on the first ``variance_samples`` of them. ``batches``: evaluation
    batches of ``samples`` in order, re-iterable (``engine.batches.extraction_batches``)."""
    indices, img, txt = extract_features(model, batches, device, prompts, amp=amp)
    ids = np.asarray([samples[i].pid for i in indices])
    out = {
        "knn_prec_img": knn_identity_precision(torch.from_numpy(img), ids),
        "knn_prec_txt": knn_identity_precision(torch.from_numpy(txt), ids),
    }
    images = _first_images(batches, min(variance_samples, len(samples)))
    out.update(text_variance_shares(model, images.to(device), prompts))
    return out


def _first_images(batches: Iterable[dict], count: int) -> Tensor:
    """The first ``count`` images [count, 3, H, W] of a fresh pass over ``batches``."""
    taken, left = [], count
    for batch in batches:
        taken.append(batch["image"][:left])
        left -= len(taken[-1])
        if left <= 0:
            break
    return torch.cat(taken)
