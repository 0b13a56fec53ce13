"""The ``gapscope`` command line: parse options, call the library, render, map errors to exits.

Exit codes: 0 ok; 1 a check found a regression; 2 bad usage or bad input (a one-line message on
stderr, never a traceback); 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from gapscope import __version__
from gapscope.errors import GapscopeError

app = typer.Typer(
    name="gapscope",
    help="Diagnose the embedding spaces of multimodal contrastive models (CLIP, SigLIP, CLAP).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])
EXIT_BAD_INPUT = 2


def fail(message: str) -> typer.Exit:
    """Print ``Error: message`` on one line to stderr and return the exit-2 exception to raise."""
    first_line = " ".join(str(message).split())
    typer.echo(f"Error: {first_line}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


def handle_errors(func: F) -> F:
    """Turn library errors into one-line messages and exit codes, for every command."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GapscopeError as exc:
            raise fail(str(exc)) from None
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise fail(f"{exc.strerror}: {exc.filename}") from None
        except KeyboardInterrupt:
            typer.echo("Interrupted.", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gapscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True,
                     help="Show the version and exit."),
    ] = False,
) -> None:
    """Diagnose the embedding spaces of multimodal contrastive models (CLIP, SigLIP, CLAP)."""


def _write_output(text: str, path: Path | None) -> None:
    from gapscope.store import atomic_write_text

    if path is None or str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(path, text)


@app.command()
@handle_errors
def analyze(
    store: Annotated[Path | None, typer.Argument(help="An embedding store folder.")] = None,
    image: Annotated[Path | None, typer.Option(help="Image embeddings (.npy/.pt/.safetensors), "
                                               "row i paired with row i of the others.")] = None,
    text: Annotated[Path | None, typer.Option(help="Text embeddings.")] = None,
    audio: Annotated[Path | None, typer.Option(help="Audio embeddings.")] = None,
    labels: Annotated[Path | None, typer.Option(help="Per-row class labels (.npy), the ground "
                                                "truth of intra-modal retrieval.")] = None,
    metrics: Annotated[str, typer.Option(help="Comma list of gap, cosine, alignment, cone, "
                                         "uniformity, mir, retrieval; or 'all'.")] = "all",
    k: Annotated[str, typer.Option("--k", help="K values of recall@K.")] = "1,5,10",
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "auto",
    sample: Annotated[int | None, typer.Option(help="Estimate uniformity and retrieval from N "
                                               "random queries a modality (with standard "
                                               "errors).")] = None,
    block_size: Annotated[int | None, typer.Option(help="Rows a similarity block.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json, flat or csv.")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the --format "
                                                "output to this file instead of stdout.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the JSON report "
                                                   "to this file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")] = False,
) -> None:
    """Compute the modality gap, cone, uniformity, alignment, MIR and retrieval recall.

    Example:

        gapscope analyze examples/example-store

        gapscope analyze --image img.npy --text txt.npy --format json -o report.json
    """
    from gapscope.analyze import analyze as run_analysis
    from gapscope.report.formats import FORMATS, render_text
    from gapscope.report.terminal import render_report
    from gapscope.sources import EmbeddingSet

    if fmt not in FORMATS:
        raise GapscopeError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    files = {"image": image, "text": text, "audio": audio}
    given = {m: p for m, p in files.items() if p is not None}
    if store is not None and given:
        raise GapscopeError("give either a store or --image/--text/--audio arrays, not both")
    if store is None and not given:
        raise GapscopeError("give a store folder, or at least two of --image, --text, --audio")
    if store is not None and labels is not None:
        raise GapscopeError("--labels is for plain arrays; a store keeps labels in its items")
    source = (EmbeddingSet.from_store(store) if store is not None
              else EmbeddingSet.from_files(given, labels=labels))

    err = Console(stderr=True)
    if quiet:
        report = run_analysis(source, metrics=metrics, k=k, seed=seed, device=device,
                              sample=sample, block_size=block_size)
    else:
        with err.status("analysing") as status:
            report = run_analysis(source, metrics=metrics, k=k, seed=seed, device=device,
                                  sample=sample, block_size=block_size,
                                  progress=lambda msg: status.update(f"analysing: {msg}"))
    if json_path is not None:
        _write_output(report.to_json(), json_path)
    if fmt == "table":
        if output is not None:
            with open(output, "w", encoding="utf-8") as fh:
                render_report(report, Console(file=fh, width=120))
        else:
            render_report(report, Console())
    else:
        _write_output(render_text(report, fmt), output)


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

    from gapscope.store import EmbeddingStore

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
            m, str(inf["rows"]), str(inf["dim"]), inf["dtype"],
            str(len(set(s.groups(m).tolist()))),
            "-" if labels_ is None else str(len(set(labels_.tolist()))),
            "yes" if inf.get("normalized") else "no",
        )
    console.print(table)
    enc = s.encoder
    if enc:
        console.print("encoder: " + ", ".join(f"{k}={v}" for k, v in sorted(enc.items())
                                              if v is not None and not isinstance(v, dict)))
    skipped = s.manifest.get("skipped") or []
    if skipped:
        console.print(f"skipped while extracting: {len(skipped)} files")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
