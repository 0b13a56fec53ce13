"""The ``gapscope plot`` command; :func:`register` adds it to a typer app.

Thin: parse options, build the :class:`~gapscope.data.embedding_set.EmbeddingSet`, call
:func:`gapscope.report.plots.plot_all`, print the files written. A
:class:`~gapscope.errors.GapscopeError` (including "matplotlib is not installed") becomes
``Error: <one line>`` on stderr and exit code 2, through ``gapscope.cli.errors.handle_errors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["plot_command", "register", "run_plot"]


def run_plot(
    store: Path | None,
    out: Path,
    *,
    image: Path | None = None,
    text: Path | None = None,
    audio: Path | None = None,
    labels: Path | None = None,
    points: int = 1000,
    links: int = 50,
    sample: int | None = 2000,
    seed: int = 0,
    umap: bool | None = None,
    device: str = "auto",
) -> list[Path]:
    """Library side of ``gapscope plot``: validate the options, draw, return the written paths."""
    from gapscope.errors import GapscopeError
    from gapscope.report.plots import plot_all, require_matplotlib
    from gapscope.data.embedding_set import open_source

    require_matplotlib()
    for name, value in (("--points", points), ("--links", links)):
        if value < 0:
            raise GapscopeError(f"{name} must be 0 or more, got {value}")
    if sample is not None and sample < 2:
        raise GapscopeError(f"--sample must be at least 2 queries, got {sample}")
    data = open_source(store, {"image": image, "text": text, "audio": audio}, labels)
    drawn = plot_all(
        data,
        out,
        points=max(points, 1),
        links=links,
        max_queries=sample,
        seed=seed,
        umap=umap,
        device=None if device == "auto" else device,
    )
    for reason in drawn.skipped:
        typer.echo(f"Skipped {reason}", err=True)
    return [p.path for p in drawn.plots if p.path is not None]


def plot_command(
    store: Annotated[Path | None, typer.Argument(help="An embedding store folder.")] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write the PNGs to (created if missing).")
    ] = Path("gapscope-plots"),
    image: Annotated[
        Path | None,
        typer.Option(
            help="Image embeddings (.npy/.pt/.safetensors), row i paired with row i of the others."
        ),
    ] = None,
    text: Annotated[Path | None, typer.Option(help="Text embeddings.")] = None,
    audio: Annotated[Path | None, typer.Option(help="Audio embeddings.")] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Per-row class labels (.npy) for the intra-modal recall curves."),
    ] = None,
    points: Annotated[int, typer.Option(help="Rows a modality drawn in the projection.")] = 1000,
    links: Annotated[int, typer.Option(help="True pairs linked by a line in the projection.")] = 50,
    sample: Annotated[
        int | None,
        typer.Option(help="Query rows a modality for the recall curves (seeded sample)."),
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    umap: Annotated[
        bool | None,
        typer.Option(
            "--umap/--no-umap",
            help="Also draw a UMAP projection (default: when umap-learn is installed).",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "auto",
) -> None:
    """Write PNG plots: a 2-D projection with true pairs linked, positive vs negative cosine
    histograms, per-dimension gap contributions, recall@K curves inter- vs intra-modal.

    Needs matplotlib (the "plot" extra of gapscope).

    Example:

        gapscope plot examples/example-store --out plots/
    """
    from gapscope.cli.errors import handle_errors

    def run() -> None:
        for path in run_plot(
            store,
            out,
            image=image,
            text=text,
            audio=audio,
            labels=labels,
            points=points,
            links=links,
            sample=sample,
            seed=seed,
            umap=umap,
            device=device,
        ):
            typer.echo(str(path))

    handle_errors(run)()


def register(app: typer.Typer) -> None:
    """Add ``plot`` to ``app`` (``gapscope.cli`` calls this)."""
    app.command("plot")(plot_command)
