"""``gapscope analyze``: the report of a store or arrays, as tables, JSON, flat JSON, CSV or
an HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gapscope.cli import options as opt
from gapscope.cli.errors import handle_errors
from gapscope.cli.output import analyse_with_status, check_output_paths, write_output

__all__ = ["analyze_command", "embedding_source"]


def embedding_source(store: Path | None, files: dict[str, Path | None], labels: Path | None) -> Any:
    """The EmbeddingSet of a store folder or of --image/--text/--audio arrays."""
    from gapscope.data.embedding_set import open_source

    return open_source(store, files, labels)


@handle_errors
def analyze_command(
    store: opt.StoreArgument = None,
    image: opt.Image = None,
    text: opt.Text = None,
    audio: opt.Audio = None,
    labels: opt.Labels = None,
    metrics: opt.Metrics = "all",
    k: opt.Kvalues = "1,5,10",
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    sample: opt.Sample = None,
    block_size: opt.BlockSize = None,
    precision: opt.Precision = "fp32",
    bootstrap: opt.Bootstrap = None,
    confidence: opt.Confidence = 0.95,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Also write a self-contained HTML report with the tables and plots."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json, flat or csv.")] = "table",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the --format output to this file instead of stdout."
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON report to this file.")
    ] = None,
    quiet: opt.Quiet = False,
) -> None:
    """Compute the modality gap, cone, uniformity, alignment, MIR and retrieval recall.

    With --bootstrap B every metric but MIR gets a percentile interval (value [low, high]
    in the table, "<metric>_ci": [low, high] in JSON) from B resamples of groups.

    Example:

        gapscope analyze examples/example-store

        gapscope analyze --image img.npy --text txt.npy --format json -o report.json

        gapscope analyze examples/example-store --bootstrap 200 --json report.json

        gapscope analyze examples/example-store --html report.html

        gapscope analyze --image img.npy --text txt.npy --device cuda --precision bf16
    """
    from gapscope.engine.distributed import launcher_rank, process_group
    from gapscope.report.formats import FORMATS, render_text

    opt.check_choice(fmt, FORMATS, "format")
    check_output_paths(output=output, json=json_path, html=html)
    source = embedding_source(store, {"image": image, "text": text, "audio": audio}, labels)
    options: dict[str, Any] = dict(
        metrics=metrics,
        k=k,
        seed=seed,
        sample=sample,
        block_size=block_size,
        bootstrap=bootstrap,
        confidence=confidence,
        precision=precision,
    )
    info = launcher_rank()
    if info is None:
        report = analyse_with_status(source, quiet, device=device, **options)
    else:
        # torchrun or srun: every process analyses, sharing the passes; rank 0 writes.
        with process_group(info, device) as rank_dev:
            report = analyse_with_status(
                source, quiet or info.rank != 0, device=rank_dev, distributed=True, **options
            )
        if info.rank != 0:
            return
    if json_path is not None:
        write_output(report.to_json(), json_path)
    if html is not None:
        from gapscope.report.html import write_html_report

        write_html_report(html, report)
    if fmt == "table":
        from gapscope.report.terminal import render_report

        if output is not None:
            import io

            buffer = io.StringIO()
            render_report(report, Console(file=buffer, width=120))
            write_output(buffer.getvalue(), output)
        else:
            render_report(report, Console())
    else:
        write_output(render_text(report, fmt), output)
