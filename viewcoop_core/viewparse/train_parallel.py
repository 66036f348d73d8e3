"""Parser training split over CPU processes: each takes a share of every batch (DDP, gloo).

Why processes and not threads: the parser's convolutions are narrow (16-256 channels on
64-128 px maps), and torch's intra-op threads barely share them out. On the 2-core
machine one process at 2 threads trained 6,000 steps of 8 pairs in 13.9 min, and each of
two 1-thread processes side by side did the same in 14.2: two processes get twice the
pixels through in the same minutes (6,000 steps of 16 split over two: 12.4 min). So
``processes`` N splits each batch of ``settings.batch_size`` pairs into N shares of
``batch_size / N``; the gradients are averaged every step (``DistributedDataParallel``,
gloo), so the result is the same recipe as one process with the whole batch, up to
BatchNorm, whose statistics each process takes over its own share.

The processes meet through a file in a private temporary folder (no port is opened); rank
0's weights come back through a file in that folder, read with ``weights_only=True``. The
work is fixed by ``settings`` (steps, batch, seed): on one machine the same command gives
the same weights to the bit (tested).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch.nn.parallel import DistributedDataParallel

from viewcoop_core.viewparse.model import ViewParserNet, build_parser
from viewcoop_core.viewparse.spec import ParserSpec, TrainSettings
from viewcoop_core.viewparse.train import ProgressFn, check_training_arrays, run_steps

logger = logging.getLogger(__name__)

_RESULT = "rank0_state.pt"
_FINISHED = "rank{}.finished"

MIN_SHARE = 8
"""Pairs per process per step that ``auto`` keeps: BatchNorm takes its statistics over a
process's share, and 8 is the batch those statistics were measured with."""


def resolve_processes(requested: int | str, device: torch.device, batch_size: int) -> int:
    """``"auto"``: 1 on a GPU; on a CPU one process per torch thread (the cores, or what
    ``torch.set_num_threads`` / ``--threads`` chose), each with at least ``MIN_SHARE``
    pairs per step, a divisor of ``batch_size``. A number is used as given."""
    if requested != "auto":
        return int(requested)
    if device.type != "cpu":
        return 1
    most = max(1, min(torch.get_num_threads(), batch_size // MIN_SHARE))
    return max(n for n in range(1, most + 1) if batch_size % n == 0)


def share_size(settings: TrainSettings, processes: int) -> int:
    """Pairs per process per step; the batch must split evenly."""
    if processes < 1:
        raise ValueError(f"parser training processes={processes} must be >= 1")
    if settings.batch_size % processes:
        raise ValueError(
            f"parser training batch_size={settings.batch_size} does not split over "
            f"{processes} processes: use a multiple of {processes}"
        )
    return settings.batch_size // processes


def check_processes(
    settings: TrainSettings, processes: int, device: str | torch.device = "cpu"
) -> None:
    """Refuse a split the training cannot make: more than one process off the CPU, or a
    batch that does not divide evenly (``share_size``)."""
    share_size(settings, processes)
    if processes > 1 and torch.device(device).type != "cpu":
        raise ValueError(
            f"parser training processes={processes} splits batches over CPU processes; "
            f"on {device} train with processes=1"
        )


def rank_generator(seed: int, rank: int) -> torch.Generator:
    """The batch and augmentation stream of one process: rank 0 draws what a single
    process with ``seed`` would draw; the others draw independent streams of the seed."""
    if rank == 0:
        return torch.Generator().manual_seed(seed)
    state = np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _worker(
    rank: int,
    processes: int,
    folder: str,
    images: torch.Tensor,
    masks: torch.Tensor,
    spec: ParserSpec,
    settings: TrainSettings,
    threads: int,
    steps_done,
    window_end,
    window_loss,
) -> None:
    torch.set_num_threads(threads)
    if rank:  # one process speaks for all
        logging.getLogger("viewcoop_core").setLevel(logging.WARNING)
    store = Path(folder) / "rendezvous"
    dist.init_process_group("gloo", init_method=store.as_uri(), rank=rank, world_size=processes)
    try:
        torch.manual_seed(settings.seed)  # the same initial weights in every process
        model = DistributedDataParallel(build_parser(spec).train())

        window: list[float] = []

        def on_step(step: int, loss: float) -> None:
            if rank:
                return
            window.append(loss)
            if len(window) == settings.log_every or step == settings.steps:
                # Rank 0's share of the window, for the log line this process cannot write.
                window_loss.value = float(np.mean(window))
                window.clear()
                window_end.value = step
            steps_done.value = step

        history = run_steps(
            model,
            images,
            masks,
            spec,
            settings,
            share_size(settings, processes),
            rank_generator(settings.seed, rank),
            "cpu",
            on_step,
        )
        # The logged loss: the mean over the processes' shares of each window.
        mean_history = torch.tensor(history, dtype=torch.float64)
        dist.all_reduce(mean_history)
        if rank == 0:
            state = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
            torch.save(
                {"state_dict": state, "history": (mean_history / processes).tolist()},
                Path(folder) / _RESULT,
            )
        dist.barrier()
        # Past the barrier every process has taken every step and rank 0's weights are on
        # disk: the work is complete whatever happens while the process shuts down.
        (Path(folder) / _FINISHED.format(rank)).touch()
        # DDP's reducer holds the process group: free it first, so that the group's gloo
        # threads are joined by destroy_process_group, not left to interpreter shutdown.
        del model
        gc.collect()
    finally:
        dist.destroy_process_group()
    # Leave without interpreter finalisation, as multiprocessing's fork start does: a
    # gloo child killed itself with "terminate called without an active exception" while
    # shutting down after a finished run (seen once, in CI), and nothing is left to
    # tear down that the operating system does not free.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def finished_despite_a_crash(folder: str | Path, processes: int) -> bool:
    """Whether a run whose process died still finished: every process passed the last
    barrier (its marker is there) and rank 0's weights were written before it."""
    folder = Path(folder)
    markers = all((folder / _FINISHED.format(rank)).exists() for rank in range(processes))
    return markers and (folder / _RESULT).exists()


def _joined(context: torch_mp.ProcessContext, folder: str, processes: int) -> bool:
    """``context.join`` for half a second; a process that died after the run finished
    (``finished_despite_a_crash``) is logged, not raised."""
    try:
        return context.join(timeout=0.5)
    except torch_mp.ProcessExitedException as error:
        if not finished_despite_a_crash(folder, processes):
            raise
        logger.warning(
            "parser training process %d died while shutting down after the run finished "
            "(%s); its work was complete and rank 0's weights are used",
            error.error_index,
            error,
        )
        return True


def fit_parser_parallel(
    images: np.ndarray,
    masks: np.ndarray,
    spec: ParserSpec,
    settings: TrainSettings,
    processes: int,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> tuple[ViewParserNet, list[float]]:
    """``fit_parser`` with every batch split over ``processes`` CPU processes.

    Args:
        images: uint8[N, 3, S, S]; masks: uint8[N, S, S] (``fit_parser``).
        processes: >= 2; ``settings.batch_size`` must be a multiple of it.
        progress: called in this process with (steps done, nan) as rank 0 advances.

    Returns:
        (rank 0's model in eval mode, the mean loss of every ``log_every`` steps over all
        processes).
    """
    check_processes(settings, processes, device)
    check_training_arrays(images, masks, spec)
    threads = max(1, torch.get_num_threads() // processes)
    image_bank = torch.from_numpy(images).share_memory_()
    mask_bank = torch.from_numpy(masks).share_memory_()
    spawn = multiprocessing.get_context("spawn")
    steps_done, window_end, window_loss = spawn.Value("i", 0), spawn.Value("i", 0), spawn.Value("d")
    logger.info(
        "parser training: %d processes x %d thread(s), %d pairs each per step",
        processes,
        threads,
        settings.batch_size // processes,
    )
    with tempfile.TemporaryDirectory(prefix="viewcoop-parser-") as folder:
        context = torch_mp.start_processes(
            _worker,
            args=(
                processes,
                folder,
                image_bank,
                mask_bank,
                spec,
                settings,
                threads,
                steps_done,
                window_end,
                window_loss,
            ),
            nprocs=processes,
            join=False,
            start_method="spawn",
        )
        reported = logged = 0
        while not _joined(context, folder, processes):
            done = steps_done.value
            if progress is not None and done > reported:
                progress(done, float("nan"))
                reported = done
            if window_end.value > logged:
                logged = window_end.value
                logger.info(
                    "parser step %d/%d: loss %.4f (rank 0's share)",
                    logged,
                    settings.steps,
                    window_loss.value,
                )
        if progress is not None and reported < settings.steps:
            progress(settings.steps, float("nan"))
        result = torch.load(Path(folder) / _RESULT, map_location="cpu", weights_only=True)
    model = build_parser(spec)
    model.load_state_dict(result["state_dict"])
    history = result["history"]
    logger.info("parser trained in %d processes: final loss %.4f", processes, history[-1])
    return model.eval(), history
