"""``gapscope demo``: the whole pipeline on a generated dataset with tiny random models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gapscope.cli.errors import handle_errors

__all__ = ["demo_command"]


@handle_errors
def demo_command(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Keep the demo dataset and stores in this folder (default: a temporary one).",
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Also write the JSON reports (X.json -> X.image-text.json, X.audio-text.json).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the whole pipeline on a small generated dataset with tiny random models.

    Shapes with captions (open_clip) and sounds with descriptions (CLAP), in seconds.

    Example:

        gapscope demo

        gapscope demo --out demo/ --json demo/report.json
    """
    from gapscope.cli.demo_run import run_demo

    run_demo(out, json_path=json_path, quiet=quiet)
