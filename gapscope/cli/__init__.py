"""The ``gapscope`` command line: parse options, call the library, render, map errors to exits.

Exit codes (see :mod:`gapscope.cli.errors`): 0 ok; 1 a check found a regression; 2 bad usage
or bad input (a one-line message on stderr, never a traceback); 130 interrupted.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gapscope._version import __version__
from gapscope.cli.errors import handle_errors
from gapscope.errors import GapscopeError

app = typer.Typer(
    name="gapscope",
    help="Diagnose the embedding spaces of multimodal contrastive models (CLIP, SigLIP, CLAP).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gapscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Diagnose the embedding spaces of multimodal contrastive models (CLIP, SigLIP, CLAP)."""


def _write_output(text: str, path: Path | None) -> None:
    from gapscope.data.store import atomic_write_text

    if path is None or str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(path, text)


@app.command()
@handle_errors
def analyze(
    store: Annotated[Path | None, typer.Argument(help="An embedding store folder.")] = None,
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
        typer.Option(
            help="Per-row class labels (.npy), the ground truth of intra-modal retrieval."
        ),
    ] = None,
    metrics: Annotated[
        str,
        typer.Option(
            help="Comma list of gap, cosine, alignment, cone, "
            "uniformity, mir, retrieval, diagnostics, whatif; "
            "or 'all'."
        ),
    ] = "all",
    k: Annotated[str, typer.Option("--k", help="K values of recall@K.")] = "1,5,10",
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "auto",
    sample: Annotated[
        int | None,
        typer.Option(
            help="Estimate uniformity and retrieval from N "
            "random queries a modality (with standard "
            "errors)."
        ),
    ] = None,
    block_size: Annotated[int | None, typer.Option(help="Rows a similarity block.")] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="fp32, or bf16 to round the unit rows to "
            "bfloat16 for the similarity products (float32 "
            "results and sums; faster on CUDA tensor cores, "
            "float32 speed on a CPU; ranks of scores within "
            "~0.4% can swap)."
        ),
    ] = "fp32",
    bootstrap: Annotated[
        int | None,
        typer.Option(
            help="Add a percentile interval to every "
            "metric (except MIR) from B resamples of "
            "groups, e.g. 200.",
            metavar="B",
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Also write a self-contained HTML report with the tables and plots."
        ),
    ] = None,
    confidence: Annotated[
        float, typer.Option(help="Coverage of the --bootstrap intervals.")
    ] = 0.95,
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
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
    from gapscope.report.formats import FORMATS, render_text
    from gapscope.report.terminal import render_report

    if fmt not in FORMATS:
        raise GapscopeError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    source = _embedding_source(store, {"image": image, "text": text, "audio": audio}, labels)
    report = _run_analysis(
        source,
        quiet,
        metrics=metrics,
        k=k,
        seed=seed,
        device=device,
        sample=sample,
        block_size=block_size,
        bootstrap=bootstrap,
        confidence=confidence,
        precision=precision,
    )
    if json_path is not None:
        _write_output(report.to_json(), json_path)
    if html is not None:
        from gapscope.report.html import write_html_report

        # The extra diagnostics are already in the report; the page reads them from there.
        write_html_report(html, report, source, None, seed=seed)
    if fmt == "table":
        if output is not None:
            with open(output, "w", encoding="utf-8") as fh:
                render_report(report, Console(file=fh, width=120))
        else:
            render_report(report, Console())
    else:
        _write_output(render_text(report, fmt), output)


def _embedding_source(
    store: Path | None, files: dict[str, Path | None], labels: Path | None
) -> Any:
    """The EmbeddingSet of a store folder or of --image/--text/--audio arrays."""
    from gapscope.data.embedding_set import open_source

    return open_source(store, files, labels)


def _run_analysis(source: Any, quiet: bool, **options: Any) -> Any:
    """Analyse with a spinner on stderr (none when quiet)."""
    from gapscope.analysis.orchestrator import analyze as run_analysis

    if quiet:
        return run_analysis(source, **options)
    with Console(stderr=True).status("analysing") as status:
        return run_analysis(
            source, progress=lambda msg: status.update(f"analysing: {msg}"), **options
        )


def _write_rendered(render: Callable[[Console], None], path: Path | None) -> None:
    """Render rich output to stdout, or to a file (plain text, 120 columns, atomically)."""
    if path is None or str(path) == "-":
        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            # CI logs are not terminals; rich would wrap them at 80 columns.
            console.width = 140
        render(console)
        return
    buffer = io.StringIO()
    render(Console(file=buffer, width=140))
    _write_output(buffer.getvalue(), path)


@app.command()
@handle_errors
def info(
    store: Annotated[Path, typer.Argument(help="An embedding store folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show what a store holds: modalities, rows, dims, dtypes, encoder, dataset; validates it.

    Example:

        gapscope info examples/example-store
    """
    from rich.table import Table

    from gapscope.data.store import EmbeddingStore

    s = EmbeddingStore.open(store)
    if as_json:
        typer.echo(json.dumps(s.manifest, indent=2, sort_keys=True))
        return
    console = Console()
    table = Table(title=f"[bold]{s.path}[/bold]", title_justify="left")
    for col in ("modality", "rows", "dim", "dtype", "groups", "labels", "normalised"):
        table.add_column(col)
    for m in s.modalities:
        inf = s.info(m)
        labels_ = s.labels(m)
        table.add_row(
            m,
            str(inf["rows"]),
            str(inf["dim"]),
            inf["dtype"],
            str(len(set(s.groups(m).tolist()))),
            "-" if labels_ is None else str(len(set(labels_.tolist()))),
            "yes" if inf.get("normalized") else "no",
        )
    console.print(table)
    enc = s.encoder
    if enc:
        console.print(
            "encoder: "
            + ", ".join(
                f"{k}={v}"
                for k, v in sorted(enc.items())
                if v is not None and not isinstance(v, dict)
            )
        )
    skipped = s.manifest.get("skipped") or []
    if skipped:
        console.print(f"skipped while extracting: {len(skipped)} files")


CHECK_FORMATS = ("table", "json")
ANALYSIS_PANEL = "Analysis of a store or arrays (default: the baseline's parameters)"


@app.command()
@handle_errors
def check(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="A JSON report, or a store folder to analyse first (with the baseline's "
            "parameters)."
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", "-b", help="The last good report (JSON) to compare with."),
    ] = None,
    tolerance: Annotated[
        list[str] | None,
        typer.Option(
            "--tolerance",
            "-t",
            metavar="METRIC=VALUE",
            help="How far METRIC may move in its bad direction: absolute (gap=0.02) or relative "
            "to the baseline (R@1=5%). METRIC is a flat key, a leaf name or a glob. "
            "Repeatable; default 0.",
        ),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold",
            metavar="METRIC<=VALUE",
            help="An absolute gate that needs no baseline, e.g. 'image-text/gap<=0.9' or "
            "'R@5>=0.5'. Repeatable.",
        ),
    ] = None,
    significant: Annotated[
        bool | None,
        typer.Option(
            "--significant/--no-significant",
            help="Count a change only when the reports' bootstrap intervals do not overlap.",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML file with a \\[check] table (default: ./gapscope.toml, else "
            "\\[tool.gapscope.check] in ./pyproject.toml)."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the --format output to this file.")
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option(help="Also write JUnit XML (one test case a metric) to this file."),
    ] = None,
    save_report: Annotated[
        Path | None,
        typer.Option(help="When analysing a store or arrays, also write the report (JSON) here."),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(
            help="Image embeddings to analyse first (row i paired with row i).",
            rich_help_panel=ANALYSIS_PANEL,
        ),
    ] = None,
    text: Annotated[
        Path | None, typer.Option(help="Text embeddings.", rich_help_panel=ANALYSIS_PANEL)
    ] = None,
    audio: Annotated[
        Path | None, typer.Option(help="Audio embeddings.", rich_help_panel=ANALYSIS_PANEL)
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Per-row labels (.npy).", rich_help_panel=ANALYSIS_PANEL)
    ] = None,
    metrics: Annotated[
        str | None, typer.Option(help="Metric families.", rich_help_panel=ANALYSIS_PANEL)
    ] = None,
    k: Annotated[
        str | None,
        typer.Option("--k", help="K values of recall@K.", rich_help_panel=ANALYSIS_PANEL),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of --sample and --bootstrap.", rich_help_panel=ANALYSIS_PANEL),
    ] = None,
    sample: Annotated[
        int | None, typer.Option(help="Random queries a modality.", rich_help_panel=ANALYSIS_PANEL)
    ] = None,
    bootstrap: Annotated[
        int | None,
        typer.Option(help="Resamples for intervals.", metavar="B", rich_help_panel=ANALYSIS_PANEL),
    ] = None,
    confidence: Annotated[
        float | None,
        typer.Option(help="Coverage of the intervals.", rich_help_panel=ANALYSIS_PANEL),
    ] = None,
    device: Annotated[
        str, typer.Option(help="cpu, cuda, mps or auto.", rich_help_panel=ANALYSIS_PANEL)
    ] = "auto",
    block_size: Annotated[
        int | None, typer.Option(help="Rows a similarity block.", rich_help_panel=ANALYSIS_PANEL)
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
) -> None:
    """Gate a report on a baseline and thresholds: exit 0 pass, 1 regression, 2 bad input.

    Every metric with a good direction (gap: lower, recall: higher, ...) is compared with the
    baseline and regresses when it moves in its bad direction by more than its tolerance.
    Settings come from --config, ./gapscope.toml or \\[tool.gapscope.check] in
    ./pyproject.toml, then from the options. JUnit XML with --junit; GitHub Actions
    annotations when GITHUB_ACTIONS=true.

    Example:

        gapscope check report.json --baseline baseline.json -t gap=0.02 -t R@1=5%

        gapscope check store/ --baseline baseline.json --significant --junit gate.xml

        gapscope check report.json --threshold 'image-text/gap<=0.9' --format json
    """
    from gapscope.gate.check import baseline_analysis_params, check_report, load_report
    from gapscope.gate.config import load_check_config
    from gapscope.gate.rules import parse_threshold, parse_tolerance_option
    from gapscope.gate.outputs import github_annotations, render_check, to_junit_xml

    if fmt not in CHECK_FORMATS:
        raise GapscopeError(f"unknown format {fmt!r}: choose from {', '.join(CHECK_FORMATS)}")
    settings = load_check_config(config)
    tolerances = list(settings.tolerances) + [parse_tolerance_option(t) for t in tolerance or []]
    thresholds = list(settings.thresholds) + [parse_threshold(t) for t in threshold or []]
    significant = settings.significant if significant is None else significant
    base = load_report(baseline, "baseline") if baseline is not None else None

    files = {"image": image, "text": text, "audio": audio}
    overrides = {
        "metrics": metrics,
        "k": k,
        "seed": seed,
        "sample": sample,
        "bootstrap": bootstrap,
        "confidence": confidence,
    }
    is_report = source is not None and source.suffix.lower() == ".json"
    if is_report:
        given = [
            f"--{n}"
            for n, v in {**files, **overrides, "labels": labels, "save-report": save_report}.items()
            if v is not None
        ]
        if given:
            raise GapscopeError(
                f"{given[0]} applies when analysing a store or arrays, not to the report {source}"
            )
        report = load_report(source, "report")
    else:
        if source is None and not any(files.values()):
            raise GapscopeError(
                "give a report (.json), a store folder, or --image/--text/--audio arrays to check"
            )
        if source is not None and not source.is_dir():
            raise GapscopeError(f"{source} is neither a JSON report nor a store folder")
        data = _embedding_source(source, files, labels)
        params = baseline_analysis_params(base, **overrides)
        report = _run_analysis(data, quiet, device=device, block_size=block_size, **params)
        if save_report is not None:
            _write_output(report.to_json(), save_report)

    result = check_report(
        report, base, tolerances=tolerances, thresholds=thresholds, significant=bool(significant)
    )
    if fmt == "json":
        _write_output(result.to_json(), output)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
    else:
        _write_rendered(lambda console: render_check(result, console), output)
    if junit is not None:
        _write_output(to_junit_xml(result), junit)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        # Workflow commands are read from stdout; keep them off a JSON document there.
        on_stderr = fmt == "json" and (output is None or str(output) == "-")
        for line in github_annotations(result):
            typer.echo(line, err=on_stderr)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
@handle_errors
def diff(
    a: Annotated[Path, typer.Argument(help="The earlier report (JSON), e.g. the baseline.")],
    b: Annotated[Path, typer.Argument(help="The later report (JSON).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the --format output to this file.")
    ] = None,
    all_keys: Annotated[
        bool,
        typer.Option(
            "--all", help="List every number of the reports, not only metrics with a direction."
        ),
    ] = False,
) -> None:
    """Show two reports side by side: values, changes, better or worse, and significance.

    A change is significant when both reports carry bootstrap intervals (analyze
    --bootstrap) and they do not overlap. diff never fails on a change; gate with check.

    Example:

        gapscope diff baseline.json report.json

        gapscope diff baseline.json report.json --format json -o diff.json
    """
    from gapscope.gate.check import load_report
    from gapscope.gate.diff import diff_reports
    from gapscope.gate.outputs import render_diff

    if fmt not in CHECK_FORMATS:
        raise GapscopeError(f"unknown format {fmt!r}: choose from {', '.join(CHECK_FORMATS)}")
    result = diff_reports(load_report(a, "report A"), load_report(b, "report B"), all_keys=all_keys)
    if fmt == "json":
        _write_output(result.to_json(), output)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
    else:
        _write_rendered(lambda console: render_diff(result, console), output)


def _register_commands() -> None:
    # extract, merge and demo live beside the encoders and datasets they drive; plot beside the
    # plotting code (matplotlib is an optional extra, imported only when plot runs).
    from gapscope.cli.extract import register as register_extract
    from gapscope.cli.plot import register as register_plot

    register_extract(app)
    register_plot(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
