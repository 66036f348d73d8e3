"""Typed configuration: one dataclass per component, composed into ``ExperimentConfig``.

Each dataclass validates its own fields in ``__post_init__`` against the registries of
``viewcoop_core.vocabulary`` and names the field and the allowed values when something
is wrong. Dotted overrides (``train.epochs=3``) are applied here too
(``apply_overrides``); reading YAML files and profiles is ``orchestrator.config``. This
module imports no torch, so a config is validated in a fraction of a second, and
workers rebuild it from the plain dict they receive.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from viewcoop_core.synthetic.spec import SyntheticSpec
from viewcoop_core.vocabulary import (
    DATASET_NAMES,
    DBSCAN_BACKEND_CHOICES,
    DICTIONARY_BACKEND_CHOICES,
    LOSS_TERMS,
    PATCH_SIZES,
    PROMPT_VARIANTS,
    parse_losses,
    parse_tau,
)


class ConfigError(ValueError):
    """A config field holds a value outside what it allows."""


def _require(ok: bool, field_path: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{field_path}={value!r} is not allowed; expected {allowed}")


@dataclass
class DataConfig:
    """Where the images and their view masks come from.

    ``masks_dir``: a folder of view masks, ``<image stem>.png`` (0 background, 1 front,
    2 back, 3 top, 4 side); for the synthetic set it replaces the generator's ``masks/``.
    ``view_parser``: a view-parser checkpoint (``viewcoop parse-views train``): the images
    without a mask in ``masks_dir`` (all of them without ``masks_dir``) get predicted
    masks, made once and cached in ``view_masks_cache`` (default: ``view-masks/`` next to
    ``root``) in a folder keyed by the checkpoint and the image set.
    ``view_parser_device``: "auto" (the GPU when there is one), "cpu" or "cuda".
    """

    dataset: str = "synthetic"
    root: str = "data/synthetic"
    masks_dir: str | None = None
    vehicleid_test_size: int = 2400
    num_workers: int = 2
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    view_parser: str | None = None
    view_masks_cache: str | None = None
    view_parser_batch_size: int = 64
    view_parser_device: str = "auto"

    def __post_init__(self) -> None:
        _require(
            self.view_parser_batch_size >= 1,
            "data.view_parser_batch_size",
            self.view_parser_batch_size,
            "an int >= 1",
        )
        _require(
            self.view_parser_device in ("auto", "cpu", "cuda")
            or self.view_parser_device.startswith("cuda:"),
            "data.view_parser_device",
            self.view_parser_device,
            "'auto', 'cpu', 'cuda' or 'cuda:<index>'",
        )
        _require(
            self.dataset in DATASET_NAMES, "data.dataset", self.dataset, f"one of {DATASET_NAMES}"
        )
        _require(
            self.vehicleid_test_size in (800, 1600, 2400),
            "data.vehicleid_test_size",
            self.vehicleid_test_size,
            "one of (800, 1600, 2400)",
        )


@dataclass
class ModelConfig:
    """open_clip backbone. ``pretrained``: None, an open_clip tag or a local weights file.

    ``synthetic_pretrain``: for the tiny model only (no real CLIP weights on CPU demos):
    pretrain it contrastively on captioned synthetic vehicles with other identities
    than the re-id set (``viewcoop_core.synthetic.pretrain``), cached, and start from
    those weights.
    """

    name: str = "ViT-B-16"
    pretrained: str | None = None
    image_size: int = 256
    synthetic_pretrain: bool = False
    synthetic_pretrain_seconds: float = 150.0

    def __post_init__(self) -> None:
        _require(self.image_size % 16 == 0, "model.image_size", self.image_size, "a multiple of 16")
        _require(
            not (self.synthetic_pretrain and self.pretrained),
            "model.synthetic_pretrain",
            self.synthetic_pretrain,
            "false when model.pretrained is set",
        )


@dataclass
class PromptConfig:
    variant: str = "viewcoop"
    num_ctx: int = 4
    shuffle_clauses: bool = True

    def __post_init__(self) -> None:
        _require(
            self.variant in PROMPT_VARIANTS,
            "prompt.variant",
            self.variant,
            f"one of {PROMPT_VARIANTS}",
        )
        _require(self.num_ctx >= 1, "prompt.num_ctx", self.num_ctx, "an int >= 1")


@dataclass
class ViewsConfig:
    """``patch_size``: 8, 16 or 32 pixels on the resized mask, or "pixel"."""

    patch_size: int | str = 16

    def __post_init__(self) -> None:
        if isinstance(self.patch_size, str) and self.patch_size.isdigit():
            self.patch_size = int(self.patch_size)
        _require(
            self.patch_size in PATCH_SIZES or self.patch_size == "pixel",
            "views.patch_size",
            self.patch_size,
            f"one of {PATCH_SIZES} or 'pixel'",
        )

    @property
    def patch_pixels(self) -> int | None:
        """Patch side in pixels, None for pixel-level ratios."""
        return None if self.patch_size == "pixel" else int(self.patch_size)


@dataclass
class ClusterConfig:
    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    backend: str = "auto"

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
        _require(
            self.backend in DBSCAN_BACKEND_CHOICES,
            "cluster.backend",
            self.backend,
            f"one of {DBSCAN_BACKEND_CHOICES}",
        )


@dataclass
class GraphConfig:
    """``tau``: the accepted Dic values for an edge, a preset name ("0", "1", "1or2", "2") or a list."""

    tau: list[int] | int | str = "1or2"
    dic_backend: str = "auto"

    def __post_init__(self) -> None:
        self.tau = list(resolve_tau(self.tau))
        _require(
            self.dic_backend in DICTIONARY_BACKEND_CHOICES,
            "graph.dic_backend",
            self.dic_backend,
            f"one of {DICTIONARY_BACKEND_CHOICES}",
        )


def resolve_tau(value: Any) -> tuple[int, ...]:
    """A tau preset name, an int, or a list of ints in {0, 1, 2} -> sorted tuple."""
    try:
        return tuple(sorted(parse_tau(value)))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"graph.tau={value!r}: {exc}") from exc


@dataclass
class LossConfig:
    """``terms``: a preset (baseline, +viewcoop, +cmg, full) or a list of {v, t, g, cm}."""

    terms: list[str] | str = "full"
    temperature: float = 0.05
    momentum: float = 0.2
    margin: float = 0.3

    def __post_init__(self) -> None:
        self.terms = list(resolve_loss_terms(self.terms))


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


@dataclass
class TrainConfig:
    epochs: int = 50
    iters: int = 600
    batch_size: int = 64
    num_instances: int = 4
    eval_every: int = 5
    extract_batch_size: int = 256
    amp: bool = True
    seed: int = 0
    figures: bool = True
    figure_samples: int = 5000
    save_labels: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        _require(
            self.batch_size % self.num_instances == 0,
            "train.batch_size",
            self.batch_size,
            f"a multiple of train.num_instances ({self.num_instances})",
        )
        _require(
            self.epochs >= 1 and self.iters >= 1,
            "train.epochs/iters",
            (self.epochs, self.iters),
            ">= 1",
        )
        _require(self.eval_every >= 1, "train.eval_every", self.eval_every, ">= 1")


@dataclass
class RayConfig:
    address: str | None = None
    namespace: str = "viewcoop"
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    actor_num_gpus: float | None = None
    actor_num_cpus: float | None = None
    storage_path: str = "runs"
    max_failures: int = 0


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None
    experiment: str = "viewcoop"


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        return build_dataclass(cls, data, prefix="")


def build_dataclass(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a nested dict, rejecting unknown keys by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {[prefix + u for u in unknown]}; "
            f"{prefix.rstrip('.') or 'the top level'} has {sorted(names)}"
        )
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:  # a component's own validation (e.g. SyntheticSpec)
        raise ConfigError(str(exc)) from exc


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, path + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}={value!r} matches none of {hint}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r} must be a list")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}={value!r} must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}={value!r} must be an int")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "5e-5" (no dot) as a string; accept the number it means.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}={value!r} must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}={value!r} must be a string")
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` -> ("train.epochs", 3); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} must look like dotted.key=value (e.g. train.epochs=3)"
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    return key, yaml.safe_load(raw) if raw.strip() else None


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for key "a.b", creating nested dicts."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any] | list[str]) -> dict[str, Any]:
    """A copy of ``tree`` with dotted overrides (a mapping or ``key=value`` strings) applied."""
    tree = copy.deepcopy(tree)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        set_dotted(tree, key, value)
    return tree
