"""Run the gapscope CLI on one CPU core: the launcher of the benchmarks' pinned runs.

    python benchmarks/_pinned.py analyze ...                        # one process, core 0
    python -m torch.distributed.run --standalone --nproc-per-node=2 \\
        benchmarks/_pinned.py analyze ...                           # process k on core k
    python benchmarks/_pinned.py --imports-only                     # the start-up alone

``OMP_NUM_THREADS=1`` limits BLAS to one thread, but a process of gapscope also counts the
previous block of scores in a worker thread while BLAS multiplies the next, so one process
"of one thread" keeps two cores busy. Pinned, every thread of process ``k`` (``LOCAL_RANK``,
0 without a launcher) runs on the ``k``-th core it may use (round-robin when there are more
processes than cores): one core a process, whatever threads the process starts.

``--imports-only`` pins, imports what ``analyze`` imports before it reads a row (the
orchestrator, torch and ``torch.distributed``) and exits: under ``torchrun`` it measures what
launching costs before any work is shared.
"""

from __future__ import annotations

import os
import sys


def pin() -> int:
    """Pin this process to one core (before any thread starts); return that core."""
    cores = sorted(os.sched_getaffinity(0))
    core = cores[int(os.environ.get("LOCAL_RANK", "0")) % len(cores)]
    os.sched_setaffinity(0, {core})
    return core


if __name__ == "__main__":
    pin()
    if sys.argv[1:] == ["--imports-only"]:
        import torch.distributed  # noqa: F401

        import gapscope.analysis.orchestrator  # noqa: F401

        raise SystemExit(0)
    from gapscope.cli import main

    sys.argv[0] = "gapscope"
    main()
