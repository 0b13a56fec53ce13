"""``gapscope trend``: the metrics of many reports against the training step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gapscope.cli import options as opt
from gapscope.cli.errors import handle_errors
from gapscope.cli.output import (
    check_output_paths,
    check_parquet_format,
    check_stdout_once,
    require_parquet_writer,
    write_output,
    write_rendered,
)
from gapscope.cli.report_input import (
    STDIN,
    check_distinct_paths,
    check_one_stdin,
    read_report,
)
from gapscope.errors import GapscopeError

__all__ = ["TREND_FORMATS", "trend_command"]

TREND_FORMATS = ("table", "json", "long")


@handle_errors
def trend_command(
    reports: Annotated[
        list[Path],
        typer.Argument(
            help="Two or more JSON reports (analyze --step N --json FILE), in any order; - reads "
            "one from standard input.",
            show_default=False,
        ),
    ],
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write one self-contained HTML page with a plot a metric against the step "
            "(- for stdout, with --output FILE).",
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            "-m",
            metavar="PATTERNS",
            help="Comma list of the metrics to show: flat keys, leaf names or globs, as check "
            "takes them (gap,R@1,image-text/recall/*/R@5). Default: every metric with a good "
            "direction.",
            show_default=False,
        ),
    ] = None,
    tolerance: Annotated[
        list[str] | None,
        typer.Option(
            "--tolerance",
            "-t",
            metavar="METRIC=VALUE",
            help="Judge regressions by this tolerance instead of the default gate, as check "
            "does (gap=0.02, R@1=5%); after the config file's, as in check. Repeatable.",
        ),
    ] = None,
    significant: Annotated[
        bool | None,
        typer.Option(
            "--significant/--no-significant",
            help="Count a change only when the bootstrap intervals do not overlap (default: "
            "the default gate does so where both reports have intervals).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML file with check's \\[check] table, read as check reads it (default: "
            "./gapscope.toml, else \\[tool.gapscope.check] in ./pyproject.toml).",
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="table, json (schema gapscope.trend/1), or long (the reports' tidy table, "
            "one row a metric a report: CSV, or Parquet with -o FILE.parquet).",
        ),
    ] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the --format output to this file.")
    ] = None,
) -> None:
    """Follow the metrics of many reports over training, regressions marked.

    The reports go in the order of the steps they record (analyze --step; equal
    steps keep the order given), or in the order given when none records one.
    Each is compared with the first as gapscope check compares a report with its
    baseline, with check's settings (--config, ./gapscope.toml or
    \\[tool.gapscope.check] in ./pyproject.toml, then --tolerance and
    --significant): the default gate, or the configured one. A value that
    regressed, or fails a threshold of the settings, is marked with ! (red on a
    terminal). trend never fails on a regression; gate with check.

    Example:

        gapscope analyze examples/example-store -q --step 1000 -f json -o step-1000.json

        gapscope analyze examples/example-store -q --step 2000 -f json -o step-2000.json

        gapscope trend step-*.json

        gapscope trend step-*.json --html trend.html --metrics gap,R@1

        gapscope trend step-*.json -f long -o trend.parquet

        gapscope analyze examples/example-store -q --step 3000 -f json |
        gapscope trend step-*.json -
    """
    from gapscope.gate.config import load_check_config
    from gapscope.gate.reports import STDIN_NAME
    from gapscope.gate.rules import parse_tolerance_option
    from gapscope.gate.trend import trend_reports
    from gapscope.report.long import is_parquet_path, write_long

    opt.check_choice(fmt, TREND_FORMATS, "format")
    check_output_paths(output=output, html=html)
    # --html -: the page on stdout, as -o - writes there; never with the --format output.
    check_stdout_once(html=html, output=output)
    roles = {f"report {path}": path for path in reports}
    check_one_stdin(**roles)
    check_distinct_paths({**roles, "config file": config}, {"--output": output, "--html": html})
    check_parquet_format(output, fmt)
    require_parquet_writer(output)
    patterns = [p.strip() for p in (metrics or "").split(",") if p.strip()]
    if metrics is not None and not patterns:
        raise GapscopeError("--metrics is empty: give patterns like gap,R@1")
    # The settings of check, found and merged as check does, so that the two judge alike.
    settings = load_check_config(config)
    rules = list(settings.tolerances) + [parse_tolerance_option(t) for t in tolerance or []]
    significant = settings.significant if significant is None else significant
    loaded = [read_report(path, "report") for path in reports]
    names = [STDIN_NAME if str(path) == STDIN else str(path) for path in reports]
    result = trend_reports(
        loaded,
        names,
        metrics=patterns,
        tolerances=rules,
        thresholds=settings.thresholds,
        significant=significant,
        config=settings.source,
    )
    if html is not None:
        from gapscope.gate.trend_outputs import render_trend_html

        write_output(render_trend_html(result), html)
    if fmt == "json":
        write_output(result.to_json(), output)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
    elif fmt == "long":
        ordered = [loaded[i] for i in result.order]
        if output is not None and is_parquet_path(output):
            write_long(output, ordered)
        else:
            from gapscope.report.long import to_long_csv

            write_output(to_long_csv(ordered), output)
    else:
        from gapscope.gate.trend_outputs import render_trend

        write_rendered(lambda console: render_trend(result, console), output)
