"""Run a script as the ranks of a gloo process group, as torchrun would start them."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

#: Ports handed out start here, below the ephemeral range of Linux (32768 up), macOS and
#: Windows (49152 up), where the operating system picks the ports of ``bind(0)``.
PORT_BASE = 20000
#: Ports a pytest-xdist worker draws from: worker k gets its own band of them.
PORTS_A_WORKER = 1000


def free_port() -> int:
    """A port of 127.0.0.1 free now, for a process group's rendezvous. Drawn from a band of
    this pytest-xdist worker's own (``PYTEST_XDIST_WORKER``, ``gw<k>``), outside the ephemeral
    range: a port the system picked for ``bind(0)`` could be picked again for another worker's
    process group in the time between this check and the rendezvous."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = PORT_BASE + PORTS_A_WORKER * (int(worker) if worker.isdigit() else 0)
    ports = list(range(first, first + PORTS_A_WORKER))
    random.SystemRandom().shuffle(ports)
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + PORTS_A_WORKER - 1}")


def run_ranks(script: Path, world: int, *args: str, timeout: float = 300) -> None:
    """Start ``python script *args`` ``world`` times with RANK, WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT set (one BLAS thread each) and wait for all; each must exit 0."""
    for code, err in rank_results(script, world, *args, timeout=timeout):
        assert code == 0, err


def rank_results(
    script: Path, world: int, *args: str, timeout: float = 300, slurm: bool = False
) -> list[tuple[int, str]]:
    """Each rank's exit code and standard error, for ``run_ranks``'s processes. With
    ``slurm`` the ranks get the variables ``srun`` sets (``SLURM_PROCID``, ``SLURM_NTASKS``,
    ``SLURM_LOCALID``) instead of torchrun's, and ``MASTER_ADDR``/``MASTER_PORT`` as a batch
    script exports them."""
    port = free_port()
    launchers = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS")
    procs = []
    for rank in range(world):
        env = {k: v for k, v in os.environ.items() if k not in launchers}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        if slurm:
            env.update(SLURM_PROCID=str(rank), SLURM_NTASKS=str(world), SLURM_LOCALID=str(rank))
        else:
            env.update(RANK=str(rank), WORLD_SIZE=str(world))
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
