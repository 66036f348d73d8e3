"""CPU parallelism for the sparse stages: Python threads over row chunks, one torch
thread each.

The sparse stages are many memory-bound calls (gathers, scatters, SciPy kernels). With
torch's own intra-op threads every call is a parallel region whose threads wait for each
other; on a busy 2-core machine a descheduled thread stalls the whole region, and two
threads measured slower than one. Chunks on Python threads (torch and SciPy release the
GIL), each running its ops on one thread, scale instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def single_threaded_ops() -> Iterator[int]:
    """Run torch ops on one intra-op thread inside; yields the thread count outside it.

    Threads started inside (``thread_map``) take the one-thread setting at their first op.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield previous
    finally:
        torch.set_num_threads(previous)


def thread_map(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(x) for x in items]``, on ``threads`` threads when more than one."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(fn, items))


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of ``size`` covering 0..n."""
    return [(start, min(start + size, n)) for start in range(0, n, max(1, size))]
