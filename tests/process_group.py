"""Run a script as the ranks of a gloo process group, as torchrun would start them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(script: Path, world: int, *args: str, timeout: float = 300) -> None:
    """Start ``python script *args`` ``world`` times with RANK, WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT set (one BLAS thread each) and wait for all; each must exit 0."""
    for code, err in rank_results(script, world, *args, timeout=timeout):
        assert code == 0, err


def rank_results(
    script: Path, world: int, *args: str, timeout: float = 300
) -> list[tuple[int, str]]:
    """Each rank's exit code and standard error, for ``run_ranks``'s processes."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), *args], env=env, stderr=subprocess.PIPE, text=True
            )
        )
    results = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        results.append((p.returncode, err))
    return results
