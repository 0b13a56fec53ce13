"""``gapscope extract``: embeddings of an image or audio folder and its captions into a store.

Thin on purpose: it parses options, calls :func:`gapscope.extract.extraction.extract` (or the
torchrun wrapper) and prints its summary; Ctrl-C exits 130 and the extract resumes when run
again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gapscope.cli.errors import handle_errors

__all__ = ["extract_command"]

_one_line_errors = handle_errors(
    interrupted="Interrupted: rows written so far are kept; run the same command again to resume."
)


@_one_line_errors
def extract_command(
    # A string, not a Path, so that a URL refused keeps its "//" in the message.
    out: Annotated[
        str,
        typer.Option(
            "--out", "-o", help="Store folder to write; an interrupted extract there is resumed."
        ),
    ],
    images: Annotated[
        Path | None, typer.Option(help="Image folder (sub-folders become labels).")
    ] = None,
    audio: Annotated[
        Path | None, typer.Option(help="Audio folder (sub-folders become labels).")
    ] = None,
    captions: Annotated[
        Path | None, typer.Option(help="CSV, TSV or JSONL file of (file, caption) rows.")
    ] = None,
    webdataset: Annotated[
        str | None,
        typer.Option(
            help="webdataset tar shards in img2dataset's layout (key.jpg, key.txt): a path, "
            "glob or brace pattern, quoted ('shards/{00000..00009}.tar')."
        ),
    ] = None,
    hf_dataset: Annotated[
        Path | None,
        typer.Option(help="A Hugging Face dataset saved with save_to_disk (name its columns)."),
    ] = None,
    image_column: Annotated[
        str | None, typer.Option(help="--hf-dataset: the image column.")
    ] = None,
    audio_column: Annotated[
        str | None, typer.Option(help="--hf-dataset: the audio column.")
    ] = None,
    text_column: Annotated[
        str | None,
        typer.Option(help="--hf-dataset: the caption column (a string or a list of strings)."),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="--hf-dataset: the split to read (needed when there are several)."),
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            help="open_clip, clap, hf (transformers CLIP, SigLIP or CLAP) or an installed "
            "plugin's name (default: open_clip for images, clap for audio)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="open_clip architecture (ViT-B-32, "
            "hf-hub:..., gapscope-tiny-vit) or CLAP hub name "
            "/ local folder (gapscope-tiny-clap); with --encoder hf, a hub name "
            "(openai/clip-vit-base-patch32) or a save_pretrained folder."
        ),
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="open_clip hub tag (openai, "
            "laion2b_s34b_b79k) or a local checkpoint "
            "file; none = random weights."
        ),
    ] = None,
    model_config: Annotated[
        Path | None,
        typer.Option(help="Local JSON model config (open_clip model config or ClapConfig)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows a batch.")] = 32,
    workers: Annotated[
        int | None,
        typer.Option(help="Decoding processes (default: cores - 1, at most 4; 0 = none)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16.")] = "fp32",
    shard: Annotated[
        str | None,
        typer.Option(help="Extract only slice i of n (i/n, from 0); combine with gapscope merge."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of random weights (with no --pretrained).")] = 0,
    file_column: Annotated[
        str | None, typer.Option(help="Captions column naming the file.")
    ] = None,
    caption_column: Annotated[
        str | None, typer.Option(help="Captions column holding the caption.")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace the store at --out once the new one is complete (built beside it; "
            "other files in the folder are kept).",
        ),
    ] = False,
    classes: Annotated[
        Path | None,
        typer.Option(
            help="Text file of class names, one a line: their prompts are encoded by the text "
            "tower, ensembled a class and stored for zero-shot classification (the image or "
            "audio labels, sub-folder names, name the classes)."
        ),
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option(
            help="--classes: text file of prompt templates, one a line, {} where the class "
            "name goes (default: 'a photo of a {}.', for audio 'this is a sound of {}.')."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Extract embeddings of an image or audio folder and its captions, webdataset shards or
    a saved Hugging Face dataset into a store.

    Unreadable files are skipped and listed. Run the same command again to resume.
    One extract at a time writes a store: a second one into it stops with the first one's pid.

    Shard with --shard i/n, then combine the shards with gapscope merge; or start it with
    torchrun --nproc-per-node G -m gapscope extract ..., which makes each rank a shard and
    merges on rank 0.

    Example:

        gapscope demo --out demo/

        gapscope extract --images demo/data/images --model gapscope-tiny-vit -o s/

        gapscope extract --images demo/data/images --model gapscope-tiny-vit -o s/
        --classes demo/data/image-classes.txt --templates demo/data/image-templates.txt

        gapscope extract --images photos/ --pretrained vit-b-32.pt -o store/

        gapscope extract --images photos/ --encoder hf --model openai/clip-vit-base-patch32 -o s/

        gapscope extract --webdataset 'shards/{00000..00009}.tar' --model ViT-B-32 -o s/

        gapscope extract --hf-dataset saved/ --split train --image-column image
        --text-column caption -o s/
    """
    from rich.console import Console

    from gapscope.extract.distributed import extract_distributed, torchrun_rank
    from gapscope.extract.extraction import extract
    from gapscope.extract.summary import print_summary

    options: dict[str, Any] = dict(
        images=images,
        audio=audio,
        captions=captions,
        encoder=encoder,
        model=model,
        pretrained=pretrained,
        model_config=model_config,
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        shard=shard,
        seed=seed,
        overwrite=overwrite,
        quiet=quiet,
        file_column=file_column,
        caption_column=caption_column,
        webdataset=webdataset,
        hf_dataset=hf_dataset,
        image_column=image_column,
        audio_column=audio_column,
        text_column=text_column,
        split=split,
    )
    rank = torchrun_rank()
    if rank is not None:
        summary = extract_distributed(out, rank, **options)
        if rank.rank != 0:
            return
        if classes is not None:
            from gapscope.extract.extraction import add_class_prompts

            summary.classes = add_class_prompts(
                out,
                classes,
                templates,
                encoder=encoder,
                model=model,
                pretrained=pretrained,
                model_config=model_config,
                device=device,
                precision=precision,
                seed=seed,
                batch_size=batch_size,
            )
        print_summary(summary, Console())
        _warn_random_weights(summary.encoder)
        return
    else:
        summary = extract(out, classes=classes, templates=templates, **options)
    print_summary(summary, Console())
    _warn_random_weights(summary.encoder)


def _warn_random_weights(encoder: dict[str, Any]) -> None:
    """One line on stderr when the encoder got random weights (the seed it recorded), for
    any model but the bundled tiny ones, random by design. After the extraction, so that a
    failing one still says one line only; the summary's note says it on stdout too."""
    from gapscope.data.weights import encoder_name, random_init_seed
    from gapscope.extract.tiny_models import TINY_CLAP, TINY_OPEN_CLIP

    seed, name = random_init_seed(encoder), encoder_name(encoder) or "the encoder"
    if seed is not None and name not in (TINY_OPEN_CLIP, TINY_CLAP):
        typer.echo(
            f"warning: {name} got random weights (seed {seed}; no --pretrained), so its "
            "embeddings carry no meaning: give --pretrained a hub tag or a checkpoint file",
            err=True,
        )
