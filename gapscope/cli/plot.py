"""``gapscope plot``: PNG plots of a store or arrays (the ``plot`` extra: matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gapscope.cli import options as opt
from gapscope.cli.analyze import embedding_source
from gapscope.cli.errors import handle_errors
from gapscope.cli.output import analyse_with_status
from gapscope.errors import GapscopeError
from gapscope.extras import require

__all__ = ["plot_command", "run_plot"]


def run_plot(
    store: str | Path | None,
    out: Path,
    *,
    image: str | Path | None = None,
    text: str | Path | None = None,
    audio: str | Path | None = None,
    labels: list[str] | None = None,
    classes: Path | None = None,
    class_names: Path | None = None,
    points: int = 1000,
    links: int = 50,
    sample: int | None = 2000,
    seed: int = 0,
    umap: bool | None = None,
    device: str = "auto",
    quiet: bool = True,
) -> list[Path]:
    """Library side of ``gapscope plot``: analyse (the gap, retrieval, zero-shot accuracy and
    the what-ifs, which the plots draw), draw from that analysis, return the written paths.

    Every argument, ``out`` included, is checked before the data are read: a bad one costs no
    analysis. ``points=0`` draws only the rows of the ``links`` linked pairs in the projection.
    """
    from gapscope.report.plots import check_plot_folder, plot_all, require_matplotlib

    require_matplotlib()
    if umap:  # asked for: missing umap-learn is refused before any work, not after the PCA plot
        require("umap", "the UMAP projection")
    for name, value in (("--points", points), ("--links", links)):
        if value < 0:
            raise GapscopeError(f"{name} must be 0 or more, got {value}")
    if points == 0 and links == 0:
        raise GapscopeError(
            "--points 0 draws only the linked pairs and --links 0 links none: give one of them "
            "above 0"
        )
    check_plot_folder(out)
    data = embedding_source(
        store,
        {"image": image, "text": text, "audio": audio},
        labels,
        classes=classes,
        class_names=class_names,
    )
    report = analyse_with_status(
        data,
        quiet,
        metrics="gap,retrieval,zeroshot,whatif",
        sample=sample,
        seed=seed,
        device=device,
    )
    drawn = plot_all(report, out, points=points, links=links, umap=umap)
    for reason in drawn.skipped:
        typer.echo(f"Skipped {reason}", err=True)
    return [p.path for p in drawn.plots if p.path is not None]


@handle_errors
def plot_command(
    store: opt.StoreArgument = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write the PNGs to (created if missing).")
    ] = Path("gapscope-plots"),
    image: opt.Image = None,
    text: opt.Text = None,
    audio: opt.Audio = None,
    labels: opt.Labels = None,
    classes: opt.Classes = None,
    class_names: opt.ClassNames = None,
    points: Annotated[
        int,
        typer.Option(
            help="Rows a modality drawn in the projection (a seeded sample; the rows of the "
            "linked pairs are drawn too). 0: only the linked pairs."
        ),
    ] = 1000,
    links: Annotated[int, typer.Option(help="True pairs linked by a line in the projection.")] = 50,
    sample: Annotated[
        int | None,
        typer.Option(
            help="Query rows a modality for the recall curves (seeded sample; the "
            "analysis's --sample)."
        ),
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    umap: Annotated[
        bool | None,
        typer.Option(
            "--umap/--no-umap",
            help="Also draw a UMAP projection (default: when umap-learn is installed).",
        ),
    ] = None,
    device: opt.Device = "auto",
    quiet: opt.Quiet = False,
) -> None:
    """Write PNG plots: a 2-D projection with true pairs linked, positive vs negative cosine
    histograms, per-dimension gap contributions, recall@K curves inter- vs intra-modal, and
    R@1 and zero-shot accuracy against a shift along the gap (the what-ifs).

    Needs matplotlib (the "plot" extra of gapscope).

    Example:

        gapscope plot examples/example-store --out plots/

        gapscope demo --out demo/ -q

        gapscope plot demo/image-text --out plots/
    """
    for path in run_plot(
        store,
        out,
        image=image,
        text=text,
        audio=audio,
        labels=labels,
        classes=classes,
        class_names=class_names,
        points=points,
        links=links,
        sample=sample,
        seed=seed,
        umap=umap,
        device=device,
        quiet=quiet,
    ):
        typer.echo(str(path))
