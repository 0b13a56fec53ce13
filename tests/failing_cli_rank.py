"""``python tests/failing_cli_rank.py KIND ARGS...``: ``gapscope ARGS`` as one of the processes
``torchrun`` would start (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set), one of which fails
(tests/cli/test_distributed_analyze.py). KIND:

* ``crash``: the last process runs out of memory at its first product of scores;
* ``read``: the last process gets an input/output error there;
* ``missing``: the last process does not find its input (``ARGS[1]``, as on a node that lacks
  the store);
* ``output``: the first process, which writes, is given a folder for ``--output``'s file;
* ``device``: the last process is given ``--device mps``, which its machine lacks;
* ``none``: no process fails (each still asserts that a launcher started it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gapscope.cli import main
from gapscope.engine.distributed import launcher_rank
from gapscope.engine.unit_rows import UnitRows

if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    info = launcher_rank()
    assert info is not None
    last = info.rank == info.world_size - 1
    if kind == "missing" and last:
        args[1] += "-not-on-this-node"
    elif kind == "output" and info.rank == 0:
        args[args.index("-o") + 1] = str(Path(args[1]).parent)
    elif kind == "device" and last:
        args[args.index("--device") + 1] = "mps"
    elif kind in ("crash", "read") and last:
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
