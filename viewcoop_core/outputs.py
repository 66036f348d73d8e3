"""Folders the project writes into: created by it, marked as its own, never someone else's.

Every writer (the synthetic generator, view-mask prediction, figures, runs and sweeps)
first calls ``claim_output_dir``: a missing or empty folder is created and marked with a
small marker file; a folder that already carries the same marker is ours and may be
written (and, for the parts we made, replaced); anything else is refused with an error
that names the folder and what is in it. Nothing the project did not create is ever
deleted or overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

MARKER_PREFIX = ".viewcoop-"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LISTED = 5


class ForeignOutputError(FileExistsError):
    """An output folder holds files the project did not create."""


def marker_path(folder: str | os.PathLike, kind: str) -> Path:
    return Path(folder) / f"{MARKER_PREFIX}{kind}"


def owns(folder: str | os.PathLike, kind: str) -> bool:
    """Whether ``folder`` was created by the project for ``kind`` outputs."""
    return marker_path(folder, kind).is_file()


def claim_output_dir(folder: str | os.PathLike, kind: str, purpose: str = "") -> Path:
    """Make ``folder`` a ``kind`` output folder of the project, or refuse.

    Missing or empty: created and marked. Marked for ``kind``: returned as it is. Anything
    else: ``ForeignOutputError`` naming the folder, a few of its entries and the way out.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ForeignOutputError(
            f"{folder} exists and is not a folder; choose another {purpose or kind} folder"
        )
    if owns(folder, kind):
        return folder
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if entries:
        listed = ", ".join(entries[:_LISTED]) + (" ..." if len(entries) > _LISTED else "")
        raise ForeignOutputError(
            f"refusing to write {purpose or kind} into {folder}: it already holds files this "
            f"project did not create ({listed}) and nothing there may be overwritten or "
            f"deleted. Choose an empty or new folder (a folder the project made carries the "
            f"marker file {MARKER_PREFIX}{kind})."
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_marker(folder, kind)
    return folder


@contextlib.contextmanager
def exclusive_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``folder`` (created if missing) while the block
    runs, so that two processes filling the same folder (two runs drawing one synthetic
    set) take turns instead of writing over each other. The lock is on the folder itself
    (``flock`` on its descriptor): no lock file is left behind, and it is released when
    the process ends, however it ends.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ForeignOutputError(f"{folder} exists and is not a folder; choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield folder
    finally:
        os.close(descriptor)  # closing releases the lock


def write_marker(folder: str | os.PathLike, kind: str) -> None:
    """Mark ``folder`` as a ``kind`` output of the project (same bytes every time)."""
    marker_path(folder, kind).write_text(json.dumps({"kind": kind}) + "\n")


def check_output_name(name: str, what: str) -> str:
    """A run or sweep name that stays one folder inside its parent (no separators, no '..')."""
    if not _SAFE_NAME.match(name or ""):
        raise ValueError(
            f"{what}={name!r} is not allowed: it names a folder under the storage path, so it "
            "must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"
        )
    return name
