"""The extraction loop: dataset rows -> batches -> encoder -> store parts -> finished store.

Decoding runs in DataLoader worker processes so the encoder never waits on I/O. Encoded
batches are appended to the store in parts as they come (a part is whole batches, written
atomically), so an extract that is interrupted (Ctrl-C, ``kill -9``, a crash) resumes from the
parts on disk when run again with the same arguments, and finishes with the same files as an
uninterrupted run. The arguments that decide the embeddings are recorded in the manifest under
``extract``; a rerun with different ones is refused rather than mixing two extracts.

The store is locked for the whole run (:class:`~gapscope.data.store.StoreLock`): a second
extract into it is refused at once. ``overwrite`` builds the new store beside the old one and
swaps it in only once complete; a killed overwrite resumes like any other extract.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from gapscope.data.store import MODALITIES, EmbeddingStore, StoreLock
from gapscope.errors import GapscopeError
from gapscope.extract.datasets import (
    Candidate,
    Dataset,
    DatasetInput,
    MediaRef,
    open_media,
    scan_dataset,
)
from gapscope.extract.encoder import Encoder, Preprocessor
from gapscope.extract.progress import make_progress
from gapscope.extract.shards import Shard, parse_shard, plan_batches
from gapscope.extract.summary import ExtractSummary

#: The built-in encoder families; installed plugins add theirs (:mod:`gapscope.extract.plugins`).
ENCODER_FAMILIES = ("open_clip", "clap", "hf")
DEFAULT_PART_ROWS = 4096
DEFAULT_PART_SECONDS = 60.0

# Manifest field -> the option a user would change, for "different arguments" errors.
_OPTION_OF = {
    "family": "--encoder",
    "model": "--model",
    "pretrained": "--pretrained",
    "model_type": "--model (its model_type)",
    "checkpoint_sha256": "the weights (--pretrained or --model; checkpoint sha256)",
    "config_sha256": "--model (its config.json sha256)",
    "model_config_sha256": "--model-config (sha256)",
    "processor_sha256": "the tokenizer / feature extractor files (sha256)",
    "random_init_seed": "--seed",
    "precision": "--precision",
    "modalities": "modalities (--captions)",
    "batch_size": "--batch-size",
    "shard": "--shard",
    "dataset_fingerprint": "the dataset (its files, captions or columns changed)",
}


class ExistingStoreError(GapscopeError):
    """The output folder holds a store this extract cannot resume (other arguments, other
    data, or not written by ``gapscope extract``); ``overwrite`` replaces it."""


def default_workers() -> int:
    """Decoding workers: one core is left to the encoder, at most 4 are used."""
    return min(4, max(0, (os.cpu_count() or 1) - 1))


def load_encoder(
    family: str | None = None,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    model_config: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
) -> Encoder:
    """Build an encoder: ``open_clip`` (image/text), ``clap`` (audio/text), ``hf`` (a
    transformers CLIP or SigLIP, image/text, or CLAP, audio/text) or an installed plugin's
    (the ``gapscope.encoders`` entry points). See
    :func:`~gapscope.extract.open_clip_encoder.load_open_clip`,
    :func:`~gapscope.extract.clap_encoder.load_clap`, :func:`~gapscope.extract.hf_encoder.load_hf`
    and :mod:`gapscope.extract.plugins` for the arguments; a plugin's loader is called with
    the same keyword arguments."""
    options: dict[str, Any] = dict(
        model=model,
        pretrained=pretrained,
        model_config=model_config,
        device=device,
        precision=precision,
        seed=seed,
    )
    if family == "open_clip":
        from gapscope.extract.open_clip_encoder import load_open_clip

        return load_open_clip(**options)
    if family == "clap":
        from gapscope.extract.clap_encoder import load_clap

        return load_clap(**options)
    if family == "hf":
        from gapscope.extract.hf_encoder import load_hf

        return load_hf(**options)
    from gapscope.extract.plugins import load_plugin_encoder

    return load_plugin_encoder(str(family), ENCODER_FAMILIES, **options)


def extract(
    out: str | os.PathLike[str],
    *,
    images: str | os.PathLike[str] | None = None,
    audio: str | os.PathLike[str] | None = None,
    captions: str | os.PathLike[str] | None = None,
    encoder: str | Encoder | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    model_config: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    shard: str | Shard | None = None,
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = False,
    file_column: str | None = None,
    caption_column: str | None = None,
    webdataset: str | os.PathLike[str] | None = None,
    hf_dataset: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    text_column: str | None = None,
    audio_column: str | None = None,
    split: str | None = None,
    part_rows: int = DEFAULT_PART_ROWS,
    part_seconds: float = DEFAULT_PART_SECONDS,
    console: Console | None = None,
    classes: str | os.PathLike[str] | None = None,
    templates: str | os.PathLike[str] | None = None,
) -> ExtractSummary:
    """Extract embeddings of a folder (and its captions), webdataset shards or a saved dataset
    into the store at ``out``.

    Args:
        out: store folder to create, or the folder of an interrupted extract to resume.
        images, audio: the media folder (one of them); sub-folders become labels.
        captions: CSV, TSV or JSONL file of (file, caption) rows; see
            :mod:`gapscope.extract.captions`.
        encoder: ``"open_clip"``, ``"clap"``, ``"hf"``, an installed plugin's name (see
            :mod:`gapscope.extract.plugins`), an :class:`Encoder` instance, or ``None`` for
            open_clip with images and CLAP with audio.
        model, pretrained, model_config, precision, seed: passed to :func:`load_encoder`
            (unused when ``encoder`` is an :class:`Encoder`, which brings its own).
        batch_size: rows per batch. Part of the store's identity: the batch boundaries decide
            which rows are encoded together.
        workers: DataLoader decoding processes (default :func:`default_workers`; 0 decodes in
            this process).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (for :func:`load_encoder`).
        shard: ``"i/n"`` to extract only the i-th of n contiguous slices (merge them with
            :func:`gapscope.extract.merge_stores`).
        overwrite: replace the store at ``out`` instead of resuming it: the new store is
            built beside it and swapped in once complete, keeping the folder's other files
            (a killed overwrite is resumed by the same call).
        quiet: no progress bar.
        file_column, caption_column: the captions file's columns, when not the usual names.
        webdataset: instead of a folder, webdataset tar shards in img2dataset's layout: a
            path, glob or brace pattern (``shards/{00000..00009}.tar``); see
            :mod:`gapscope.extract.webdataset_shards`.
        hf_dataset, image_column, audio_column, text_column, split: instead of a folder, a
            Hugging Face dataset saved with ``save_to_disk``, its media column (one of
            image and audio), its captions column and the split to read; see
            :mod:`gapscope.extract.hf_datasets`.
        part_rows, part_seconds: write a part once this many rows are pending or this much
            time has passed (bounds the work an interruption can lose; never changes the
            result).
        classes, templates: a text file of class names (one a line) and one of prompt
            templates (``{}`` where the name goes; default ``a photo of a {}.``): the class
            prompts of zero-shot classification, encoded by the text tower, ensembled a class
            and written into the finished store (:mod:`gapscope.extract.class_prompts`).
            Running a finished extract again with them adds (or replaces) the prompts.

    Returns:
        An :class:`ExtractSummary` (rows per modality, skipped files and reasons, throughput).

    Raises:
        GapscopeError: bad arguments or input; :class:`ExistingStoreError`, a store at ``out``
            made with other arguments; :class:`~gapscope.errors.StoreError`, another process
            writing ``out``.
    """
    if batch_size < 1:
        raise GapscopeError(f"--batch-size {batch_size}: must be at least 1")
    shard = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    class_spec = _class_spec(classes, templates, shard)
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise GapscopeError(f"--workers {workers}: must be 0 or more")
    dataset = scan_dataset(
        DatasetInput(
            images=images,
            audio=audio,
            captions=captions,
            file_column=file_column,
            caption_column=caption_column,
            webdataset=webdataset,
            hf_dataset=hf_dataset,
            image_column=image_column,
            text_column=text_column,
            audio_column=audio_column,
            split=split,
        )
    )
    if class_spec is not None:
        _check_labels_are_classes(dataset, class_spec[0], classes)
    restore = _empty_folder(Path(out))  # made again if the extract is refused
    # Locked before the encoder loads: a second run into this store stops at once.
    with StoreLock.acquire(out) as lock:
        enc = _encoder_for(
            dataset,
            encoder,
            model=model,
            pretrained=pretrained,
            model_config=model_config,
            device=device,
            precision=precision,
            seed=seed,
        )
        identity = extract_identity(enc, dataset, batch_size, shard)
        store = _open_or_create(Path(out), lock, enc, dataset, identity, overwrite)
        skips = SkipLog(store.manifest.get("skipped") or dataset.skipped)
        if store.complete:
            # Finished before: nothing to do, or (an overwrite killed before its swap) swap in.
            already = not store.staged
            store.swap_in()
            summary = _summary(store, enc, skips, shard, already_complete=already)
        else:
            summary = _run(
                store,
                enc,
                dataset,
                skips,
                shard,
                batch_size=batch_size,
                workers=workers,
                quiet=quiet,
                part_rows=part_rows,
                part_seconds=part_seconds,
                console=console,
                restore=restore,
            )
        if class_spec is not None:
            summary.classes = write_class_prompts(
                Path(out), enc, *class_spec, classified=dataset.modalities[0], batch_size=batch_size
            )
        return summary


def _class_spec(
    classes: str | os.PathLike[str] | None,
    templates: str | os.PathLike[str] | None,
    shard: Shard | None,
) -> tuple[tuple[str, ...], tuple[str, ...] | None] | None:
    """The class names and templates, read (and checked) before any encoding."""
    from gapscope.data.class_prompts import read_class_names
    from gapscope.extract.class_prompts import read_templates

    if classes is None:
        if templates is not None:
            raise GapscopeError("--templates fills in class names: give --classes too")
        return None
    if shard is not None:
        raise GapscopeError(
            "--classes goes with a whole extract, not a --shard: merge the shards, then add "
            "the class prompts with gapscope.extract.add_class_prompts"
        )
    names = read_class_names(classes)
    return names, None if templates is None else read_templates(templates)


def _check_labels_are_classes(
    dataset: Dataset, names: Sequence[str], classes: str | os.PathLike[str] | None
) -> None:
    """Refuse, before any encoding, class names that the labels of the classified modality
    do not fit: ``gapscope analyze`` would refuse the store (the same rule, the same line)."""
    import numpy as np

    from gapscope.data.class_prompts import ClassPrompts, class_indices

    modality = dataset.modalities[0]
    labels = [c.label for c in dataset.candidates[modality] if c.label is not None]
    if labels:
        prompts = ClassPrompts(np.eye(len(names), dtype=np.float32), names=tuple(names))
        class_indices(np.array(labels), prompts, what=f"--classes {classes}: {modality} labels")


def write_class_prompts(
    out: Path,
    encoder: Encoder,
    names: Sequence[str],
    templates: Sequence[str] | None,
    *,
    classified: str,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Encode the class prompts with ``encoder`` and write them into the complete store at
    ``out``; what was written (for the summary)."""
    from gapscope.data.class_prompts import write_store_classes
    from gapscope.extract.class_prompts import encode_class_prompts

    prompts = encode_class_prompts(
        encoder, names, templates, classified=classified, batch_size=batch_size
    )
    write_store_classes(out, prompts, EmbeddingStore.open(out).encoder)
    return {
        "n_classes": prompts.n_classes,
        "n_templates": len(prompts.templates or ()),
        "path": str(out / "classes.npy"),
    }


def add_class_prompts(
    out: str | os.PathLike[str],
    classes: str | os.PathLike[str],
    templates: str | os.PathLike[str] | None = None,
    *,
    encoder: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    model_config: str | os.PathLike[str] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Add class prompts to a finished store (a merged one, say) with the encoder it was
    extracted with (the same arguments as :func:`extract`); what was written.

    Raises:
        GapscopeError: no such store, bad names or templates, or an encoder other than the
            store's (:func:`~gapscope.data.class_prompts.read_store_classes` would refuse
            the prompts).
    """
    spec = _class_spec(classes, templates, None)
    assert spec is not None
    store = EmbeddingStore.open(out)
    media = next((m for m in store.modalities if m != "text"), "image")
    family = encoder or ("clap" if media == "audio" else "open_clip")
    enc = load_encoder(
        family,
        model=model,
        pretrained=pretrained,
        model_config=model_config,
        device=device,
        precision=precision,
        seed=seed,
    )
    if json.loads(json.dumps(enc.description())) != store.encoder:
        raise GapscopeError(
            f"{out}: was extracted with another encoder than this one; give the extract's "
            "--encoder, --model, --pretrained and --precision"
        )
    with StoreLock.acquire(out):
        return write_class_prompts(Path(out), enc, *spec, classified=media, batch_size=batch_size)


def _run(
    store: EmbeddingStore,
    enc: Encoder,
    dataset: Dataset,
    skips: SkipLog,
    shard: Shard | None,
    *,
    batch_size: int,
    workers: int,
    quiet: bool,
    part_rows: int,
    part_seconds: float,
    console: Console | None,
    restore: Path | None = None,
) -> ExtractSummary:
    """Encode what the store lacks, then finalise it (and swap it in, for an overwrite)."""
    plans = {
        m: plan_batches(len(dataset.candidates[m]), batch_size, shard) for m in dataset.modalities
    }
    resumed = {m: store.rows_written(m) for m in dataset.modalities}
    summary = ExtractSummary(store=store.target, rows={}, skipped=[], encoder={}, resumed=resumed)
    with make_progress(quiet, console) as progress:
        for modality in dataset.modalities:
            stats = {"encoded": 0, "processed": 0}
            started = time.perf_counter()
            _extract_modality(
                store,
                modality,
                dataset.candidates[modality],
                enc,
                plans[modality],
                skips,
                workers=workers,
                part_rows=part_rows,
                part_seconds=part_seconds,
                stats=stats,
                on_progress=_progress_callback(progress, modality, plans[modality]),
            )
            seconds = time.perf_counter() - started
            summary.encoded += stats["encoded"]
            summary.processed += stats["processed"]
            summary.seconds += seconds
            summary.throughput[modality] = {**stats, "seconds": seconds}
    _finalize(store, enc, dataset, plans, skips, whole=shard is None, restore=restore)
    final = _summary(store, enc, skips, shard)
    summary.rows, summary.skipped, summary.encoder, summary.shard = (
        final.rows,
        final.skipped,
        final.encoder,
        final.shard,
    )
    return summary


def extract_identity(
    encoder: Encoder, dataset: Dataset, batch_size: int, shard: Shard | None
) -> dict[str, Any]:
    """The arguments that decide a store's content, as recorded in its manifest's ``extract``."""
    return {
        "encoder": encoder.identity(),
        "dataset_fingerprint": dataset.fingerprint,
        "modalities": list(dataset.modalities),
        "batch_size": int(batch_size),
        "shard": str(shard) if shard is not None else None,
    }


def identity_difference(recorded: Any, current: dict[str, Any]) -> str | None:
    """A short description of the first field where two identities differ, or ``None``."""
    if not isinstance(recorded, dict):
        return "no extract arguments recorded"
    flat_old, flat_new = _flatten(recorded), _flatten(current)
    for key in sorted(set(flat_old) | set(flat_new), key=_field_order):
        old, new = flat_old.get(key), flat_new.get(key)
        if old != new:
            option = _OPTION_OF.get(key.rsplit(".", 1)[-1], key)
            return f"{option}: store has {_short(old)}, now {_short(new)}"
    return None


def _field_order(key: str) -> tuple[int, str]:
    names = list(_OPTION_OF)
    last = key.rsplit(".", 1)[-1]
    return (names.index(last) if last in names else len(names), key)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "..."
    if isinstance(value, list):
        return "+".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _encoder_for(dataset: Dataset, encoder: str | Encoder | None, **options: Any) -> Encoder:
    media = dataset.modalities[0]
    if isinstance(encoder, Encoder):
        enc = encoder
    else:
        family = encoder or ("clap" if media == "audio" else "open_clip")
        enc = load_encoder(family, **options)
    missing = [m for m in dataset.modalities if m not in enc.modalities]
    if missing:
        suggestion = (
            "--encoder clap (or hf with a CLAP model) for audio"
            if media == "audio"
            else "--encoder open_clip (or hf with a CLIP or SigLIP model)"
        )
        raise GapscopeError(
            f"the {enc.family} encoder cannot encode {' and '.join(missing)} "
            f"(it encodes {' and '.join(enc.modalities)}); use {suggestion}"
        )
    return enc


def _open_or_create(
    path: Path,
    lock: StoreLock,
    encoder: Encoder,
    dataset: Dataset,
    identity: dict[str, Any],
    overwrite: bool,
) -> EmbeddingStore:
    """The store to write: the one at ``path`` to resume, the replacement an interrupted
    overwrite was building, or a new one (beside a store that ``overwrite`` replaces)."""
    current = EmbeddingStore.reopen(path, lock=lock)
    if current is not None and overwrite:
        staged = EmbeddingStore.reopen(path, lock=lock, staged=True)
        if staged is not None and identity_difference(staged.manifest.get("extract"), identity):
            staged = None  # a replacement with other arguments: start it again
        if staged is not None:
            return staged
    elif current is not None:
        _check_resumable(path, current, identity)
        return current
    return EmbeddingStore.create(
        path,
        encoder=encoder.description(),
        dataset=dataset.description,
        overwrite=overwrite,
        lock=lock,
        extract=identity,
        skipped=SkipLog(dataset.skipped).entries(),
    )


def _empty_folder(path: Path) -> Path | None:
    """``path`` if it is an empty folder (``None`` otherwise, or when it cannot be listed)."""
    try:
        return path if path.is_dir() and not any(path.iterdir()) else None
    except OSError:
        return None


def _check_resumable(path: Path, store: EmbeddingStore, identity: dict[str, Any]) -> None:
    recorded = store.manifest.get("extract")
    if not isinstance(recorded, dict):
        raise ExistingStoreError(
            f"{path}: a store not written by gapscope extract; choose another output "
            "folder or pass --overwrite to replace it"
        )
    difference = identity_difference(recorded, identity)
    if difference is not None:
        state = "a finished" if store.complete else "an interrupted"
        raise ExistingStoreError(
            f"{path}: holds {state} extract made with different arguments ({difference}); "
            "run with the same arguments to resume it, or pass --overwrite to start again"
        )


class SkipLog:
    """Rows skipped so far, kept in one deterministic order whatever order they come in."""

    def __init__(self, entries: Sequence[dict[str, Any]] = ()) -> None:
        self._entries: dict[tuple[Any, ...], dict[str, Any]] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: dict[str, Any]) -> bool:
        """Record ``entry``; ``False`` if it was already there."""
        key = _skip_key(entry)
        if key in self._entries:
            return False
        self._entries[key] = dict(entry)
        return True

    def entries(self) -> list[dict[str, Any]]:
        """All entries by modality (image, text, audio), captions line, then source."""
        return [self._entries[k] for k in sorted(self._entries)]

    def __len__(self) -> int:
        return len(self._entries)


def _skip_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    modality = entry.get("modality", "")
    order = MODALITIES.index(modality) if modality in MODALITIES else len(MODALITIES)
    return (
        order,
        entry.get("line") or 0,
        entry.get("source", ""),
        entry.get("file", ""),
        entry.get("reason", ""),
    )


class _SourceDataset(TorchDataset):
    """Row positions -> (position, sample or None, reason or None); never raises for a row."""

    def __init__(self, sources: list[str | MediaRef], preprocessor: Preprocessor) -> None:
        self.sources = sources
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        source = self.sources[index]
        try:
            # A member of a shard or a dataset's cell is read here, in the worker, batch by batch.
            return index, self.preprocessor.load(open_media(source)), None
        except Exception as exc:  # any failure to decode one file skips that file only
            return index, None, describe_failure(exc, str(source))


class _Collate:
    """Stack the samples that loaded; pass the failures through (picklable for workers)."""

    def __init__(self, preprocessor: Preprocessor) -> None:
        self.preprocessor = preprocessor

    def __call__(self, samples: list[tuple[int, Any, str | None]]):
        loaded = [(i, s) for i, s, reason in samples if reason is None]
        failed = [(i, reason) for i, _, reason in samples if reason is not None]
        batch = self.preprocessor.collate([s for _, s in loaded]) if loaded else None
        return [i for i, _ in loaded], batch, failed


def describe_failure(exc: BaseException, source: str) -> str:
    """``"ExceptionType: message"`` without the file's path (the entry names the file).

    >>> describe_failure(PermissionError(13, "Permission denied", "/d/a.png"), "/d/a.png")
    'PermissionError: [Errno 13] Permission denied'
    """
    if isinstance(exc, OSError) and exc.strerror:
        # Its text ends "...: '<path>'"; built from its parts, without a colon left over.
        number = f"[Errno {exc.errno}] " if exc.errno is not None else ""
        return f"{type(exc).__name__}: {number}{exc.strerror}"
    message = str(exc).replace(f" '{source}'", "").replace(f" {source}", "").replace(source, "")
    message = " ".join(message.split()).rstrip(":")
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _progress_callback(progress: Any, modality: str, plan: list[range]) -> Callable[[int], None]:
    total = sum(len(b) for b in plan)
    task = progress.add_task(modality, total=total)
    return lambda advance: progress.advance(task, advance)


def resume_point(
    modality: str,
    candidates: list[Candidate],
    written: list[dict[str, Any]],
    plan: list[range],
) -> int:
    """How many batches of ``plan`` the written parts already cover.

    Checks that the written rows are exactly what this dataset would give at their positions.
    """
    if not written:
        return 0
    position = {c.id: k for k, c in enumerate(candidates)}
    last = -1
    for item in written:
        item_id = item.get("id")
        k = position.get(item_id) if isinstance(item_id, str) else None
        if k is None or k <= last or candidates[k].item() != item:
            raise ExistingStoreError(
                f"{modality} rows already in the store do not match this dataset at "
                f"{item.get('id')!r}; pass --overwrite to start again"
            )
        last = k
    if not plan or not plan[0].start <= last < plan[-1].stop:
        raise ExistingStoreError(
            f"{modality} rows already in the store lie outside this shard; "
            "pass --overwrite to start again"
        )
    return sum(1 for batch in plan if batch.start <= last)


def _extract_modality(
    store: EmbeddingStore,
    modality: str,
    candidates: list[Candidate],
    encoder: Encoder,
    plan: list[range],
    skips: SkipLog,
    *,
    workers: int,
    part_rows: int,
    part_seconds: float,
    stats: dict[str, int],
    on_progress: Callable[[int], None],
) -> None:
    done = resume_point(modality, candidates, store.part_items(modality), plan)
    on_progress(sum(len(b) for b in plan[:done]))
    todo = plan[done:]
    if not todo:
        return
    preprocessor = encoder.preprocessor(modality)
    loader = DataLoader(
        _SourceDataset([c.load for c in candidates], preprocessor),
        batch_sampler=[list(b) for b in todo],
        num_workers=workers,
        collate_fn=_Collate(preprocessor),
        pin_memory=encoder.device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    pending_rows: list[np.ndarray] = []
    pending_items: list[dict[str, Any]] = []
    new_skips = False
    last_write = time.monotonic()

    def write_part() -> None:
        nonlocal pending_rows, pending_items, new_skips, last_write
        # Skips go into the manifest before the part exists: once a part is on disk, the
        # skips among its rows are recorded too (a resume recomputes later ones).
        if new_skips:
            store.update_manifest(skipped=skips.entries())
            new_skips = False
        if pending_items:
            store.append(modality, np.concatenate(pending_rows), pending_items)
        pending_rows, pending_items = [], []
        last_write = time.monotonic()

    try:
        for positions, batch, failures in loader:
            for k, reason in failures:
                new_skips |= skips.add(
                    {"modality": modality, "source": candidates[k].source, "reason": reason}
                )
            if batch is not None:
                embeddings = encoder.encode_batch(modality, batch)
                if embeddings.shape != (len(positions), encoder.embedding_dim):
                    raise RuntimeError(
                        f"{encoder!r} returned shape {embeddings.shape} for "
                        f"{len(positions)} {modality} rows"
                    )
                pending_rows.append(embeddings)
                pending_items.extend(candidates[k].item() for k in positions)
            stats["encoded"] += len(positions)
            stats["processed"] += len(positions) + len(failures)
            on_progress(len(positions) + len(failures))
            pending = sum(len(r) for r in pending_rows)
            if pending >= part_rows or time.monotonic() - last_write >= part_seconds:
                write_part()
    finally:
        # Whatever stops the loop (the end, Ctrl-C, an error), keep the whole batches done.
        write_part()


def _finalize(
    store: EmbeddingStore,
    encoder: Encoder,
    dataset: Dataset,
    plans: dict[str, list[range]],
    skips: SkipLog,
    *,
    whole: bool = True,
    restore: Path | None = None,
) -> None:
    rows = {m: store.rows_written(m) for m in dataset.modalities}
    try:
        if whole:
            _check_some_rows(rows, dataset, plans, skips)
    except GapscopeError:
        # Input that cannot make a store leaves the store it would have replaced alone, and
        # nothing of its own: the same arguments fail again, and fixed files change the
        # dataset's fingerprint, so an unfinished store here could never be resumed.
        store.abandon(restore)
        raise
    store.finalize(
        normalized={m: encoder.normalized(m) for m in dataset.modalities if rows[m]},
        skipped=skips.entries(),
    )


def _check_some_rows(
    rows: dict[str, int],
    dataset: Dataset,
    plans: dict[str, list[range]],
    skips: SkipLog,
) -> None:
    """Refuse a whole extract of which every file of a modality was unreadable.

    A shard is never checked so: its slice may hold no batch (more shards than batches) or
    only unreadable files, while the others hold rows, and one process's extract of the same
    data would succeed. Such a shard is finished with no rows and its skipped files listed
    (:attr:`~gapscope.data.store.EmbeddingStore.is_shard`), and ``merge`` checks the whole
    (:func:`check_readable_rows`), so shards, or ``torchrun`` ranks, end as one process
    would, whatever their count."""
    for modality in dataset.modalities:
        if plans[modality] and rows[modality] == 0:
            check_readable_rows(modality, 0, skips.entries(), planned=plans[modality])
    if not any(rows.values()):
        raise GapscopeError("the dataset has no rows to extract")


def check_readable_rows(
    modality: str,
    rows: int,
    skipped: list[dict[str, Any]],
    planned: list[range] | None = None,
) -> None:
    """Refuse ``rows == 0`` of ``modality``: every one of its files was skipped."""
    if rows:
        return
    first = next((s for s in skipped if s["modality"] == modality), None)
    reason = f" (first: {first['source']}: {first['reason']})" if first else ""
    count = (
        sum(len(b) for b in planned)
        if planned is not None
        else sum(s["modality"] == modality for s in skipped)
    )
    raise GapscopeError(f"no readable {modality} files: all {count} were skipped{reason}")


def _summary(
    store: EmbeddingStore,
    encoder: Encoder,
    skips: SkipLog,
    shard: Shard | None,
    *,
    already_complete: bool = False,
) -> ExtractSummary:
    rows = {m: int(store.info(m)["rows"]) for m in store.modalities}
    return ExtractSummary(
        store=store.target,
        rows=rows,
        skipped=skips.entries(),
        encoder=encoder.description(),
        already_complete=already_complete,
        shard=str(shard) if shard else None,
    )
