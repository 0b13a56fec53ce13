"""``gapscope diff``: two reports side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gapscope.cli import options as opt
from gapscope.cli.check import CHECK_FORMATS
from gapscope.cli.errors import handle_errors
from gapscope.cli.output import check_output_paths, write_output, write_rendered
from gapscope.cli.report_input import check_distinct_paths, check_one_stdin, read_report

__all__ = ["diff_command"]


@handle_errors
def diff_command(
    a: Annotated[
        Path,
        typer.Argument(
            help="The earlier report (JSON), e.g. the baseline; - reads standard input."
        ),
    ],
    b: Annotated[Path, typer.Argument(help="The later report (JSON); - reads standard input.")],
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

        gapscope analyze store/ -f json | gapscope diff baseline.json -
    """
    from gapscope.gate.diff import diff_reports
    from gapscope.gate.outputs import render_diff

    opt.check_choice(fmt, CHECK_FORMATS, "format")
    check_one_stdin(report_A=a, report_B=b)
    check_output_paths(output=output)
    check_distinct_paths({"report A": a, "report B": b}, {"--output": output})
    result = diff_reports(read_report(a, "report A"), read_report(b, "report B"), all_keys=all_keys)
    if fmt == "json":
        write_output(result.to_json(), output)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
    else:
        write_rendered(lambda console: render_diff(result, console), output)
