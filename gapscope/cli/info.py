"""``gapscope info``: what a store holds, validated."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from gapscope.cli.errors import handle_errors
from gapscope.cli.output import write_rendered

__all__ = ["info_command"]


@handle_errors
def info_command(
    store: Annotated[
        str,
        typer.Argument(
            help="An embedding store folder, or its fsspec URL (the remote extra).",
            metavar="STORE",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show what a store holds: modalities, rows, dims, dtypes, encoder, dataset; validates it.

    A store extracted without pretrained weights (no --pretrained) says so in a line of its
    own: its embeddings come from a random network. A store with class prompts (extract
    --classes) lists them.

    Example:

        gapscope info examples/example-store
    """
    from gapscope.data.store import EmbeddingStore

    s = EmbeddingStore.open(store)
    if as_json:
        typer.echo(json.dumps(s.manifest, indent=2, sort_keys=True))
        return
    write_rendered(lambda console: _render_info(s, console), None)


def _render_info(s: Any, console: Console) -> None:
    """The modality table, the encoder (random weights called out), the class prompts of
    zero-shot classification and the skipped files.

    Every word from the manifest goes through :func:`printable` (control characters shown as
    escapes, not run by the terminal), and cells are Text, never read as rich markup."""
    from rich.table import Table

    from gapscope.data.class_prompts import read_store_classes
    from gapscope.data.weights import encoder_name, random_init_seed
    from gapscope.report.text import printable

    table = Table(title=f"[bold]{escape(printable(s.path))}[/bold]", title_justify="left")
    for col in ("modality", "rows", "dim", "dtype", "groups", "labels", "normalised"):
        table.add_column(col, no_wrap=True)
    for m in s.modalities:
        inf = s.info(m)
        labels_ = s.labels(m)
        table.add_row(
            Text(printable(m)),
            str(inf["rows"]),
            str(inf["dim"]),
            Text(printable(inf["dtype"])),
            str(len(set(s.groups(m).tolist()))),
            "-" if labels_ is None else str(len(set(labels_.tolist()))),
            "yes" if inf.get("normalized") else "no",
        )
    console.print(table)
    if s.is_shard:
        rows = (
            ""
            if s.modalities
            else " with no rows (its slice held no batch, or only files it could not read)"
        )
        shard = printable(str(s.manifest["extract"]["shard"]))
        console.print(
            f"shard {shard} of an extract{rows}: gapscope merge combines the shards",
            markup=False,
            highlight=False,
        )
    enc = {k: _shown(v) for k, v in (s.encoder or {}).items()}
    if enc:
        console.print(
            "encoder: "
            + ", ".join(
                printable(f"{k}={v}")
                for k, v in sorted(enc.items())
                if v is not None and not isinstance(v, dict)
            ),
            markup=False,
            highlight=False,
        )
    classes = read_store_classes(s.path, s.encoder)
    if classes is not None:
        names = classes.names or ()
        shown = ", ".join(printable(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        ensembled = f"{len(classes.templates)} templates ensembled" if classes.templates else ""
        console.print(
            f"class prompts: {classes.n_classes} classes"
            + (f" ({shown})" if names else "")
            + (f", {ensembled}" if ensembled else "")
            + f", by the {printable(classes.modality)} encoder: zero-shot classification of the "
            "labels",
            markup=False,
            highlight=False,
        )
    seed = random_init_seed(s.encoder)
    if seed is not None:
        console.print(
            Text.assemble(
                ("random weights: ", "bold red"),
                f"{printable(encoder_name(s.encoder) or 'the encoder')} was not pretrained "
                f"(random init, seed {seed}; extracted without --pretrained): its embeddings "
                "carry no meaning",
            )
        )
    skipped = s.manifest.get("skipped") or []
    if skipped:
        console.print(f"skipped while extracting: {len(skipped)} files")


def _shown(value: object) -> object:
    """A path inside the current folder as a relative path (shorter, and the same on every
    machine); anything else as it is."""
    if isinstance(value, str) and os.path.isabs(value):
        try:
            relative = os.path.relpath(value)
        except ValueError:  # another drive
            return value
        return value if relative.startswith("..") else relative
    return value
