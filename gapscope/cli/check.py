"""``gapscope check``: the CI gate. Exit 0 pass, 1 regression, 2 bad input."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from gapscope.cli import options as opt
from gapscope.cli.analyze import embedding_source
from gapscope.cli.errors import handle_errors
from gapscope.cli.output import (
    analyse_with_status,
    check_output_paths,
    write_output,
    write_rendered,
)
from gapscope.errors import GapscopeError

__all__ = ["CHECK_FORMATS", "check_command"]

CHECK_FORMATS = ("table", "json")


@handle_errors
def check_command(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="A JSON report, or a store folder to analyse first (with the "
            "baseline's parameters)."
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
    image: opt.PanelImage = None,
    text: opt.PanelText = None,
    audio: opt.PanelAudio = None,
    labels: opt.PanelLabels = None,
    metrics: opt.PanelMetrics = None,
    k: opt.PanelKvalues = None,
    seed: opt.PanelSeed = None,
    sample: opt.PanelSample = None,
    bootstrap: opt.PanelBootstrap = None,
    confidence: opt.PanelConfidence = None,
    device: opt.PanelDevice = "auto",
    block_size: opt.PanelBlockSize = None,
    quiet: opt.Quiet = False,
) -> None:
    """Gate a report on a baseline and thresholds: exit 0 pass, 1 regression, 2 bad input.

    Every metric with a good direction (gap: lower, recall: higher, ...) is compared with the
    baseline and regresses when it moves in its bad direction by more than its tolerance.
    Settings come from --config, ./gapscope.toml or \\[tool.gapscope.check] in
    ./pyproject.toml, then from the options. JUnit XML with --junit; GitHub Actions
    annotations when GITHUB_ACTIONS=true. A store (or arrays) is analysed first, with the
    baseline's parameters unless the analysis options say otherwise.

    Example:

        gapscope check report.json --baseline baseline.json -t gap=0.02 -t R@1=5%

        gapscope check store/ --baseline baseline.json --significant --junit gate.xml

        gapscope check report.json --threshold 'image-text/gap<=0.9' --format json
    """
    from gapscope.gate.check import check_report
    from gapscope.gate.config import load_check_config
    from gapscope.gate.reports import load_report
    from gapscope.gate.rules import parse_threshold, parse_tolerance_option

    opt.check_choice(fmt, CHECK_FORMATS, "format")
    check_output_paths(output=output, junit=junit, save_report=save_report)
    settings = load_check_config(config)
    tolerances = list(settings.tolerances) + [parse_tolerance_option(t) for t in tolerance or []]
    thresholds = list(settings.thresholds) + [parse_threshold(t) for t in threshold or []]
    significant = settings.significant if significant is None else significant
    base = load_report(baseline, "baseline") if baseline is not None else None
    files = {"image": image, "text": text, "audio": audio}
    # The analysis options, by their flags; those given replace the baseline's parameters.
    flags = {
        "--metrics": metrics,
        "--k": k,
        "--seed": seed,
        "--sample": sample,
        "--bootstrap": bootstrap,
        "--confidence": confidence,
    }
    report = _current_report(
        source,
        base,
        files,
        labels,
        flags,
        save_report,
        quiet,
        device=device,
        block_size=block_size,
    )
    result = check_report(
        report, base, tolerances=tolerances, thresholds=thresholds, significant=bool(significant)
    )
    _emit(result, fmt, output, junit)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _current_report(
    source: Path | None,
    base: Any,
    files: dict[str, Path | None],
    labels: Path | None,
    flags: dict[str, Any],
    save_report: Path | None,
    quiet: bool,
    **analysis: Any,
) -> Any:
    """The report to gate: read from JSON, or analysed from a store or arrays."""
    from gapscope.gate.check import baseline_analysis_params
    from gapscope.gate.reports import load_report

    if source is not None and source.suffix.lower() == ".json":
        given = [
            flag
            for flag, v in {
                **{f"--{m}": path for m, path in files.items()},
                **flags,
                "--labels": labels,
                "--save-report": save_report,
            }.items()
            if v is not None
        ]
        if given:
            raise GapscopeError(
                f"{given[0]} applies when analysing a store or arrays, not to the report {source}"
            )
        return load_report(source, "report")
    if source is None and not any(files.values()):
        raise GapscopeError(
            "give a report (.json), a store folder, or --image/--text/--audio arrays to check"
        )
    if source is not None and not source.is_dir():
        raise GapscopeError(f"{source} is neither a JSON report nor a store folder")
    data = embedding_source(source, files, labels)
    params = baseline_analysis_params(base, **{f.lstrip("-"): v for f, v in flags.items()})
    report = analyse_with_status(data, quiet, **analysis, **params)
    if save_report is not None:
        write_output(report.to_json(), save_report)
    return report


def _emit(result: Any, fmt: str, output: Path | None, junit: Path | None) -> None:
    from gapscope.gate.outputs import github_annotations, render_check, to_junit_xml

    if fmt == "json":
        write_output(result.to_json(), output)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
    else:
        write_rendered(lambda console: render_check(result, console), output)
    if junit is not None:
        write_output(to_junit_xml(result), junit)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        # Workflow commands are read from stdout; keep them off a JSON document there.
        on_stderr = fmt == "json" and (output is None or str(output) == "-")
        for line in github_annotations(result):
            typer.echo(line, err=on_stderr)
