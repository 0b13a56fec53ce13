"""The options every analysing command shares, declared once, and the checks of choices.

``analyze``, ``check`` (when it analyses a store) and ``plot`` take the same source options
(a store, or ``--image/--text/--audio`` arrays with ``--labels``) and the same analysis
options; each is an ``Annotated`` type here, so their help text is written once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from gapscope.errors import GapscopeError

__all__ = [
    "ANALYSIS_PANEL",
    "Audio",
    "BlockSize",
    "Bootstrap",
    "Confidence",
    "Interval",
    "Device",
    "Image",
    "Kvalues",
    "ClassNames",
    "Classes",
    "Labels",
    "Metrics",
    "Precision",
    "Quiet",
    "Sample",
    "Seed",
    "Step",
    "StoreArgument",
    "Tags",
    "Text",
    "check_choice",
]

#: The help panel of the analysis options on commands where they are secondary.
ANALYSIS_PANEL = "Analysis of a store or arrays"

# Strings, not Paths: a Path would fold the "//" of a URL (s3://bucket/store).
StoreArgument = Annotated[
    str | None,
    typer.Argument(
        help="An embedding store folder, or its fsspec URL (s3://, gs://, hf://, file://; the "
        "remote extra).",
        metavar="STORE",
        show_default=False,
    ),
]
Image = Annotated[
    str | None,
    typer.Option(
        help="Image embeddings (.npy/.pt/.safetensors, a path or an fsspec URL), row i paired "
        "with row i of the others.",
        metavar="PATH",
    ),
]
Text = Annotated[str | None, typer.Option(help="Text embeddings.", metavar="PATH")]
Audio = Annotated[str | None, typer.Option(help="Audio embeddings.", metavar="PATH")]
Labels = Annotated[
    list[str] | None,
    typer.Option(
        help="Class labels, the ground truth of intra-modal retrieval: PATH (one a row, shared "
        "by every modality) or NAME=PATH (one modality's; repeat for each). .npy, .pt, "
        ".safetensors or FILE.parquet:COLUMN."
    ),
]
Classes = Annotated[
    Path | None,
    typer.Option(
        "--classes",
        help="Class prompts for zero-shot classification: one text embedding a class (already "
        "ensembled), .npy, .pt, .safetensors or FILE.parquet:COLUMN. The labelled rows of the "
        "other modalities are classified against them (their labels name the class); a "
        "store's own class prompts (extract --classes) are used without it.",
    ),
]
ClassNames = Annotated[
    Path | None,
    typer.Option(
        "--class-names",
        help="Text file of the --classes' names, one a line in row order: labels are then "
        "class names (else class indices 0..C-1).",
    ),
]
Modality = Annotated[
    list[str] | None,
    typer.Option(
        "--modality",
        help="NAME=PATH: the embeddings of a modality of any name (video, depth, speech, ...) "
        "from .npy, .pt, .safetensors or FILE.parquet:COLUMN (a list column); repeat for each.",
    ),
]
Groups = Annotated[
    list[str] | None,
    typer.Option(
        "--groups",
        help="NAME=PATH: one group a row of that modality; rows of different modalities with "
        "equal groups are pairs (five captions an image), so row counts may differ. For "
        "every modality or none; repeat for each.",
    ),
]
Metrics = Annotated[
    str | None,
    typer.Option(
        help="Comma list of gap, cosine, alignment, cone, uniformity, mir, mmd, retrieval, "
        "diagnostics, zeroshot, whatif; or 'all'."
    ),
]
Kvalues = Annotated[str | None, typer.Option("--k", help="K values of recall@K, e.g. 1,5,10.")]
Seed = Annotated[int | None, typer.Option(help="Seed for every random choice.")]
Device = Annotated[str, typer.Option(help="cpu, cuda or auto (CUDA when available).")]
Sample = Annotated[
    int | None,
    typer.Option(
        help="Estimate uniformity and retrieval from N random queries a modality "
        "(with standard errors); the separability probe also fits on at most N rows."
    ),
]
BlockSize = Annotated[int | None, typer.Option(help="Rows a similarity block.")]
Precision = Annotated[
    str,
    typer.Option(
        help="fp32, or bf16 to round the unit rows to bfloat16 for the similarity "
        "products (float32 results and sums; faster on CUDA tensor cores, float32 "
        "speed on a CPU; ranks of scores within ~0.4% can swap)."
    ),
]
Bootstrap = Annotated[
    int | None,
    typer.Option(
        help="Add a bootstrap interval (see --interval) to the gap, cosines, cone, alignment, "
        "uniformity, retrieval and zero-shot accuracy (not MIR, the diagnostics, the what-ifs "
        "or GRAM volume) from B resamples of groups, e.g. 200 (10 to 100000).",
        metavar="B",
    ),
]
Confidence = Annotated[
    float | None,
    typer.Option(
        help="Level of the --bootstrap intervals, in (0, 1), e.g. 0.95 (nominal: they can "
        "cover less on small sets).",
    ),
]
Interval = Annotated[
    str | None,
    typer.Option(
        help="Kind of the --bootstrap intervals: bca (bias-corrected and accelerated; "
        "the default) or percentile.",
        show_default=False,
    ),
]
Step = Annotated[
    int | None,
    typer.Option(
        help="The training step of the checkpoint, recorded in the report (run.step) and in "
        "the flat and CSV outputs; gapscope log logs the report at it.",
        show_default=False,
    ),
]
Tags = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        metavar="KEY=VALUE",
        help="A label recorded in the report (run.tags) and in the flat and CSV outputs "
        "(tag.KEY), e.g. --tag lr=3e-4. Repeatable.",
        show_default=False,
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress messages.")]
Verify = Annotated[
    bool,
    typer.Option(
        "--verify",
        help="Hash a store's embeddings again and check them against the fingerprint its "
        "manifest caches (by default the cache is trusted while each file keeps its size and "
        "modification time).",
    ),
]


def in_panel(option: Any, panel: str = ANALYSIS_PANEL) -> Any:
    """The same option shown under another help panel (``check`` lists the analysis options
    apart from its own)."""
    base, info = get_args(option)
    moved = copy.copy(info)
    moved.rich_help_panel = panel
    return Annotated[base, moved]


PanelImage = in_panel(Image)
PanelText = in_panel(Text)
PanelAudio = in_panel(Audio)
PanelLabels = in_panel(Labels)
PanelMetrics = in_panel(Metrics)
PanelKvalues = in_panel(Kvalues)
PanelSeed = in_panel(Seed)
PanelSample = in_panel(Sample)
PanelBootstrap = in_panel(Bootstrap)
PanelConfidence = in_panel(Confidence)
PanelInterval = in_panel(Interval)
PanelDevice = in_panel(Device)
PanelBlockSize = in_panel(BlockSize)
PanelPrecision = in_panel(Precision)


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``choices``, else a one-line error naming them.

    >>> check_choice("json", ("table", "json"), "format")
    'json'
    >>> check_choice("xml", ("table", "json"), "format")
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: unknown format 'xml': choose from table, json
    """
    if value not in choices:
        raise GapscopeError(f"unknown {what} {value!r}: choose from {', '.join(choices)}")
    return value
