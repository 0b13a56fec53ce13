"""The ``gapscope`` command line: every command, each a thin layer over the library.

Each command parses its options, calls one library function, renders the result, and turns
library errors into one line on stderr and an exit code (:mod:`gapscope.cli.errors`): 0 ok;
1 a check found a regression; 2 bad usage or bad input; 130 interrupted. Heavy modules are
imported inside the commands, so ``gapscope check`` on JSON reports never loads torch.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gapscope._version import __version__
from gapscope.cli.analyze import analyze_command
from gapscope.cli.check import check_command
from gapscope.cli.demo import demo_command
from gapscope.cli.diff import diff_command
from gapscope.cli.extract import extract_command
from gapscope.cli.info import info_command
from gapscope.cli.merge import merge_command
from gapscope.cli.plot import plot_command

__all__ = ["app", "main"]

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


app.command("analyze")(analyze_command)
app.command("info")(info_command)
app.command("check")(check_command)
app.command("diff")(diff_command)
app.command("extract", no_args_is_help=True)(extract_command)
app.command("merge", no_args_is_help=True)(merge_command)
app.command("demo")(demo_command)
app.command("plot")(plot_command)


def main() -> None:
    """Console-script entry point."""
    app()
