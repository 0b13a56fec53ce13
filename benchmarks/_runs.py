"""Running a command in a fresh process and measuring it: shared by the benchmarks.

``python benchmarks/bench_*.py`` puts this folder first on ``sys.path``, so the scripts import
it as ``_runs``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Run", "one_against_several", "run_measured"]


@dataclass(frozen=True)
class Run:
    """One command's wall time, the peak RSS of the children so far (MiB) and its output."""

    wall_s: float
    peak_mib: float
    stdout: str
    out_of_memory: bool = False


def run_measured(
    cmd: list[str], *, env: dict[str, str] | None = None, limit_bytes: int | None = None
) -> Run:
    """Run ``cmd`` in a fresh process, which must succeed (else exit with its stderr).

    ``peak_mib`` is ``ru_maxrss`` of the children: the largest of every child so far, so run
    the largest command last or alone. With ``limit_bytes`` the child's address space is
    capped, and a run that fails to allocate under it comes back with ``out_of_memory`` set.
    """

    def cap() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=cap)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        failed = proc.stderr.lower()
        if limit_bytes is not None and ("alloc" in failed or "memory" in failed):
            return Run(wall, peak, "", out_of_memory=True)
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{proc.stderr}")
    return Run(wall, peak, proc.stdout)


def one_against_several(cmd: list[str], processes: int, folder: Path) -> dict[str, Any]:
    """``cmd`` (``python -m gapscope analyze ...``, without ``-o``) with one BLAS thread in one
    process, then in ``processes`` processes of one thread each under ``torchrun
    --standalone``: both wall times, the speed-up, and whether the two JSON reports (written
    to ``folder``) are byte-identical."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    one = run_measured([*cmd, "-o", str(folder / "one.json")], env=env).wall_s
    launcher = [
        cmd[0],
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        *cmd[1:],
    ]
    shared = run_measured([*launcher, "-o", str(folder / "shared.json")], env=env).wall_s
    same = (folder / "one.json").read_bytes() == (folder / "shared.json").read_bytes()
    return {
        "one_process_one_thread_s": one,
        "processes": processes,
        "shared_s": shared,
        "speedup": one / shared,
        "identical_json": same,
    }
