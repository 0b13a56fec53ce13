"""``gapscope check``: the CI gate. Exit 0 pass, 1 regression, 2 bad input.

The report comes from a file, from standard input (``-``, ``/dev/stdin``, a pipe), or from a
store or arrays analysed first. ``--update-baseline`` makes the report the new baseline when
it passes the gate (``--force``: even when it does not), written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from gapscope.cli import options as opt
from gapscope.cli.analyze import embedding_source, input_files
from gapscope.cli.errors import handle_errors
from gapscope.cli.output import (
    analyse_with_status,
    check_output_paths,
    check_stdout_once,
    write_output,
    write_rendered,
)
from gapscope.cli.report_input import (
    STDIN,
    check_distinct_paths,
    check_one_stdin,
    read_report,
    writes_to_stdout,
)
from gapscope.errors import GapscopeError

__all__ = ["CHECK_FORMATS", "STDIN", "check_command"]

CHECK_FORMATS = ("table", "json")
# Paths that name a stream rather than a file: /dev/stdin, /dev/fd/N, /proc/self/fd/N.
_STREAM_FOLDERS = ("/dev/", "/proc/")


@handle_errors
def check_command(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="A JSON report (- reads it from standard input), or a store folder to "
            "analyse first (with the baseline's parameters)."
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            "-b",
            help="The last good report (JSON) to compare with; with --update-baseline, the "
            "file the new baseline is written to.",
        ),
    ] = None,
    tolerance: Annotated[
        list[str] | None,
        typer.Option(
            "--tolerance",
            "-t",
            metavar="METRIC=VALUE",
            help="How far METRIC may move in its bad direction: absolute (gap=0.02) or relative "
            "to the baseline (R@1=5%). METRIC is a flat key, a leaf name or a glob, in the "
            "report's spelling (image-text/recall/text->image/R@1, R@1) or the flat output's "
            "(image-text/recall/text_to_image/R1, R1). Repeatable. Any tolerance replaces the "
            "default gate: then a metric no pattern selects has tolerance 0.",
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
            help="Count a change only when the reports' bootstrap intervals do not overlap "
            "(default: the default gate does so where both reports have intervals).",
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
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the check document (JSON) to this file."),
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option(help="Also write JUnit XML (one test case a metric) to this file."),
    ] = None,
    save_report: Annotated[
        Path | None,
        typer.Option(help="When analysing a store or arrays, also write the report (JSON) here."),
    ] = None,
    update_baseline: Annotated[
        bool,
        typer.Option(
            "--update-baseline",
            help="When the check passes, write the report to --baseline as the new baseline "
            "(atomically; the first baseline when none exists yet).",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --update-baseline: write it even though the check fails (exit 0).",
        ),
    ] = False,
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
    interval: opt.PanelInterval = None,
    device: opt.PanelDevice = "auto",
    block_size: opt.PanelBlockSize = None,
    quiet: opt.Quiet = False,
) -> None:
    """Gate a report on a baseline and thresholds: exit 0 pass, 1 regression, 2 bad input.

    Without tolerances, the default gate: the gap, the cosines, alignment, uniformity,
    retrieval and zero-shot accuracy fail the check when they get worse beyond their bootstrap
    intervals (when both reports have them) or their default tolerance (gap, cosines,
    retrieval, zero-shot accuracy 0.02; alignment, uniformity 0.04); the other metrics are
    tracked, not gated. With tolerances, every metric with a good direction is gated by its
    tolerance. Settings come from --config,
    ./gapscope.toml or \\[tool.gapscope.check] in ./pyproject.toml, then from the options.
    JUnit XML with --junit; GitHub Actions annotations when GITHUB_ACTIONS=true. A store (or
    arrays) is analysed first, with the baseline's parameters unless the analysis options
    say otherwise. --update-baseline writes the report as the new baseline when it passes.

    Example:

        gapscope check report.json --baseline baseline.json

        gapscope analyze store/ -f json | gapscope check - --baseline baseline.json

        gapscope check report.json --baseline baseline.json -t gap=0.02 -t R@1=5%

        gapscope check store/ --baseline baseline.json --significant --junit gate.xml

        gapscope check report.json --baseline baseline.json --update-baseline

        gapscope check report.json --threshold 'image-text/gap<=0.9' --format json
    """
    from gapscope.gate.check import check_report, first_baseline_result
    from gapscope.gate.config import load_check_config
    from gapscope.gate.rules import parse_threshold, parse_tolerance_option

    opt.check_choice(fmt, CHECK_FORMATS, "format")
    check_one_stdin(report=source, baseline=baseline)
    if update_baseline or force:
        _check_promotion_target(baseline, update_baseline)
    check_output_paths(output=output, json=json_path, junit=junit, save_report=save_report)
    check_stdout_once(output=output, json=json_path, junit=junit, save_report=save_report)
    files = {"image": image, "text": text, "audio": audio}
    check_distinct_paths(
        {"report": source, "baseline": baseline, **input_files(files, {"labels": labels})},
        {"--output": output, "--json": json_path, "--junit": junit, "--save-report": save_report},
    )
    settings = load_check_config(config)
    tolerances = list(settings.tolerances) + [parse_tolerance_option(t) for t in tolerance or []]
    thresholds = list(settings.thresholds) + [parse_threshold(t) for t in threshold or []]
    significant = settings.significant if significant is None else significant
    # With --update-baseline a missing baseline is the first one: nothing to compare with.
    first = update_baseline and baseline is not None and not baseline.exists()
    base = read_report(baseline, "baseline") if baseline is not None and not first else None
    # The analysis options, by their flags; those given replace the baseline's parameters.
    flags = {
        "--metrics": metrics,
        "--k": k,
        "--seed": seed,
        "--sample": sample,
        "--bootstrap": bootstrap,
        "--confidence": confidence,
        "--interval": interval,
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
    if first and not thresholds:
        # Nothing to compare nor to gate; the outputs are written all the same, so that a
        # pipeline's first run has the files its later runs have.
        result = first_baseline_result(
            report, tolerances=tolerances, significant=significant, config=settings.source
        )
    else:
        result = check_report(
            report,
            base,
            tolerances=tolerances,
            thresholds=thresholds,
            significant=significant,
            config=settings.source,
        )
    _emit(result, fmt, output, json_path, junit)
    code = result.exit_code
    if update_baseline:
        assert baseline is not None  # _check_promotion_target
        to_stderr = fmt == "json" and writes_to_stdout(output)
        code = _promote(report, base, result, baseline, force=force, to_stderr=to_stderr)
    if code:
        raise typer.Exit(code)


def _is_report_path(source: Path) -> bool:
    """Whether ``source`` names a JSON report to read (a ``.json`` file, standard input, a
    stream such as ``/dev/stdin`` or a FIFO) rather than a store or a file to refuse."""
    text = str(source)
    if text == STDIN or source.suffix.lower() == ".json":
        return True
    if source.is_dir():  # a store, wherever it lies (/dev/shm/store too)
        return False
    return text.startswith(_STREAM_FOLDERS) or (source.exists() and not source.is_file())


def _check_promotion_target(baseline: Path | None, update_baseline: bool) -> None:
    """Refuse, before any work, an --update-baseline that could not write its baseline."""
    if not update_baseline:
        raise GapscopeError("--force applies with --update-baseline only")
    if baseline is None:
        raise GapscopeError(
            "--update-baseline needs --baseline PATH: the file the new baseline is written to"
        )
    if str(baseline) == STDIN:
        raise GapscopeError(
            "--update-baseline writes the file given by --baseline; standard input (-) cannot "
            "be written"
        )
    check_output_paths(baseline=baseline)


def _promote(
    report: Any, base: Any, result: Any, path: Path, *, force: bool, to_stderr: bool
) -> int:
    """Write ``report`` to ``path`` as the new baseline (atomically; written through for a
    device), recording its checkpoint in its ``run``; or refuse when it fails the gate and
    ``force`` is not given. Returns the exit code."""
    failed = not result.passed
    if failed and not force:
        typer.echo(
            f"baseline {path} not updated: the report fails the gate; fix the regression, or "
            "give --force to make it the baseline all the same",
            err=to_stderr,
        )
        return result.exit_code
    if report.run is None:  # a report written before reports had one: name its checkpoint
        report.run = report.run_info.to_dict()
    write_output(report.to_json(), path)
    now = _run_text(report.run_info)
    if base is None:
        message = f"baseline {path} written (the first): checkpoint {now}"
    else:
        message = f"baseline {path} updated: checkpoint {now}, was {_run_text(base.run_info)}"
    if failed:
        message += " (--force: accepted although it fails the gate)"
    typer.echo(message, err=to_stderr)
    return 0


def _run_text(run: Any) -> str:
    return run.checkpoint + (f" (step {run.step})" if run.step is not None else "")


def _current_report(
    source: Path | None,
    base: Any,
    files: dict[str, Path | None],
    labels: list[str] | None,
    flags: dict[str, Any],
    save_report: Path | None,
    quiet: bool,
    **analysis: Any,
) -> Any:
    """The report to gate: read from JSON, or analysed from a store or arrays."""
    from gapscope.gate.check import baseline_analysis_params

    if source is not None and _is_report_path(source):
        given = [
            flag
            for flag, v in {
                **{f"--{m}": path for m, path in files.items()},
                **flags,
                "--labels": labels or None,
                "--save-report": save_report,
            }.items()
            if v is not None
        ]
        if given:
            raise GapscopeError(
                f"{given[0]} applies when analysing a store or arrays, not to the report {source}"
            )
        return read_report(source, "report")
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


def _emit(
    result: Any, fmt: str, output: Path | None, json_path: Path | None, junit: Path | None
) -> None:
    from gapscope.gate.outputs import github_annotations, render_check, to_junit_xml

    if fmt == "json":
        write_output(result.to_json(), output)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
    else:
        write_rendered(lambda console: render_check(result, console), output)
    if json_path is not None:
        write_output(result.to_json(), json_path)
    if junit is not None:
        write_output(to_junit_xml(result), junit)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        # Workflow commands are read from stdout; keep them off a JSON document there.
        on_stderr = fmt == "json" and writes_to_stdout(output)
        for line in github_annotations(result):
            typer.echo(line, err=on_stderr)
