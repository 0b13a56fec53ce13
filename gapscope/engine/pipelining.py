"""Products overlapped with their consumers: block b + 1 is multiplied while block b is read."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

__all__ = ["pipelined"]

T = TypeVar("T")


def pipelined(n_blocks: int, product: Callable[[int], T], consume: Callable[[T], Any]) -> None:
    """``consume(product(b))`` for every block b, with block b + 1's product (on this thread;
    torch releases the GIL and uses every core) overlapping block b's consumption (ranking
    and counting in numpy, mostly on one core, on a worker thread). ``product`` alternates
    between two buffers, so block b's scores stay intact until their consumer is done. The
    results do not depend on the timing: each block writes its own rows of the outputs, and
    the consumer runs the blocks in order."""
    if n_blocks <= 1:
        for b in range(n_blocks):
            consume(product(b))
        return
    with ThreadPoolExecutor(
        max_workers=1, initializer=_use_device, initargs=(_current_cuda_device(),)
    ) as pool:
        pending: Future[Any] | None = None
        for b in range(n_blocks):
            item = product(b)
            if pending is not None:
                pending.result()
            pending = pool.submit(consume, item)
        assert pending is not None
        pending.result()


def _current_cuda_device() -> int | None:
    """This thread's current CUDA device, when CUDA is in use (else ``None``)."""
    # is_initialized first: asking whether CUDA is available would start its driver.
    if torch.cuda.is_initialized():
        return torch.cuda.current_device()
    return None


def _use_device(device: int | None) -> None:
    """Make ``device`` the worker's current CUDA device. The current device is a thread's own:
    a new thread starts on cuda:0, so under torchrun every rank's consumer would copy to
    cuda:0 (``Share.sum`` and ``Share.gather`` move arrays with ``.cuda()``), and NCCL refuses
    two ranks on one GPU."""
    if device is not None:
        torch.cuda.set_device(device)
