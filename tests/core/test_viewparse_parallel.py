"""Parser training over several CPU processes (``train_parallel.py``): it learns, the same
settings give the same weights, each process draws its own share, bad splits are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from viewcoop_core.viewparse.spec import ParserSpec, TrainSettings
from viewcoop_core.viewparse.train import fit_parser
from viewcoop_core.viewparse.train_parallel import (
    finished_despite_a_crash,
    rank_generator,
    share_size,
)

SPEC = ParserSpec(input_size=32, base_channels=4, depth=1)


def _learnable_pairs() -> tuple[np.ndarray, np.ndarray]:
    # Left half front (red), right half side (blue).
    images = np.zeros((8, 3, 32, 32), np.uint8)
    images[:, 0, :, :16] = 220
    images[:, 2, :, 16:] = 220
    masks = np.zeros((8, 32, 32), np.uint8)
    masks[:, :, :16], masks[:, :, 16:] = 1, 4
    return images, masks


def test_two_processes_learn_the_task_and_repeat_to_the_bit():
    images, masks = _learnable_pairs()
    settings = TrainSettings(steps=60, batch_size=4, lr=1e-2, log_every=10)
    seen = []
    model, history = fit_parser(
        images, masks, SPEC, settings, progress=lambda step, _: seen.append(step), processes=2
    )
    assert history[-1] < 0.5 * history[0]
    predicted = model(model.normalise(torch.from_numpy(images[:1]))).argmax(1)[0].numpy()
    assert (predicted == masks[0]).mean() > 0.9
    assert seen and seen[-1] == settings.steps and seen == sorted(seen)
    again, again_history = fit_parser(images, masks, SPEC, settings, processes=2)
    assert again_history == history
    for (name, value), other in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(value, other), name


def test_rank_zero_draws_the_single_process_stream_and_the_others_their_own():
    single = torch.randint(1000, (16,), generator=torch.Generator().manual_seed(5))
    rank0 = torch.randint(1000, (16,), generator=rank_generator(5, 0))
    rank1 = torch.randint(1000, (16,), generator=rank_generator(5, 1))
    assert torch.equal(rank0, single)
    assert not torch.equal(rank1, single)
    other_seed = torch.randint(1000, (16,), generator=rank_generator(6, 1))
    assert not torch.equal(rank1, other_seed)


def test_a_batch_that_does_not_split_and_a_gpu_are_refused():
    assert share_size(TrainSettings(batch_size=16), 2) == 8
    with pytest.raises(ValueError, match="batch_size=9 does not split over 2 processes"):
        share_size(TrainSettings(batch_size=9), 2)
    with pytest.raises(ValueError, match="processes=0"):
        share_size(TrainSettings(), 0)
    images, masks = _learnable_pairs()
    with pytest.raises(ValueError, match="on cuda train with processes=1"):
        fit_parser(images, masks, SPEC, TrainSettings(steps=2, batch_size=4), "cuda", None, 2)


def test_train_parser_refuses_a_bad_split_before_reading_images(tmp_path, monkeypatch):
    from viewcoop_core.viewparse import train as train_module

    def never(*_args, **_kwargs):
        raise AssertionError("images were read before the split was checked")

    monkeypatch.setattr(train_module, "paired_files", never)
    settings = TrainSettings(steps=2, batch_size=9)
    with pytest.raises(ValueError, match="batch_size=9 does not split over 2 processes"):
        train_module.train_parser(
            [tmp_path], tmp_path, tmp_path / "p.pt", SPEC, settings, processes=2
        )


def test_auto_takes_one_process_per_thread_with_shares_of_eight(monkeypatch):
    from viewcoop_core.viewparse.train_parallel import resolve_processes

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert resolve_processes("auto", cpu, 16) == 2
    assert resolve_processes("auto", cpu, 8) == 1  # shares of 4 would change BatchNorm
    assert resolve_processes("auto", gpu, 16) == 1
    assert resolve_processes(3, cpu, 16) == 3  # as given (then share_size refuses it)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert resolve_processes("auto", cpu, 24) == 3
    assert resolve_processes("auto", cpu, 40) == 5
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert resolve_processes("auto", cpu, 16) == 1


def test_ctrl_c_stops_every_process_and_leaves_no_checkpoint_or_temporary(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from viewcoop_core.synthetic import SyntheticSpec, make_synthetic

    root = tmp_path / "syn"
    make_synthetic(
        root, SyntheticSpec(num_ids=4, num_cameras=2, images_per_camera=2, image_size=32)
    )
    temporary, out, log = tmp_path / "tmp", tmp_path / "p.pt", tmp_path / "train.log"
    temporary.mkdir()
    command = [
        sys.executable,
        "-c",
        "from orchestrator.cli import main; raise SystemExit(main())",
        "parse-views",
        "train",
        "--images",
        str(root / "image_train"),
        "--masks",
        str(root / "masks"),
        "--out",
        str(out),
        "--steps",
        "100000",
        "--batch-size",
        "4",
        "--processes",
        "2",
        "--threads",
        "2",
        "--input-size",
        "32",
        "--base-channels",
        "4",
        "--depth",
        "2",
    ]
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(temporary)},
            start_new_session=True,  # a process group of its own, as a terminal's job is
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        deadline = time.monotonic() + 120
        while "parser step" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.5)
        assert list(temporary.glob("viewcoop-parser-*")), "the processes' folder is missing"
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends
        assert process.wait(timeout=60) != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:  # multiprocessing's resource tracker leaves when its last user has gone
        survivors = subprocess.run(
            ["pgrep", "-a", "-g", str(process.pid)], capture_output=True, text=True
        ).stdout.splitlines()
        if not survivors or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert survivors == []
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    assert not list(temporary.glob("viewcoop-parser-*"))


def test_a_process_that_dies_after_the_last_barrier_leaves_a_finished_run(tmp_path):
    # CI once saw a gloo child abort while shutting down after training had finished; the
    # run counts as finished only when every process passed the barrier and rank 0's
    # weights are on disk.
    assert not finished_despite_a_crash(tmp_path, 2)
    (tmp_path / "rank0_state.pt").write_bytes(b"weights")
    (tmp_path / "rank0.finished").touch()
    assert not finished_despite_a_crash(tmp_path, 2)  # rank 1 may have died mid-training
    (tmp_path / "rank1.finished").touch()
    assert finished_despite_a_crash(tmp_path, 2)
    (tmp_path / "rank0_state.pt").unlink()
    assert not finished_despite_a_crash(tmp_path, 2)


def test_the_join_forgives_a_shutdown_crash_only_after_the_run_finished(tmp_path, caplog):
    import torch.multiprocessing as torch_mp

    from viewcoop_core.viewparse.train_parallel import _joined

    class DiedWithSigabrt:
        def join(self, timeout):
            raise torch_mp.ProcessExitedException(
                "process 1 terminated with signal SIGABRT", 1, 7, -6, "SIGABRT"
            )

    with pytest.raises(torch_mp.ProcessExitedException):
        _joined(DiedWithSigabrt(), str(tmp_path), 2)
    for name in ("rank0_state.pt", "rank0.finished", "rank1.finished"):
        (tmp_path / name).touch()
    assert _joined(DiedWithSigabrt(), str(tmp_path), 2)
    assert "process 1 died while shutting down after the run finished" in caplog.text
