"""CLIP backbone factory and the two encoder entry points the method needs.

``build_clip`` wraps ``open_clip.create_model`` (random init, a local weights file or an
open_clip pretrained tag) and forces the vision input size (256x256 for vehicles by
default). ``encode_image`` returns the projected CLS feature used for re-id together
with the patch tokens projected the same way. ``encode_text_embeddings`` runs CLIP's
text tower on token *embeddings* rather than token ids, which is what prompt learning
needs: learnable context vectors are spliced into the embedded sentence before the
transformer.

Two small architectures are registered on demand so that tests, the CPU demo and the
synthetic benchmark can build a real open_clip CLIP with the real 49,408-token BPE
vocabulary and 77-token context in well under a second, without any download:
``viewcoop-tiny`` and ``viewcoop-small`` (every width doubled).
"""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import Tensor, nn

from viewcoop_core.models.shipped import shipped_weights
from viewcoop_core.models.weight_files import load_weights_file, resolve_weights_file
from viewcoop_core.vocabulary import (
    PROJECT_MODEL_NAMES,
    SHIPPED_WEIGHTS,
    SMALL_MODEL_NAME,
    TINY_MODEL_NAME,
)

logger = logging.getLogger(__name__)

TINY_MODEL_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 128,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 16,
    },
    "text_cfg": {
        # The real CLIP vocabulary and context length, so the real tokenizer applies.
        "context_length": 77,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 2,
    },
}
SMALL_MODEL_CONFIG: dict = {
    "embed_dim": 128,
    "vision_cfg": {**TINY_MODEL_CONFIG["vision_cfg"], "width": 128},
    "text_cfg": {**TINY_MODEL_CONFIG["text_cfg"], "width": 64},
}
PROJECT_MODEL_CONFIGS: dict[str, dict] = {
    TINY_MODEL_NAME: TINY_MODEL_CONFIG,
    SMALL_MODEL_NAME: SMALL_MODEL_CONFIG,
}
assert tuple(PROJECT_MODEL_CONFIGS) == PROJECT_MODEL_NAMES
_TEXT_POOL_AT_EOT = ("argmax", "eos")

_registry_lock = threading.Lock()


@dataclass
class ClipBundle:
    """A built CLIP model with what callers need alongside it.

    ``mean``/``std`` are the per-channel normalisation constants of the weights (RGB in
    [0, 1] space); ``image_size`` is the square vision input side in pixels;
    ``embed_dim`` is D, the width of the joint image/text feature space.
    """

    model: nn.Module
    tokenizer: open_clip.SimpleTokenizer
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    embed_dim: int
    model_name: str


def register_project_model(name: str = TINY_MODEL_NAME) -> str:
    """Register the project's architecture ``name`` (``viewcoop-tiny`` or
    ``viewcoop-small``) with open_clip's model-config registry (idempotent).

    Uses the public ``open_clip.add_model_config``, which reads JSON files; the file lives
    in a private temporary folder removed at interpreter exit. Each process (e.g. each
    Ray worker) registers its own copy. Returns the model name.
    """
    config = PROJECT_MODEL_CONFIGS[name]
    with _registry_lock:
        if name in open_clip.list_models():
            return name
        config_dir = Path(tempfile.mkdtemp(prefix="viewcoop-open-clip-configs-"))
        atexit.register(shutil.rmtree, config_dir, ignore_errors=True)
        config_file = config_dir / f"{name}.json"
        config_file.write_text(json.dumps(config, indent=2))
        open_clip.add_model_config(config_file)
        logger.debug("registered open_clip model config %s from %s", name, config_file)
    return name


def build_clip(
    model_name: str = "ViT-B-16",
    pretrained: str | None = None,
    image_size: int | None = 256,
    device: str | torch.device = "cpu",
) -> ClipBundle:
    """Build an open_clip CLIP model, its tokenizer and preprocessing constants.

    Args:
        model_name: an open_clip architecture name (``ViT-B-16``; use
            ``ViT-B-16-quickgelu`` with OpenAI's weights, which were trained with
            QuickGELU) or ``viewcoop-tiny`` / ``viewcoop-small`` (registered here, for
            tests, the CPU demo and the synthetic benchmark).
        pretrained: ``None`` for random init; a local weights file (``.pt``/``.pth``/
            ``.bin`` read with ``torch.load(weights_only=True)``, or ``.safetensors``)
            holding a CLIP state dict, possibly nested under ``"state_dict"`` or
            ``"model"``; or an open_clip pretrained tag such as ``"openai"`` or
            ``"laion2b_s34b_b88k"``, which open_clip fetches (network or a warm cache);
            or ``"synthetic"``, the tiny CLIP's shipped weights (``models/shipped.py``).
            A checkpoint trained at another input size has its vision positional
            embedding resized to this model's patch grid (bicubic, open_clip's helper).
        image_size: square vision input side in pixels (must be a multiple of the
            patch size); ``None`` keeps the architecture's default (224 for ViT-B-16,
            128 for the project's architectures).
        device: where the model is placed.

    Raises:
        ValueError: unknown architecture, unknown pretrained tag, bad file suffix or
            a checkpoint that does not match the architecture.
        FileNotFoundError: ``pretrained`` names a weights file that does not exist.
        RuntimeError: open_clip could not obtain the weights of a pretrained tag.
    """
    if model_name in PROJECT_MODEL_CONFIGS:
        register_project_model(model_name)
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(
            f"unknown CLIP architecture model_name={model_name!r}; use the project's "
            f"{', '.join(map(repr, PROJECT_MODEL_NAMES))} "
            f"or one of open_clip's: {', '.join(open_clip.list_models())}"
        )
    patch_size = config["vision_cfg"].get("patch_size")
    if image_size is not None and patch_size and image_size % patch_size:
        raise ValueError(
            f"image_size={image_size} must be a multiple of {model_name}'s patch size {patch_size}"
        )
    if pretrained in SHIPPED_WEIGHTS:
        weights_file = shipped_weights(pretrained, model_name)
    else:
        weights_file = resolve_weights_file(pretrained)
    tag = pretrained if pretrained is not None and weights_file is None else None
    if tag is not None:
        _check_pretrained_tag(model_name, tag)

    # open_clip warns "No pretrained weights loaded ... initialized randomly" whenever it
    # loads none itself: untrue before load_weights_file below, and asked for with
    # pretrained=None (logged as "random init"). Only that root-logger record is dropped.
    drop = _random_init_warning_filter(model_name)
    logging.getLogger().addFilter(drop)
    try:
        model = open_clip.create_model(
            model_name, pretrained=tag, force_image_size=image_size, device="cpu"
        )
    except Exception as error:
        if tag is None:
            raise
        raise RuntimeError(
            f"open_clip could not load pretrained={tag!r} for {model_name!r} ({error}). "
            "Tags need network access or a warm open_clip/Hugging Face cache; "
            "alternatively pass a local weights file as `pretrained`."
        ) from error
    finally:
        logging.getLogger().removeFilter(drop)
    if weights_file is not None:
        load_weights_file(model, weights_file)
    model = model.to(device)

    preprocess = open_clip.get_model_preprocess_cfg(model)
    side = _square_image_side(model)
    bundle = ClipBundle(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        mean=tuple(float(v) for v in preprocess["mean"]),
        std=tuple(float(v) for v in preprocess["std"]),
        image_size=side,
        embed_dim=int(config["embed_dim"]),
        model_name=model_name,
    )
    logger.info(
        "built CLIP %s (%s) at %dx%d, embed_dim=%d, %.2fM parameters",
        model_name,
        pretrained or "random init",
        side,
        side,
        bundle.embed_dim,
        count_parameters(model) / 1e6,
    )
    return bundle


def _random_init_warning_filter(model_name: str):
    """A logging filter dropping open_clip's random-init warning for ``model_name``."""
    text = f"No pretrained weights loaded for model '{model_name}'"
    return lambda record: not record.getMessage().startswith(text)


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters())


def encode_image(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """Image features of a ViT CLIP: the projected CLS feature and projected patch tokens.

    Args:
        model: an open_clip CLIP whose ``visual`` is a ``VisionTransformer``.
        images: float [B, 3, H, W], normalised with the bundle's mean/std.

    Returns:
        ``(global_features, patch_features)``: float [B, D] (what re-id uses, equal to
        ``model.encode_image(images)``) and float [B, P, D] with P = (H/16)*(W/16) patch
        tokens after ``ln_post`` and the same projection, for patch-to-global
        correlations. Neither is L2-normalised. When only the global feature is needed,
        ``model.encode_image`` saves the patch projection.
    """
    visual = model.visual
    if not hasattr(visual, "forward_intermediates") or getattr(visual, "proj", None) is None:
        raise TypeError(
            "encode_image needs an open_clip VisionTransformer tower with a projection "
            f"(got {type(visual).__name__}); use a ViT-* architecture"
        )
    # forward_intermediates is open_clip's public way to obtain the final-block tokens and
    # the pooled, projected feature from a single pass.
    out = visual.forward_intermediates(
        images, indices=1, normalize_intermediates=True, output_fmt="NLC"
    )
    patch_tokens = out["image_intermediates"][-1]
    return out["image_features"], patch_tokens @ visual.proj


def encode_text_embeddings(
    model: nn.Module, token_embeddings: Tensor, eot_indices: Tensor
) -> Tensor:
    """CLIP's text tower on already-embedded tokens.

    Adds the positional embedding, runs the transformer with the model's causal mask,
    pools each row at its EOT position, applies ``ln_final`` and the text projection:
    ``encode_text_embeddings(m, m.token_embedding(t), t.argmax(-1)) == m.encode_text(t)``.

    Sequences may be shorter than the context length (77): under the causal mask the
    tokens after EOT never influence the EOT output, so batches are padded only to their
    own longest prompt.

    Args:
        model: an open_clip ``CLIP`` (text tower attributes on the model itself).
        token_embeddings: float [B, L, W], L <= context length, W the text width.
        eot_indices: long [B], position of each row's end-of-text token.

    Returns:
        float [B, D] text features, not normalised.
    """
    _check_text_tower(model)
    batch, length, _ = token_embeddings.shape
    context_length = model.positional_embedding.shape[0]
    if length > context_length:
        raise ValueError(f"prompt length {length} exceeds CLIP's context length {context_length}")
    if eot_indices.shape != (batch,):
        raise ValueError(f"eot_indices must have shape [{batch}], got {tuple(eot_indices.shape)}")
    if batch and (int(eot_indices.min()) < 0 or int(eot_indices.max()) >= length):
        raise ValueError(f"eot_indices must lie in [0, {length}), got {eot_indices.tolist()}")

    cast_dtype = model.transformer.get_cast_dtype()
    x = token_embeddings.to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    attn_mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = _run_text_transformer(model.transformer, x, attn_mask)
    # ln_final is per token, so pooling first is identical and skips L-1 norms per row.
    x = x[torch.arange(batch, device=x.device), eot_indices.to(x.device)]
    x = model.ln_final(x)
    projection = model.text_projection
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection


def _run_text_transformer(transformer: nn.Module, x: Tensor, attn_mask: Tensor | None) -> Tensor:
    """Run open_clip's text ``Transformer`` on batch-first x [B, L, W].

    open_clip >= 2.24 transposes inside ``Transformer.forward`` (it has ``batch_first``);
    older versions expect sequence-first input.
    """
    if hasattr(transformer, "batch_first"):
        return transformer(x, attn_mask=attn_mask)
    return transformer(x.permute(1, 0, 2), attn_mask=attn_mask).permute(1, 0, 2)


def _check_text_tower(model: nn.Module) -> None:
    required = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    missing = [name for name in required if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} lacks {missing}: encode_text_embeddings needs an open_clip "
            "CLIP with the built-in text transformer (not CustomTextCLIP / HF text towers)"
        )
    pool_type = getattr(model, "text_pool_type", "argmax")
    if pool_type not in _TEXT_POOL_AT_EOT:
        raise ValueError(
            f"text_pool_type={pool_type!r} is not supported; prompts are pooled at EOT "
            f"({_TEXT_POOL_AT_EOT})"
        )


def _square_image_side(model: nn.Module) -> int:
    size = open_clip.get_model_preprocess_cfg(model)["size"]
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height != width:
        raise ValueError(f"only square inputs are supported, got {height}x{width}")
    return int(height)


def _check_pretrained_tag(model_name: str, tag: str) -> None:
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if tag not in tags:
        raise ValueError(
            f"pretrained={tag!r} is neither an existing weights file nor an open_clip tag for "
            f"{model_name!r}; known tags: {tags or 'none'}"
        )
