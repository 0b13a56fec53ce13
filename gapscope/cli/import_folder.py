"""``gapscope import``: a clip-retrieval output folder as a gapscope store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gapscope.cli import options as opt
from gapscope.cli.errors import handle_errors

__all__ = ["import_command"]


@handle_errors
def import_command(
    folder: Annotated[
        Path,
        typer.Argument(
            help="clip-retrieval output folder (img_emb/, text_emb/, optional metadata/)."
        ),
    ],
    out: Annotated[str, typer.Option("--output", "-o", help="Store folder to write.")],
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace the store at OUT once the new one is complete (other files in the "
            "folder are kept).",
        ),
    ] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Write the embeddings of a clip-retrieval output folder as a gapscope store.

    Row r of a partition's img_emb and text_emb files is one sample: the image and its
    caption pair. The metadata's key, image path and caption become each row's item
    (reading them needs pyarrow: pip install 'gapscope\\[parquet]'). The partitions are
    copied one at a time, never the whole folder in memory. gapscope analyze reads such a
    folder directly too.

    Example:

        clip-retrieval inference --input_dataset images/ --output_folder embeddings/

        gapscope import embeddings/ -o store/

        gapscope analyze store/
    """
    from rich.console import Console

    from gapscope.data.clip_retrieval import import_folder, import_notes

    console = Console(stderr=True)

    def progress(done: int, total: int) -> None:
        if not quiet:
            console.print(f"partition {done}/{total}", highlight=False)

    store = import_folder(folder, out, overwrite=overwrite, progress=progress)
    for line in import_notes(store.manifest.get("dataset", {})):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    rows = ", ".join(f"{m} {store.info(m)['rows']:,}" for m in store.modalities)
    Console().print(
        f"[bold]Store[/bold] {store.path}: {rows} (imported from {folder})",
        highlight=False,
        soft_wrap=True,
    )
