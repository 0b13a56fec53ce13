"""``gapscope demo``: the whole pipeline on a generated dataset with tiny random models.

Writes the demo dataset (:mod:`gapscope.extract.demo_data`), extracts it into two stores,
``image-text`` with the tiny open_clip model and ``audio-text`` with the tiny CLAP (a store
holds one text modality, and images and sounds have different captions), each with the class
prompts of its labels (zero-shot classification), analyses each and prints the reports.
Nothing is downloaded; the models' weights are random but seeded, so the output is the same on
every run and means nothing about any real model.

With ``--out DIR`` nothing in ``DIR`` is overwritten: files of an earlier demo there are
recognised (the same bytes, the same stores) and reused; anything else in the way stops the
demo with one line before it writes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from gapscope.data.atomic import atomic_write_text
from gapscope.data.store import MANIFEST
from gapscope.errors import GapscopeError
from gapscope.extract.demo_data import write_demo_dataset
from gapscope.extract.extraction import ExistingStoreError, extract
from gapscope.extract.summary import ExtractSummary, print_summary
from gapscope.extract.tiny_models import TINY_CLAP, TINY_OPEN_CLIP

RANDOM_WEIGHTS_NOTE = (
    "Note: the demo models have random weights, so these numbers are meaningless; "
    "they show what a report looks like."
)


@dataclass
class DemoResult:
    """One analysed demo store."""

    name: str
    store: Path | None  # None once a temporary folder has been removed
    summary: ExtractSummary
    report: Any  # gapscope.report.model.Report


def run_demo(
    out: str | os.PathLike[str] | None = None,
    *,
    json_path: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> list[DemoResult]:
    """Generate, extract, analyse and print the demo; return the stores' summaries and reports.

    Args:
        out: folder to keep the dataset (``data/``) and the stores (``image-text/``,
            ``audio-text/``) in; an earlier demo's files there are reused, and any other
            file in the way is refused (never overwritten). By default a temporary folder
            that is removed afterwards.
        json_path: also write the JSON reports: ``report.json`` becomes
            ``report.image-text.json`` and ``report.audio-text.json``.
        quiet: no progress bars or extraction summaries (the reports are still printed).
        console: where to print (default: stdout).
    """
    from gapscope.api import analyze
    from gapscope.report.terminal import render_report

    console = console or Console()
    keep = out is not None
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="gapscope-demo-"))
    try:
        for name in _STORES:
            _check_store_folder(folder / name)
        data = write_demo_dataset(folder / "data")
        jobs: list[tuple[str, dict[str, Any]]] = [
            (
                "image-text",
                {
                    "images": data.images,
                    "captions": data.image_captions,
                    "encoder": "open_clip",
                    "model": TINY_OPEN_CLIP,
                    "classes": data.image_classes,
                    "templates": data.image_templates,
                },
            ),
            (
                "audio-text",
                {
                    "audio": data.audio,
                    "captions": data.audio_captions,
                    "encoder": "clap",
                    "model": TINY_CLAP,
                    "classes": data.audio_classes,
                    "templates": data.audio_templates,
                },
            ),
        ]
        results = []
        for name, options in jobs:
            if not quiet:
                console.rule(f"[bold]{name}[/bold]")
            summary = _extract_demo_store(folder / name, options, quiet)
            if not quiet:
                _show_summary(summary, console)
            report = analyze(summary.store, seed=0)
            render_report(report, console)
            results.append(DemoResult(name, summary.store if keep else None, summary, report))
        if json_path is not None:
            for result in results:
                atomic_write_text(_json_path(Path(json_path), result.name), result.report.to_json())
        console.print(f"[yellow]{RANDOM_WEIGHTS_NOTE}[/yellow]")
        if keep:
            console.print(
                f"Stores kept in {folder}: try [bold]gapscope analyze "
                f"{folder / 'image-text'}[/bold]"
            )
        return results
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _json_path(path: Path, name: str) -> Path:
    return path.with_name(f"{path.stem}.{name}{path.suffix or '.json'}")


_STORES = ("image-text", "audio-text")


def _check_store_folder(path: Path) -> None:
    """Refuse, before anything is written, a store folder that holds something not a store."""
    if not os.path.lexists(path):
        return
    if path.is_dir() and (not any(path.iterdir()) or (path / MANIFEST).is_file()):
        return
    raise GapscopeError(
        f"{path}: exists and is not a demo store; the demo never overwrites files: choose "
        "another folder or move it away"
    )


def _extract_demo_store(path: Path, options: dict[str, Any], quiet: bool) -> ExtractSummary:
    """Extract one demo store, or reuse (resume) the one an earlier demo left there."""
    try:
        # One process, no decoding workers: for 24 images and 12 clips starting workers
        # would cost more than it saves.
        return extract(
            path, **options, device="cpu", batch_size=16, workers=0, overwrite=False, quiet=quiet
        )
    except ExistingStoreError:
        raise GapscopeError(
            f"{path}: holds a store the demo did not write (other data or models); the demo "
            "never overwrites files: choose another folder or move it away"
        ) from None


def _show_summary(summary: ExtractSummary, console: Console) -> None:
    if summary.already_complete:  # print_summary would suggest --overwrite, which demo lacks
        console.print(
            f"[bold]Store[/bold] {summary.store}: kept from an earlier demo (same data, same "
            "models)",
            highlight=False,
            soft_wrap=True,
        )
    else:
        print_summary(summary, console)
