"""Fault injection for the tests that prove the loop survives what clusters do to it.

Off unless the environment variable ``VIEWCOOP_INJECT_FAULT`` is set (the fault tests set
it through Ray's ``runtime_env``); each fault fires once per run:

* ``worker_exit@epoch=E,rank=R``: Train worker R exits hard after epoch E's clustering
  (a preempted node); Ray Train restarts the group from the last checkpoint.
* ``actor_exit@epoch=E``: the clustering actor exits hard when asked to cluster epoch E
  (its first life only); Ray restarts it and the workers send their shards again.
* ``nan@epoch=E``: epoch E trains from parameters set to NaN, so its losses are NaN.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray
import torch

logger = logging.getLogger(__name__)

ENV = "VIEWCOOP_INJECT_FAULT"


def planned(kind: str) -> dict[str, int] | None:
    """The parameters of fault ``kind`` when it is requested, else None."""
    spec = os.environ.get(ENV, "")
    for item in spec.split(";"):
        name, _, params = item.strip().partition("@")
        if name == kind:
            pairs = (p.split("=", 1) for p in params.split(",") if p)
            return {key.strip(): int(value) for key, value in pairs}
    return None


def worker_exit(epoch: int, rank: int, run_dir: str | os.PathLike) -> None:
    fault = planned("worker_exit")
    if fault is None or (fault["epoch"], fault["rank"]) != (epoch, rank):
        return
    fired = Path(run_dir) / ".fault-worker_exit"
    if fired.exists():
        return
    fired.write_text(f"epoch {epoch} rank {rank}\n")
    logger.warning("fault injection: Train worker %d exits during epoch %d", rank, epoch)
    os._exit(1)


def actor_exit(epoch: int) -> None:
    fault = planned("actor_exit")
    if fault is None or fault["epoch"] != epoch:
        return
    if ray.get_runtime_context().was_current_actor_reconstructed:
        return
    logger.warning("fault injection: the clustering actor exits while clustering epoch %d", epoch)
    os._exit(1)


def poison_parameters(model: torch.nn.Module, epoch: int) -> None:
    fault = planned("nan")
    if fault is None or fault["epoch"] != epoch:
        return
    logger.warning("fault injection: parameters set to NaN before training epoch %d", epoch)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.fill_(float("nan"))
