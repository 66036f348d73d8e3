"""Typed configuration: one dataclass per component, composed into ``ExperimentConfig``.

Each dataclass validates its own fields in ``__post_init__`` against the registries of
``viewcoop_core.vocabulary`` and names the field and the allowed values when something
is wrong; every section has its ranges, so an impossible setting fails here, before
anything starts. Building from nested dicts and dotted overrides (``train.epochs=3``) is
``viewcoop_core.config_tree`` (re-exported here); reading YAML files and profiles is
``orchestrator.config``. This module imports no torch, so a config is validated in a
fraction of a second, and workers rebuild it from the plain dict they receive.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from viewcoop_core.config_data import DataConfig
from viewcoop_core.config_infra import RayConfig, TrackingConfig  # noqa: F401 - re-exported
from viewcoop_core.config_tree import (  # noqa: F401 - re-exported
    ConfigError,
    _require,
    _require_choice,
    _require_text,
    apply_overrides,
    build_dataclass,
    parse_override,
    set_dotted,
)
from viewcoop_core.outputs import check_output_name
from viewcoop_core.vocabulary import (
    CAMERA_NORMS,
    CM_FORMS,
    CM_POSITIVES,
    DBSCAN_BACKEND_CHOICES,
    DICTIONARY_BACKEND_CHOICES,
    GRAPH_POSITIVES,
    GRAPH_SCOPES,
    GRAPH_WEIGHTINGS,
    JACCARD_NEIGHBOURHOODS,
    LOSS_TERMS,
    PATCH_READINGS,
    PATCH_SIZES,
    PROMPT_VARIANTS,
    SHIPPED_WEIGHTS,
    TEXT_TARGETS,
    parse_losses,
    parse_tau,
)


@dataclass
class ModelConfig:
    """open_clip backbone. ``pretrained``: None (random init), an open_clip tag, a local
    weights file, or ``synthetic``: the weights shipped with the project for
    ``viewcoop-tiny`` and ``viewcoop-small``, pretrained on captioned synthetic vehicles of
    other identities than any re-id set (``viewcoop pretrain-tiny [--model]`` remakes
    them; no real CLIP weights on a CPU demo).
    """

    name: str = "ViT-B-16"
    pretrained: str | None = None
    image_size: int = 256

    def __post_init__(self) -> None:
        _require_text(self.name, "model.name")
        _require(
            self.image_size > 0 and self.image_size % 16 == 0,
            "model.image_size",
            self.image_size,
            "a positive multiple of 16 (the ViT patch size)",
        )
        if self.pretrained in SHIPPED_WEIGHTS:
            architectures = SHIPPED_WEIGHTS[self.pretrained]
            _require(
                self.name in architectures,
                "model.name",
                self.name,
                f"one of {', '.join(map(repr, architectures))} with "
                f"model.pretrained={self.pretrained!r}",
            )


@dataclass
class PromptConfig:
    """``shuffle_clauses``: the view clauses in a new random order per sample each epoch
    while training (the paper's augmentation of the text); ``shuffle_at_extraction``:
    also for the features that are clustered. ``meta_net_reduction``: the meta-net's
    bottleneck, width // reduction (CoCoOp: 16)."""

    variant: str = "viewcoop"
    num_ctx: int = 4
    shuffle_clauses: bool = True
    shuffle_at_extraction: bool = False
    meta_net_reduction: int = 16

    def __post_init__(self) -> None:
        _require_choice(self.variant, PROMPT_VARIANTS, "prompt.variant")
        _require(self.num_ctx >= 1, "prompt.num_ctx", self.num_ctx, "an int >= 1")
        _require(
            self.meta_net_reduction >= 1,
            "prompt.meta_net_reduction",
            self.meta_net_reduction,
            "an int >= 1",
        )


@dataclass
class ViewsConfig:
    """``patch_size``: 8, 16 or 32, or "pixel" (pixel-level ratios).

    ``patch_reading``: how Table 4's "s x s patches" are read. ``pixels``: patches of
    s x s pixels on the mask resized to the network input (16 x 16 patches of a 256 px
    input are the ViT's own tokens); ``grid``: an s x s grid of patches over the mask,
    each (input side / s) pixels wide. The two agree at s = 16 on 256 px inputs.
    """

    patch_size: int | str = 16
    patch_reading: str = "pixels"

    def __post_init__(self) -> None:
        if isinstance(self.patch_size, str) and self.patch_size.isdigit():
            self.patch_size = int(self.patch_size)
        _require(
            self.patch_size in PATCH_SIZES or self.patch_size == "pixel",
            "views.patch_size",
            self.patch_size,
            f"one of {PATCH_SIZES} or 'pixel'",
        )
        _require_choice(self.patch_reading, PATCH_READINGS, "views.patch_reading")

    def patch_pixels(self, image_size: int) -> int | None:
        """Patch side in pixels on an ``image_size`` input, None for pixel-level ratios."""
        if self.patch_size == "pixel":
            return None
        if self.patch_reading == "pixels":
            return int(self.patch_size)
        if image_size % int(self.patch_size):
            raise ConfigError(
                f"views.patch_reading='grid' cuts a {image_size} px input into a "
                f"{self.patch_size} x {self.patch_size} grid: model.image_size must be a "
                f"multiple of views.patch_size={self.patch_size}"
            )
        return image_size // int(self.patch_size)


@dataclass
class ClusterConfig:
    """DBSCAN on the k-reciprocal Jaccard distance. ``camera_norm``: per-camera feature
    normalisation before clustering (``none``, ``mean``, ``standardize``);
    ``neighbourhood``: ``k1+1`` nearest incl. the point itself (the re-ranking paper's
    code) or ``k1`` (Cluster Contrast's faiss path)."""

    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    backend: str = "auto"
    camera_norm: str = "none"
    neighbourhood: str = "k1+1"

    def __post_init__(self) -> None:
        if not 0 < self.eps < 1:
            raise ConfigError(
                f"cluster.eps={self.eps!r} is not allowed: eps must be in (0, 1); Jaccard "
                "distances lie in [0, 1] and pairs sharing no k-reciprocal neighbour "
                "(distance 1) are not stored"
            )
        _require(self.min_samples >= 1, "cluster.min_samples", self.min_samples, "an int >= 1")
        _require(
            self.k1 >= 2 and self.k2 >= 1, "cluster.k1/k2", (self.k1, self.k2), "k1 >= 2, k2 >= 1"
        )
        _require_choice(self.backend, DBSCAN_BACKEND_CHOICES, "cluster.backend")
        _require_choice(self.camera_norm, CAMERA_NORMS, "cluster.camera_norm")
        _require(
            self.neighbourhood in JACCARD_NEIGHBOURHOODS
            and not (self.neighbourhood == "k1" and self.k1 < 2),
            "cluster.neighbourhood",
            self.neighbourhood,
            f"one of {JACCARD_NEIGHBOURHOODS} ('k1' with cluster.k1 >= 2)",
        )


@dataclass
class GraphConfig:
    """``tau``: the accepted Dic values for an edge, a preset name ("0", "1", "1or2", "2") or a list."""

    tau: list[int] | int | str = "1or2"
    dic_backend: str = "auto"

    def __post_init__(self) -> None:
        self.tau = list(resolve_tau(self.tau))
        _require_choice(self.dic_backend, DICTIONARY_BACKEND_CHOICES, "graph.dic_backend")


def resolve_tau(value: Any) -> tuple[int, ...]:
    """A tau preset name, an int, or a list of ints in {0, 1, 2} -> sorted tuple."""
    try:
        return tuple(sorted(parse_tau(value)))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"graph.tau={value!r}: {exc}") from exc


@dataclass
class LossConfig:
    """``terms``: a preset (baseline, +viewcoop, +cmg, full) or a list of {v, t, g, cm}.

    ``cm_form``: L_cm as Eq. 8 prints it (``eq8``: linear in the cosines, / B^2) or as
    CLIP's loss (``clip``: symmetric InfoNCE at ``cm_temperature``; ``cm_positives``
    ``image_cluster`` also counts the prompts of the image's pseudo-identity mates as
    positives). ``text_targets``: the labels and centroids L_t trains the text features
    toward: the text clusters (``text_clusters``, Eq. 7) or the image clusters
    (``image_clusters``, as CLIP-ReID's text prototypes of image identities).
    ``camera_proxies``: the weight of an intra-camera proxy contrast added to L_v
    (``losses/camera_proxies.py``; 0 = off, the paper).
    ``graph_scope``: L_g's partners, the batch (``batch``) or all N training images
    through an instance memory of their image features (``all``, Eq. 6's sum over the
    data); ``graph_weighting``: its mean over pairs (``pairs``, Eq. 6 up to a constant)
    or over positives and negatives apart (``sets``); ``terms.graph_constraint_loss``.
    ``graph_positives``: each sample's positive set in L_g, its mutual-graph neighbours
    (``mutual``, Eq. 5), its image pseudo-identity's mates (``image``: the graph without
    the text) or none (``none``: L_g only pushes apart); the last two are diagnostics of
    what the text's edges add.
    """

    terms: list[str] | str = "full"
    temperature: float = 0.05
    momentum: float = 0.2
    margin: float = 0.3
    cm_form: str = "eq8"
    cm_temperature: float = 0.05
    cm_positives: str = "pair"
    text_targets: str = "text_clusters"
    camera_proxies: float = 0.0
    graph_scope: str = "batch"
    graph_weighting: str = "pairs"
    graph_positives: str = "mutual"

    def __post_init__(self) -> None:
        self.terms = list(resolve_loss_terms(self.terms))
        _require_choice(self.graph_scope, GRAPH_SCOPES, "loss.graph_scope")
        _require_choice(self.graph_weighting, GRAPH_WEIGHTINGS, "loss.graph_weighting")
        _require_choice(self.graph_positives, GRAPH_POSITIVES, "loss.graph_positives")
        _require(self.temperature > 0, "loss.temperature", self.temperature, "a number > 0")
        _require(0 <= self.momentum <= 1, "loss.momentum", self.momentum, "a number in [0, 1]")
        _require(self.margin >= 0, "loss.margin", self.margin, "a number >= 0")
        _require_choice(self.cm_form, CM_FORMS, "loss.cm_form")
        _require(self.cm_temperature > 0, "loss.cm_temperature", self.cm_temperature, "> 0")
        _require(
            self.camera_proxies >= 0, "loss.camera_proxies", self.camera_proxies, "a weight >= 0"
        )
        _require_choice(self.cm_positives, CM_POSITIVES, "loss.cm_positives")
        _require_choice(self.text_targets, TEXT_TARGETS, "loss.text_targets")

    @property
    def graph_over_all(self) -> bool:
        """Whether L_g is active and evaluated against all N training images, which
        needs every epoch's image features on the trainers (an instance memory)."""
        return "g" in self.terms and self.graph_scope == "all"


def resolve_loss_terms(value: Any) -> tuple[str, ...]:
    """A loss preset (baseline, +viewcoop, +cmg, full) or terms -> tuple in canonical order."""
    try:
        terms = parse_losses(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"loss.terms={value!r}: {exc}") from exc
    return tuple(t for t in LOSS_TERMS if t in terms)


@dataclass
class OptimConfig:
    """Adam; lr / 10 every ``step_size`` epochs (paper). The paper gives no learning rate:
    CLIP-ReID's 5e-6 for the CLIP encoders and a larger one for freshly initialised
    prompt parameters."""

    lr: float = 5e-6
    prompt_lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr", self.lr, "a learning rate > 0")
        _require(self.prompt_lr > 0, "optim.prompt_lr", self.prompt_lr, "a learning rate > 0")
        _require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.step_size >= 1, "optim.step_size", self.step_size, "an int >= 1 (epochs)")
        _require(0 < self.gamma <= 1, "optim.gamma", self.gamma, "a factor in (0, 1]")


@dataclass
class TrainConfig:
    """Training loop settings. GPU switches (no effect on the CPU, where they are off):

    ``amp``: bf16 autocast on CUDA. ``fused_optimizer``: Adam's fused CUDA kernel when
    every trainable parameter is on the GPU. ``compile``: ``torch.compile`` the image
    encoder in place (the first steps compile; checkpoints keep their keys).
    ``device_cache``: decode the images once into uint8 on the device and augment
    there, so the host's few cores never starve the GPU (memory: N x 3 x H x W bytes,
    7.4 GB for VeRi-776's training set at 256).
    """

    epochs: int = 50
    iters: int = 600
    batch_size: int = 64
    num_instances: int = 4
    eval_every: int = 5
    extract_batch_size: int = 256
    amp: bool = True
    fused_optimizer: bool = True
    compile: bool = False
    device_cache: bool = False
    seed: int = 0
    # Probability of the padded random crop (the paper: 0.5, like the flip and the erasing).
    crop_p: float = 0.5
    figures: bool = True
    figure_samples: int = 5000
    save_labels: bool = False
    progress: bool = True
    # Per epoch: k-NN identity precision of image and text features, text variance shares,
    # per-term gradient norms (rank 0; a few seconds at demo size).
    diagnostics: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "iters", "eval_every", "extract_batch_size", "figure_samples"):
            value = getattr(self, name)
            _require(value >= 1, f"train.{name}", value, "an int >= 1")
        _require(self.num_instances >= 1, "train.num_instances", self.num_instances, "an int >= 1")
        for name in ("amp", "fused_optimizer", "compile", "device_cache"):
            value = getattr(self, name)
            _require(isinstance(value, bool), f"train.{name}", value, "true or false")
        _require(
            self.batch_size >= self.num_instances and self.batch_size % self.num_instances == 0,
            "train.batch_size",
            self.batch_size,
            f"a positive multiple of train.num_instances ({self.num_instances})",
        )
        _require(self.seed >= 0, "train.seed", self.seed, "an int >= 0")
        _require(0 <= self.crop_p <= 1, "train.crop_p", self.crop_p, "a probability in [0, 1]")


@dataclass
class ExperimentConfig:
    name: str = "viewcoop"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        try:
            check_output_name(self.name, "name")  # run names start with it
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        return build_dataclass(cls, data, prefix="")
