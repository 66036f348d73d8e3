"""Weights shipped with the project: ``model.pretrained: synthetic``.

The tiny CLIP pretrained on captioned synthetic vehicles lives in
``viewcoop_core/models/weights/`` next to a JSON record of the recipe that made it and
the file's SHA-256 (``viewcoop pretrain-tiny`` remakes it). Every load checks the
checksum, so a damaged file (or a Git LFS pointer in its place) fails with its name
instead of giving a silently different backbone. No torch import: the driver checks the
file before Ray starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from viewcoop_core.vocabulary import SHIPPED_WEIGHTS

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class ShippedWeightsError(ValueError):
    """A shipped weights file is missing, or does not match its recorded checksum."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(weights: Path) -> Path:
    """The JSON record next to a weights file (recipe, summary, sha256)."""
    return weights.with_suffix(".json")


def shipped_weights(tag: str, model_name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """The verified file of the shipped weights ``tag`` for architecture ``model_name``.

    Raises ``ShippedWeightsError`` naming the file when it is missing, has no record,
    or its SHA-256 differs from the record's; ``ValueError`` for a tag of another model.
    """
    files = SHIPPED_WEIGHTS[tag]
    if model_name not in files:
        raise ValueError(
            f"pretrained={tag!r} ships weights for {' and '.join(map(repr, files))}, "
            f"not model.name={model_name!r}"
        )
    path = weights_dir / files[model_name]
    record = record_path(path)
    if not path.is_file() or not record.is_file():
        raise ShippedWeightsError(
            f"the shipped weights {path} (or its record {record.name}) are missing from this "
            f"installation; reinstall viewcoop or remake them with `viewcoop pretrain-tiny "
            f"--out {path}`"
        )
    expected = json.loads(record.read_text()).get("sha256")
    actual = file_sha256(path)
    if actual != expected:
        raise ShippedWeightsError(
            f"{path} has SHA-256 {actual[:16]}..., but {record.name} records "
            f"{str(expected)[:16]}...: the file is damaged or was replaced (a Git LFS "
            f"pointer?); reinstall viewcoop or remake it with `viewcoop pretrain-tiny`"
        )
    return path
