"""The ``gapscope`` command line: every command, each a thin layer over the library.

Each command parses its options, calls one library function, renders the result, and turns
library errors into one line on stderr and an exit code (:mod:`gapscope.cli.errors`): 0 ok;
1 a check found a regression; 2 bad usage or bad input; 3 a crash; 130 interrupted. Heavy
modules are imported inside the commands, so ``gapscope check`` on JSON reports never loads
torch.

Importing this package imports nothing but the standard library: :func:`main` is the console
script, and a Ctrl-C while typer, rich and numpy are still being imported must give its one
line and exit 130 like any other, so those imports happen inside it. ``app`` (the typer
application) is built on first use.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from typing import Any

__all__ = ["app", "build_app", "main"]

_APP: Any = None


def build_app() -> Any:
    """The typer application with every command (built once, then reused)."""
    global _APP
    if _APP is None:
        _APP = _make_app()
    return _APP


def _make_app() -> Any:
    import typer

    from gapscope._version import __version__
    from gapscope.cli.analyze import analyze_command
    from gapscope.cli.check import check_command
    from gapscope.cli.demo import demo_command
    from gapscope.cli.diff import diff_command
    from gapscope.cli.errors import OneLineUsageGroup
    from gapscope.cli.extract import extract_command
    from gapscope.cli.import_folder import import_command
    from gapscope.cli.info import info_command
    from gapscope.cli.log import log_command
    from gapscope.cli.merge import merge_command
    from gapscope.cli.plot import plot_command
    from gapscope.cli.trend import trend_command
    from gapscope.cli.upgrade import upgrade_command

    app = typer.Typer(
        name="gapscope",
        help="Diagnose the embedding spaces of multimodal contrastive models (CLIP, SigLIP, CLAP).",
        cls=OneLineUsageGroup,
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def version_callback(value: bool) -> None:
        if value:
            typer.echo(f"gapscope {__version__}")
            raise typer.Exit()

    # The option as a default value rather than ``Annotated``: typer resolves annotations in
    # the module's globals, and typer is imported here, not there.
    @app.callback()
    def _root(
        version: bool = typer.Option(
            False,
            "--version",
            callback=version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ) -> None:
        """Diagnose the embedding spaces of multimodal contrastive models (CLIP, SigLIP, CLAP)."""

    app.command("analyze")(analyze_command)
    app.command("info")(info_command)
    app.command("check")(check_command)
    app.command("diff")(diff_command)
    app.command("extract", no_args_is_help=True)(extract_command)
    app.command("merge", no_args_is_help=True)(merge_command)
    app.command("import", no_args_is_help=True)(import_command)
    app.command("demo")(demo_command)
    app.command("plot")(plot_command)
    app.command("log", no_args_is_help=True)(log_command)
    app.command("upgrade", no_args_is_help=True)(upgrade_command)
    app.command("trend", no_args_is_help=True)(trend_command)
    return app


def __getattr__(name: str) -> Any:
    # ``from gapscope.cli import app`` keeps working; the application is built on first use.
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point: run the command line and exit with its code.

    Ctrl-C at any moment after this is called (the imports included) prints one line and
    exits 130; a crash outside the commands exits 3 with one line (see
    :mod:`gapscope.cli.errors`).

    At the interpreter's exit, what is left is frozen out of the garbage collections at
    shutdown (:func:`gc.freeze` as an exit handler). Those collections, after the exit
    handlers and, above all, after the modules are emptied, would walk every object torch
    made to free the cycles among them: 0.27-0.45 s of every command that imports torch,
    measured on Python 3.11 (section "The interpreter's exit" of ``docs/performance.md``).
    Frozen objects in reference cycles are not finalized at exit; by then every output is
    written and flushed, the other exit handlers still run, and the operating system closes
    files and frees the memory.
    """
    # Registered once however often main() runs in one process (a caller that runs it more
    # than once, catching SystemExit, would otherwise freeze once per run).
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    try:
        app = build_app()
        app()
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except Exception as exc:  # a broken install, or a bug outside every command
        if os.environ.get("GAPSCOPE_TRACEBACK") == "1":
            raise
        sys.exit(_crashed(exc))


def _crashed(exc: Exception) -> int:
    try:
        from gapscope.cli.errors import report_crash
    except Exception:  # noqa: BLE001 - the error module itself cannot load (typer missing)
        detail = " ".join(str(exc).split()) or "no message"
        sys.stderr.write(f"Error: gapscope crashed ({type(exc).__name__}: {detail})\n")
        return 3
    return report_crash(exc)
