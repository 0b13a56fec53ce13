"""Batches and shards: which rows each batch, and each of n parallel extracts, encodes.

Batches are fixed ranges of row positions (batch b holds rows ``[b*B, (b+1)*B)``), whatever
process encodes them: a resumed extract restarts at a batch boundary, and shard ``i/n`` gets a
contiguous run of whole batches. So every row is encoded in the same batch as in one
uninterrupted run, and the merged shards equal that run byte for byte (an encoder's output for a
row may depend on the other rows of its batch in the last bits, so this matters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gapscope.errors import GapscopeError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None) -> Shard | None:
    """Parse ``"i/n"`` (0 <= i < n), e.g. a Slurm array index or a torchrun rank.

    >>> parse_shard("1/4")
    Shard(index=1, count=4)
    >>> parse_shard(None) is None
    True
    """
    if text is None:
        return None
    match = _SHARD.match(text)
    if not match:
        raise GapscopeError(f"--shard {text!r}: expected i/n, e.g. 0/4 for the first of 4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise GapscopeError(f"--shard {text}: the number of shards must be at least 1")
    if index >= count:
        raise GapscopeError(
            f"--shard {text}: the index must be in 0..{max(count - 1, 0)} (shards count from 0)"
        )
    return Shard(index, count)


def plan_batches(rows: int, batch_size: int, shard: Shard | None = None) -> list[range]:
    """The row ranges of the batches that ``shard`` (or a whole run) encodes, in order.

    >>> plan_batches(10, 4)
    [range(0, 4), range(4, 8), range(8, 10)]
    >>> plan_batches(10, 4, Shard(1, 2))
    [range(4, 8), range(8, 10)]
    """
    if batch_size < 1:
        raise GapscopeError(f"--batch-size {batch_size}: must be at least 1")
    n_batches = -(-rows // batch_size)
    first, last = 0, n_batches
    if shard is not None:
        first = shard.index * n_batches // shard.count
        last = (shard.index + 1) * n_batches // shard.count
    return [range(b * batch_size, min((b + 1) * batch_size, rows)) for b in range(first, last)]
