"""Parser checkpoints: one ``.pt`` file of tensors and plain data, loaded weights-only.

Contents: ``format`` (this module's tag and version), ``spec`` (``ParserSpec`` as a dict:
the architecture and input convention), ``state_dict`` and ``training`` (a plain dict of
what produced it: data, steps, seed, losses). Nothing in it needs unpickling code, so
``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from viewcoop_core.viewparse.model import ViewParserNet, build_parser
from viewcoop_core.viewparse.spec import ParserSpec

FORMAT = "viewcoop-view-parser/1"


class ParserCheckpointError(ValueError):
    """A file that is not a loadable view-parser checkpoint (named in the message)."""


def save_parser(
    path: str | os.PathLike[str], model: ViewParserNet, training: dict[str, Any]
) -> Path:
    """Write the checkpoint to a temporary name, then rename it: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "spec": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training,
    }
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def read_parser_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's dict, loaded with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"view-parser checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ParserCheckpointError(
            f"{path} is not a loadable view-parser checkpoint ({type(error).__name__}: {error}); "
            "make one with `viewcoop parse-views train`"
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ParserCheckpointError(
            f"{path} is not a view-parser checkpoint (format {found!r}, expected {FORMAT!r}); "
            "make one with `viewcoop parse-views train`"
        )
    return state


def load_parser(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[ViewParserNet, dict[str, Any]]:
    """(model in eval mode on ``device``, the checkpoint's ``training`` record)."""
    state = read_parser_checkpoint(path)
    try:
        model = build_parser(ParserSpec.from_dict(state["spec"]))
        model.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ParserCheckpointError(f"{path}: cannot rebuild the parser ({error})") from error
    return model.to(device).eval(), dict(state.get("training", {}))


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex): what identifies a checkpoint in cache keys."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
