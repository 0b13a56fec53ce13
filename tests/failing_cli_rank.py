"""``python tests/failing_cli_rank.py KIND ARGS...``: ``gapscope ARGS`` as one of the processes
``torchrun`` would start (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set), the last of which
fails at its first product of scores: KIND ``crash`` runs out of memory there, ``read`` gets an
input/output error (tests/cli/test_distributed_analyze.py)."""

from __future__ import annotations

import sys
from typing import Any

from gapscope.cli import main
from gapscope.engine.distributed import launcher_rank
from gapscope.engine.unit_rows import UnitRows

if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    info = launcher_rank()
    assert info is not None
    if info.rank == info.world_size - 1:
        error = (
            MemoryError("no memory for a block")
            if kind == "crash"
            else OSError(5, "Input/output error")
        )

        def fail(*_: Any, **__: Any) -> Any:
            raise error

        UnitRows.scores = fail  # type: ignore[method-assign]
    sys.argv = ["gapscope", *args]
    main()
