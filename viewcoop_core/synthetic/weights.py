"""Making the shipped synthetic CLIP weights: draw the recipe's synthetic set, pretrain,
and write the weights with a JSON record of the recipe, the summary and the checksum.

The project ships the results in ``viewcoop_core/models/weights/`` (e.g.
``viewcoop-tiny-synthetic.safetensors``; ``build_clip("viewcoop-tiny",
pretrained="synthetic")`` loads it and checks the checksum); ``viewcoop pretrain-tiny``
(``--model`` for the other architecture) remakes them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from viewcoop_core.models.shipped import file_sha256, record_path
from viewcoop_core.outputs import ForeignOutputError, claim_output_dir
from viewcoop_core.synthetic import pretrain
from viewcoop_core.synthetic.recipe import PretrainRecipe
from viewcoop_core.synthetic.writer import ensure_synthetic

logger = logging.getLogger(__name__)

WORK_KIND = "pretrain-work"


def _check_replaceable(out_path: Path) -> None:
    """An existing weights file is replaced only when the project made it (its JSON
    record names a recipe)."""
    if not out_path.exists():
        return
    record = record_path(out_path)
    try:
        ours = "recipe" in json.loads(record.read_text())
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise ForeignOutputError(
            f"refusing to overwrite {out_path}: it was not written by viewcoop pretrain-tiny "
            f"(no {record.name} with its recipe next to it); choose another --out"
        )


def make_synthetic_clip_weights(
    out_path: str | os.PathLike,
    recipe: PretrainRecipe,
    work_dir: str | os.PathLike,
    device: str = "cpu",
) -> pretrain.PretrainSummary:
    """Draw ``recipe.spec`` under ``work_dir`` (a folder the project owns), pretrain
    ``recipe.model`` with ``recipe`` and write ``out_path`` (.safetensors) and its JSON
    record (recipe, summary, sha256 of the weights)."""
    out_path = Path(out_path).expanduser()
    _check_replaceable(out_path)
    work = claim_output_dir(work_dir, WORK_KIND, purpose="the pretraining set")
    spec = recipe.spec
    data_dir = work / (
        f"ids{spec.num_ids}-cams{spec.num_cameras}-ipc{spec.images_per_camera}"
        f"-px{spec.image_size}-seed{spec.seed}"
    )
    ensure_synthetic(data_dir, spec)
    summary = pretrain.pretrain_clip(data_dir, out_path, recipe, device=device)
    record_file = record_path(out_path)
    record = json.loads(record_file.read_text())
    record["sha256"] = file_sha256(out_path)
    record_file.write_text(json.dumps(record, indent=1) + "\n")
    logger.info("weights %s (sha256 %s)", out_path, record["sha256"][:16])
    return summary
