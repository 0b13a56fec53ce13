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

``--family-times`` (first, before the command) also prints to stderr, at exit, this
process's wall seconds in each metric family, in the validating read that builds the
analysis context, and in the analysis as a whole (one line a process, ``RANK`` first):

    python benchmarks/_pinned.py --family-times analyze ... --metrics gap,cosine,...
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any


def pin() -> int:
    """Pin this process to one core (before any thread starts); return that core."""
    cores = sorted(os.sched_getaffinity(0))
    core = cores[int(os.environ.get("LOCAL_RANK", "0")) % len(cores)]
    os.sched_setaffinity(0, {core})
    return core


def time_families() -> None:
    """Time each metric family, the context and the analysis; print them at exit."""
    import gapscope.analysis.context as context
    import gapscope.analysis.orchestrator as orchestrator
    import gapscope.api as api

    times: list[tuple[str, float]] = []

    def timed(name: str | None, function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                label = name or args[1].name  # _run_family(ctx, family, sections)
                times.append((label, time.perf_counter() - start))

        return run

    orchestrator._run_family = timed(None, orchestrator._run_family)
    context.AnalysisContext.__init__ = timed("context", context.AnalysisContext.__init__)
    api.run_analysis = timed("analysis", api.run_analysis)

    def report() -> None:
        shown = ", ".join(f"{name} {seconds:.2f}" for name, seconds in times)
        print(f"rank {os.environ.get('RANK', '-')}: {shown}", file=sys.stderr)

    atexit.register(report)


if __name__ == "__main__":
    pin()
    if sys.argv[1:2] == ["--family-times"]:
        del sys.argv[1]
        time_families()
    if sys.argv[1:] == ["--imports-only"]:
        import torch.distributed  # noqa: F401

        import gapscope.analysis.orchestrator  # noqa: F401

        raise SystemExit(0)
    from gapscope.cli import main

    sys.argv[0] = "gapscope"
    main()
