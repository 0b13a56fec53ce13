"""``gapscope merge``: the shard stores of ``extract --shard i/n`` combined into one store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gapscope.cli.errors import handle_errors

__all__ = ["merge_command"]


@handle_errors
def merge_command(
    out: Annotated[str, typer.Argument(help="Store folder to write.")],
    shards: Annotated[list[Path], typer.Argument(help="The shard stores (0/n .. n-1/n).")],
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace the store at OUT once the merged one is complete (other files in "
            "the folder are kept). OUT cannot be one of the shards.",
        ),
    ] = False,
) -> None:
    """Combine the shard stores of gapscope extract --shard i/n into one store.

    All n shards of one extract are needed; the result equals an unsharded extract.
    A merge that was interrupted starts again when run again.

    Example:

        gapscope extract --images photos/ --shard 0/2 -o shard-0/

        gapscope extract --images photos/ --shard 1/2 -o shard-1/

        gapscope merge store/ shard-0/ shard-1/
    """
    from rich.console import Console

    from gapscope.extract.merge import merge_stores

    store = merge_stores(out, shards, overwrite=overwrite)
    rows = ", ".join(f"{m} {store.info(m)['rows']:,}" for m in store.modalities)
    Console().print(
        f"[bold]Store[/bold] {store.path}: {rows} (merged from {len(shards)} shards)",
        highlight=False,
        soft_wrap=True,
    )
