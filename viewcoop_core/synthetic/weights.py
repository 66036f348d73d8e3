"""The tiny CLIP's pretrained weights: trained once per parameter set, then cached.

``ensure_pretrained_tiny_clip`` draws the pretraining set and runs ``pretrain_clip``
unless weights for exactly these generation and training parameters are already in the
cache folder.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from viewcoop_core.models.clip import TINY_MODEL_NAME
from viewcoop_core.outputs import claim_output_dir
from viewcoop_core.synthetic import pretrain
from viewcoop_core.synthetic.pretrain import DEFAULT_MAX_SECONDS, PRETRAIN_FORMAT_VERSION
from viewcoop_core.synthetic.spec import PRETRAIN_SPEC, SyntheticSpec
from viewcoop_core.synthetic.writer import ensure_synthetic

logger = logging.getLogger(__name__)

# Arguments of pretrain_clip that say where, not what: left out of the cache key.
_NOT_TRAINING_PARAMETERS = ("data_root", "out_path", "device")


def _cache_key(parameters: Mapping) -> str:
    text = json.dumps(parameters, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _training_parameters(image_size: int, train_kwargs: Mapping) -> dict:
    """Every ``pretrain_clip`` keyword that shapes the weights, defaults filled in.

    Filling in the defaults makes the cache key change when a default changes.
    """
    signature = inspect.signature(pretrain.pretrain_clip)
    fixed = {"model_name": TINY_MODEL_NAME, "image_size": image_size}
    allowed = [
        name
        for name in signature.parameters
        if name not in _NOT_TRAINING_PARAMETERS and name not in fixed
    ]
    unknown = sorted(set(train_kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"unknown pretraining arguments {unknown}; allowed: {allowed}")
    defaults = {name: signature.parameters[name].default for name in allowed}
    return {**defaults, **train_kwargs, **fixed}


def ensure_pretrained_tiny_clip(
    cache_dir: str | os.PathLike,
    spec: SyntheticSpec = PRETRAIN_SPEC,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    device: str = "cpu",
    **train_kwargs,
) -> Path:
    """Weights of ``viewcoop-tiny`` pretrained on a synthetic set; trained once, then cached.

    Draws ``make_synthetic(spec)`` into ``cache_dir/pretrain-data/<parameters>`` and
    trains at ``spec.image_size`` with ``pretrain_clip`` (its other keywords in
    ``train_kwargs``: ``epochs``, ``batch_size``, ``lr``, ...). ``max_seconds`` bounds
    drawing plus training: training gets what drawing left.

    The weights file ``clip-viewcoop-tiny-<key>.pt`` hashes every generation and
    training parameter (defaults included), so changing any of them trains anew; the
    sidecar ``<same name>.json`` records them with the training summary. A second call
    with the same arguments returns at once.

    Keep ``spec.seed`` different from the re-id set's seed: the same seed would draw the
    same identities, and the backbone would have seen the evaluation vehicles.
    """
    start = time.perf_counter()
    image_size = spec.image_size
    generation = spec.to_dict()
    training = _training_parameters(image_size, {**train_kwargs, "max_seconds": max_seconds})
    parameters = {"format": PRETRAIN_FORMAT_VERSION, "data": generation, "training": training}
    cache = claim_output_dir(cache_dir, "pretrained-cache", purpose="pretrained weights")
    weights = cache / f"clip-{TINY_MODEL_NAME}-{_cache_key(parameters)}.pt"
    sidecar = weights.with_suffix(".json")
    if weights.is_file() and sidecar.is_file():
        logger.info("using cached pretrained CLIP weights %s", weights)
        return weights
    data_dir = (
        cache
        / "pretrain-data"
        / f"ids{spec.num_ids}-cams{spec.num_cameras}-ipc{spec.images_per_camera}"
        f"-px{image_size}-seed{spec.seed}"
    )
    ensure_synthetic(data_dir, spec)
    remaining = (
        None if max_seconds is None else max(0.0, max_seconds - (time.perf_counter() - start))
    )
    summary = pretrain.pretrain_clip(
        data_dir, weights, **{**training, "max_seconds": remaining}, device=device
    )
    # Written last: the pair (weights, sidecar) marks a finished run.
    sidecar.write_text(json.dumps({"parameters": parameters, "summary": asdict(summary)}, indent=1))
    return weights
