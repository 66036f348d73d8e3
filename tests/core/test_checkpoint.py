"""Checkpoints hold tensors and plain data only and load without unpickling code."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from viewcoop_core.engine.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class RunsCode:
    """Unpickling this calls os.system: what a hostile state.pt would carry."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def minimal_state() -> dict:
    return {"model": {"w": torch.ones(2)}, "epoch": 3, "config": {"name": "x"}}


def test_round_trip_keeps_tensors_labels_and_rng_state(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = {**minimal_state(), "rng": rng_state(), "y_img": np.array([0, -1, 2])}
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint(tmp_path, **state)
    loaded = read_checkpoint(tmp_path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert loaded["y_img"].tolist() == [0, -1, 2]
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert not list(tmp_path.glob("*.partial"))


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    flag = tmp_path / "code-ran"
    torch.save({**minimal_state(), "payload": RunsCode(flag)}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="refusing to load .*state.pt"):
        read_checkpoint(tmp_path)
    assert not flag.exists()


def test_a_plain_pickle_that_would_run_code_is_refused(tmp_path):
    flag = tmp_path / "code-ran"
    (tmp_path / CHECKPOINT_FILE).write_bytes(pickle.dumps(RunsCode(flag), protocol=2))
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        read_checkpoint(tmp_path)
    assert not flag.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_names_the_file(tmp_path, content):
    (tmp_path / CHECKPOINT_FILE).write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{tmp_path}.*not a readable checkpoint"):
        read_checkpoint(tmp_path)


def test_a_truncated_checkpoint_names_the_file(tmp_path):
    path = save_checkpoint(tmp_path, **minimal_state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(path)


@pytest.mark.parametrize("saved", [[1, 2, 3], {"model": {}}, torch.zeros(3)])
def test_something_other_than_a_training_state_says_what_was_expected(tmp_path, saved):
    torch.save(saved, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="expected a dict with keys"):
        read_checkpoint(tmp_path)


def test_a_missing_checkpoint_names_the_place(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_checkpoint(tmp_path)


def test_an_interrupted_run_resumes_from_a_checkpoint_ray_did_not_list_yet(tmp_path):
    """Ctrl-C between a worker's report and the controller's snapshot left a checkpoint
    folder that Ray Train would not resume from: the driver hands it to the workers."""
    from orchestrator.train import CHECKPOINT_MANAGER_SNAPSHOT, unlisted_checkpoint

    assert unlisted_checkpoint(tmp_path / "no-run-yet") is None
    older, newer = tmp_path / "checkpoint_a", tmp_path / "checkpoint_b"
    for folder, epoch in ((older, 1), (newer, 2)):
        folder.mkdir()
        save_checkpoint(folder, **{**minimal_state(), "epoch": epoch})
    os.utime(older, (1, 1))
    assert unlisted_checkpoint(tmp_path) == str(newer)
    (newer / CHECKPOINT_FILE).write_bytes(b"cut off mid-write")
    assert unlisted_checkpoint(tmp_path) == str(older)  # a damaged one is skipped
    (tmp_path / CHECKPOINT_MANAGER_SNAPSHOT).write_text("{}")
    assert unlisted_checkpoint(tmp_path) is None  # Ray Train resumes by itself
