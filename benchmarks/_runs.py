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

PINNED = Path(__file__).with_name("_pinned.py")


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


def one_against_several(
    cmd: list[str], processes: int, folder: Path, *, pinned: bool = False
) -> dict[str, Any]:
    """``cmd`` (``python -m gapscope analyze ...``, without ``-o``) with one BLAS thread in one
    process, then in ``processes`` processes of one thread each under ``torchrun
    --standalone``: both wall times, the speed-up, and whether the two JSON reports (written
    to ``folder``) are byte-identical.

    ``pinned`` starts gapscope through ``_pinned.py`` instead, which puts every thread of a
    process on one core of its own (process k on core k): the single process then has one
    core, as each of the several has. It also times the launch alone (``--imports-only``: the
    imports in one process, and ``torchrun`` starting ``processes`` that import and exit), so
    that the speed-up of the work beyond launching can be told from the whole run's.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    if pinned:
        if cmd[1:3] != ["-m", "gapscope"]:
            raise ValueError(f"expected python -m gapscope ..., got {cmd[:3]}")
        cmd = [cmd[0], str(PINNED), *cmd[3:]]
    tag = "pinned_" if pinned else ""
    one_json, shared_json = folder / f"{tag}one.json", folder / f"{tag}shared.json"
    one = run_measured([*cmd, "-o", str(one_json)], env=env).wall_s
    launcher = [
        cmd[0],
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        *cmd[1:],
    ]
    shared = run_measured([*launcher, "-o", str(shared_json)], env=env).wall_s
    result: dict[str, Any] = {
        "one_process_one_thread_s": one,
        "processes": processes,
        "shared_s": shared,
        "speedup": one / shared,
        "identical_json": one_json.read_bytes() == shared_json.read_bytes(),
    }
    if pinned:
        start_one = run_measured([cmd[0], str(PINNED), "--imports-only"], env=env).wall_s
        start_shared = run_measured([*launcher[:5], str(PINNED), "--imports-only"], env=env).wall_s
        result.update(
            launch_one_s=start_one,
            launch_shared_s=start_shared,
            speedup_beyond_launch=(one - start_one) / (shared - start_shared),
        )
    return {f"{tag}{key}": value for key, value in result.items()}
