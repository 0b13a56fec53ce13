"""``gapscope diff``: two reports side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gapscope.cli import options as opt
from gapscope.cli.check import CHECK_FORMATS
from gapscope.cli.errors import handle_errors
from gapscope.cli.output import check_output_paths, write_output, write_rendered

__all__ = ["diff_command"]


@handle_errors
def diff_command(
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
    from gapscope.gate.diff import diff_reports
    from gapscope.gate.outputs import render_diff
    from gapscope.gate.reports import load_report

    opt.check_choice(fmt, CHECK_FORMATS, "format")
    check_output_paths(output=output)
    result = diff_reports(load_report(a, "report A"), load_report(b, "report B"), all_keys=all_keys)
    if fmt == "json":
        write_output(result.to_json(), output)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
    else:
        write_rendered(lambda console: render_diff(result, console), output)
