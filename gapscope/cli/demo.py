"""``gapscope demo``: the whole pipeline on a generated dataset with tiny random models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gapscope.cli.errors import handle_errors
from gapscope.cli.output import check_output_paths, write_rendered
from gapscope.errors import GapscopeError

__all__ = ["demo_command"]


@handle_errors
def demo_command(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Keep the demo dataset and stores in this folder (default: a temporary one); "
            "an earlier demo there is reused, other files are never overwritten.",
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

    if out is not None:
        # Checked before anything is generated: a file in the way would otherwise stop the
        # demo halfway with the name of some file inside it.
        existing = next((p for p in (out, *out.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise GapscopeError(f"--out {out}: {existing} is a file, not a folder")
    check_output_paths(json=json_path)
    # Through write_rendered: a CI log gets the width of COLUMNS, else a fixed wide one.
    write_rendered(
        lambda console: run_demo(out, json_path=json_path, quiet=quiet, console=console), None
    )
