"""CLIP backbone factory, encoders on custom token embeddings, and the prompt learners."""

from viewcoop_core.models.clip import (
    TINY_MODEL_NAME,
    ClipBundle,
    build_clip,
    count_parameters,
    encode_image,
    encode_text_embeddings,
    load_weights_file,
    register_tiny_model,
)
from viewcoop_core.models.prompts import (
    PROMPT_VARIANTS,
    VIEW_NAMES,
    PromptBatch,
    PromptLearner,
    build_prompt_learner,
    clause_orders,
    encode_prompts,
    viewcoop_sentence,
)

__all__ = [
    "PROMPT_VARIANTS",
    "TINY_MODEL_NAME",
    "VIEW_NAMES",
    "ClipBundle",
    "PromptBatch",
    "PromptLearner",
    "build_clip",
    "build_prompt_learner",
    "clause_orders",
    "count_parameters",
    "encode_image",
    "encode_prompts",
    "encode_text_embeddings",
    "load_weights_file",
    "register_tiny_model",
    "viewcoop_sentence",
]
