"""One training epoch: P x K batches under the epoch's pseudo-labels -> Eq. 9 -> backward.

Per batch (``train_step``): image and prompt text features, the batch's rows of the
mutual graph (Eq. 3-5, from the labels alone), the active loss terms and ONE backward
of their sum. That single backward routes the gradients as the paper says (image
encoder <- L_v + L_g + L_cm, text side <- L_t + L_cm) because the prompt's meta-net
reads detached image features: the contract is stated in
``viewcoop_core.losses.objective``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from viewcoop_core.config import OptimConfig, PromptConfig, TrainConfig
from viewcoop_core.data.image_dataset import ImageDataset
from viewcoop_core.data.sampler import PKSampler
from viewcoop_core.data.types import ReidSample
from viewcoop_core.engine.extract import PromptInputs, autocast
from viewcoop_core.graph import OUTLIER, batch_dictionary, dictionary_rows, graph_edges
from viewcoop_core.losses import ViewCoOpLoss
from viewcoop_core.models.model import ViewCoOpModel
from viewcoop_core.models.prompts import clause_orders
from viewcoop_core.vocabulary import GRAPH_POSITIVES

PER_CLUSTER_GROUP = 2


@dataclass
class TrainState:
    """What one optimisation step needs.

    ``model``: what runs the forward (DDP-wrapped or the bare ``ViewCoOpModel``);
    ``tau``: the accepted Dic values of the graph's edges (Eq. 4).
    """

    model: nn.Module
    loss_fn: ViewCoOpLoss
    optimizer: torch.optim.Optimizer
    device: torch.device
    tau: Sequence[int]
    amp: bool = True
    with_text: bool = True


@dataclass
class EpochLabels:
    """This epoch's pseudo-labels of all N training samples: int64 [N], -1 = outlier."""

    y_img: Tensor
    y_txt: Tensor
    y_proxy: Tensor | None = None  # camera proxies (``loss.camera_proxies``)


def build_optimizer(
    model: ViewCoOpModel,
    optim: OptimConfig,
    train: TrainConfig | None = None,
    device: torch.device | None = None,
) -> torch.optim.Adam:
    """Adam with three groups: CLIP encoders at ``optim.lr``; prompt learner and its
    per-cluster parameters (coop/uncoop, re-created every epoch, see
    ``refresh_per_cluster_group``) at ``optim.prompt_lr``. The third group may be empty.

    Adam's fused CUDA kernel (one launch for all parameters) is used when every
    trainable parameter is on CUDA, unless ``train.fused_optimizer`` is off (``device``,
    when given, must be CUDA too)."""
    per_cluster = list(model.prompt_learner.per_cluster_parameters())
    prompt_ids = {id(p) for p in model.prompt_learner.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    cluster_ids = {id(p) for p in per_cluster}
    groups = [
        {"params": [p for p in trainable if id(p) not in prompt_ids], "lr": optim.lr},
        {
            "params": [p for p in trainable if id(p) in prompt_ids and id(p) not in cluster_ids],
            "lr": optim.prompt_lr,
        },
        {"params": [p for p in per_cluster if p.requires_grad], "lr": optim.prompt_lr},
    ]
    wanted = train is None or train.fused_optimizer
    on_cuda = bool(trainable) and all(p.is_cuda for p in trainable)
    if device is not None and device.type != "cuda":
        on_cuda = False
    # fused=None lets torch choose (foreach on CUDA, a loop on the CPU).
    fused = True if wanted and on_cuda else None
    return torch.optim.Adam(groups, weight_decay=optim.weight_decay, fused=fused)


def epoch_learning_rates(optim: OptimConfig, epoch: int) -> tuple[float, float]:
    """(encoder lr, prompt lr) of 1-based ``epoch``: divided by ``gamma`` every
    ``step_size`` epochs (the paper: by 10 every 20)."""
    factor = optim.gamma ** ((epoch - 1) // optim.step_size)
    return optim.lr * factor, optim.prompt_lr * factor


def apply_learning_rates(optimizer: torch.optim.Optimizer, optim: OptimConfig, epoch: int) -> None:
    """Set the groups of ``build_optimizer`` to ``epoch``'s rates. A pure function of the
    epoch: nothing to checkpoint, and a skipped epoch (no optimiser step) changes nothing."""
    encoder, prompt = epoch_learning_rates(optim, epoch)
    for index, group in enumerate(optimizer.param_groups):
        group["lr"] = encoder if index == 0 else prompt


def nonfinite_terms(means: dict[str, float]) -> list[str]:
    """The loss terms (keys starting with ``L_`` and ``loss``) whose epoch mean is NaN or
    infinite: one non-finite step makes the mean non-finite."""
    return [
        key
        for key, value in means.items()
        if (key.startswith("L_") or key == "loss") and not math.isfinite(value)
    ]


def refresh_per_cluster_group(optimizer: torch.optim.Optimizer, model: ViewCoOpModel) -> None:
    """Point the per-cluster group at the learner's new parameters and drop the old state."""
    group = optimizer.param_groups[PER_CLUSTER_GROUP]
    for param in group["params"]:
        optimizer.state.pop(param, None)
    group["params"] = [p for p in model.prompt_learner.per_cluster_parameters() if p.requires_grad]


def pk_loader(
    samples: Sequence[ReidSample],
    labels: np.ndarray,
    transform,
    batch_size: int,
    train: TrainConfig,
    seed: int,
    epoch: int,
    num_workers: int,
) -> DataLoader:
    """``train.iters`` P x K batches of the training images under this epoch's labels."""
    sampler = PKSampler(
        labels.tolist(),
        [s.camid for s in samples],
        batch_size=batch_size,
        num_instances=train.num_instances,
        num_iters=train.iters,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        ImageDataset(list(samples), transform), batch_sampler=sampler, num_workers=num_workers
    )


def epoch_clause_order(num_samples: int, epoch: int, seed: int, shuffle: bool) -> Tensor:
    """The per-sample order of the four view clauses this epoch (identity order if not shuffled)."""
    if shuffle:
        return clause_orders(num_samples, epoch, seed)
    return torch.arange(4).repeat(num_samples, 1)


def extraction_clause_order(
    prompt: PromptConfig, num_samples: int, epoch: int, seed: int
) -> Tensor:
    """The clause order of the features that are clustered: shuffled as in training only
    with ``prompt.shuffle_at_extraction`` (the paper shuffles as an augmentation of the
    training text), else front, back, side, top."""
    shuffle = prompt.shuffle_clauses and prompt.shuffle_at_extraction
    return epoch_clause_order(num_samples, epoch, seed, shuffle)


def graph_positives(
    labels: EpochLabels,
    index: Tensor,
    tau: Sequence[int],
    over_all: bool,
    device: torch.device,
    source: str = "mutual",
) -> Tensor:
    """The batch's rows of the mutual graph (Eq. 4): each sample's positive set (Eq. 5).

    ``index`` long [B]: the samples' training-set indices. Among the batch, bool [B, B];
    with ``over_all`` (``loss.graph_scope: all``) against every training image, bool
    [B, N]. Self pairs are never edges. Built from the labels alone, on ``device``.

    ``source`` (``loss.graph_positives``): ``mutual`` is the graph above; ``image`` makes
    the positives the mates of the same image pseudo-identity (no text: what the text's
    edges add is the difference); ``none`` leaves no positives (L_g only repels)."""
    if source not in GRAPH_POSITIVES:
        raise ValueError(f"graph positives {source!r}: expected one of {GRAPH_POSITIVES}")
    y_img, y_txt = labels.y_img, labels.y_txt
    if source != "mutual":
        # The same graph with the text (and for "none" the image) labels all outliers,
        # which agree with nothing: Dic is then 1 exactly on the image mates (or nowhere).
        y_txt = torch.full_like(y_txt, OUTLIER)
        y_img = y_txt if source == "none" else y_img
        tau = (1,)
    if not over_all:
        return graph_edges(batch_dictionary(y_img[index].to(device), y_txt[index].to(device)), tau)
    dic = dictionary_rows(y_img.to(device), y_txt.to(device), index.to(device))
    return graph_edges(dic, tau, rows=index)


def train_step(
    state: TrainState, batch: dict, labels: EpochLabels, prompts: PromptInputs
) -> dict[str, Tensor]:
    """One P x K batch: forward, the batch's graph rows, Eq. 9, one backward, one step.

    The graph rows are each sample's positive set among the batch, or among all N
    training images with ``loss.graph_scope: all`` (Eq. 5: its graph neighbours under
    Eq. 4's tau; every other sample is a negative), which L_g reads.

    The prompt's cluster ids are the batch's image pseudo-labels of this epoch (coop and
    uncoop hold one context row per image cluster); view percents and clause order come
    from ``prompts``. Returns the loss terms (detached scalars).
    """
    idx = batch["index"]
    device = state.device
    images = batch["image"].to(device, non_blocking=True)
    b_img, b_txt = labels.y_img[idx].to(device), labels.y_txt[idx].to(device)
    rows = prompts.rows(idx, device)
    rows["cluster_ids"] = b_img
    with autocast(device, state.amp):
        img, txt = state.model(images, **rows, with_text=state.with_text)
    positive = None
    if "g" in state.loss_fn.terms:
        positive = graph_positives(
            labels,
            idx,
            state.tau,
            state.loss_fn.graph_over_all,
            device,
            state.loss_fn.config.graph_positives,
        )
    b_proxy = None if labels.y_proxy is None else labels.y_proxy[idx].to(device)
    terms = state.loss_fn(
        img.float(),
        None if txt is None else txt.float(),
        b_img,
        b_txt,
        positive,
        b_proxy,
        batch_index=idx.to(device),
    )
    state.optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    state.optimizer.step()
    return {key: value.detach() for key, value in terms.items()}


def train_epoch(
    state: TrainState,
    loader: Iterable[dict],
    labels: EpochLabels,
    prompts: PromptInputs,
    progress: Callable[[int], object] | None = None,
) -> dict[str, float]:
    """Every batch of ``loader`` through ``train_step``; mean loss terms and images/s.

    The loss terms are summed where they are computed (on the device) and read once at
    the end: no host synchronisation inside the loop, so the GPU queue never drains.
    """
    state.model.train()
    sums: dict[str, Tensor] = {}
    steps, images_seen = 0, 0
    start = time.perf_counter()
    for batch in loader:
        for key, value in train_step(state, batch, labels, prompts).items():
            sums[key] = value if key not in sums else sums[key] + value
        steps += 1
        images_seen += len(batch["index"])
        if progress is not None:
            progress(1)
    totals = {key: float(value) for key, value in sums.items()}
    seconds = time.perf_counter() - start
    means = {key: value / max(steps, 1) for key, value in totals.items()}
    means["train_images_per_s"] = images_seen / max(seconds, 1e-9)
    means["train_s"] = seconds
    return means
