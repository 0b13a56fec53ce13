""":class:`GapMetric`: gapscope's report as a metric object for a training loop.

In the style of torchmetrics: :meth:`GapMetric.update` takes each batch's embeddings and
keeps them (detached, not copied) on their own device, :meth:`GapMetric.compute` analyses
everything given since the last :meth:`GapMetric.reset` and returns a
:class:`~gapscope.report.model.Report`, whose :meth:`~gapscope.report.model.Report.to_flat`
is what a tracker logs.

>>> import torch
>>> metric = GapMetric("fast", device="cpu")
>>> image, text = torch.randn(8, 4), torch.randn(8, 4)
>>> metric.update(image=image.bfloat16(), text=text.bfloat16())
>>> metric.update(image=image, text=text + 0.1)
>>> report = metric.compute()
>>> sorted(report.modalities), len(report.to_flat()) > 10
(['image', 'text'], True)

**Presets.** ``"fast"`` (every N steps) computes the gap, the cosines, alignment, the cone,
uniformity and retrieval, the last two from a fixed seeded sample of ``FAST_SAMPLE`` query
rows a modality (exact when a modality has no more rows); ``"full"`` computes the whole report
exactly. Any option of :func:`gapscope.analyze` given to the metric replaces the preset's.

**Inputs.** float32, float16 and bfloat16 tensors (float64 too) on any device; the analysis
widens them exactly (products in float32, O(n d) sums in float64). :meth:`~GapMetric.update`
never waits for the device: it checks shapes and dtypes only, and values (NaN, zero rows) are
checked by :meth:`~GapMetric.compute`.

**Pairs.** Without ``groups``, row i of every modality of one update pairs with row i of the
others. ``groups`` (one vector for all modalities, or one a modality, for an image with several
captions) say which rows of one update pair: rows of different modalities with equal codes.
By default the codes are local to their update (codes of different updates never match, on
one process or many), so ``torch.arange(batch)`` is a valid choice in every batch. With
``global_groups=True`` codes mean the same thing in every update and on every process (a
dataset index), and pair rows across updates. ``labels`` are integer class ids, the ground
truth of intra-modal retrieval; they are global by nature.

**Processes.** Under ``torch.distributed`` (DDP, torchrun), ``compute()`` gathers the rows of
every process in rank order (each process may hold a different number; the sizes are
exchanged, the rows padded to the largest and cut again), on every process, and then shares
the similarity passes among them (:mod:`gapscope.engine.distributed`). Every process gets the
report that one process would give after the same updates made in rank order (rank 0's, then
rank 1's, ...), byte for byte. ``compute()`` is then a collective: every process of the group
must call it. ``sync=None`` (the default) gathers whenever the default process group (or
``process_group``) is initialised with more than one process; ``sync=False`` analyses each
process's own rows.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from gapscope.analysis.context import DEFAULT_K, AnalysisOptions
from gapscope.api import analyze
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.data.store import MODALITIES
from gapscope.engine.distributed import Share, process_group_share, sharing
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.report.model import Report

__all__ = [
    "FAST_SAMPLE",
    "PRESETS",
    "GapMetric",
    "Preset",
    "TooFewRows",
    "check_every_n_steps",
    "compute_or_warn",
    "flat_values",
    "rows_from_outputs",
]

#: Query rows a modality that the ``fast`` preset samples for uniformity and retrieval.
FAST_SAMPLE = 1024


@dataclass(frozen=True)
class Preset:
    """What a preset analyses: the ``metrics`` selectors (``None``: all) and the ``sample``
    of query rows for uniformity and retrieval (``None``: every row)."""

    metrics: tuple[str, ...] | None
    sample: int | None


#: The presets by name.
PRESETS: dict[str, Preset] = {
    "fast": Preset(("gap", "cosine", "alignment", "cone", "uniformity", "retrieval"), FAST_SAMPLE),
    "full": Preset(None, None),
}

# Codes of the dtypes rows may be gathered in (0: no rows), for the header of the gather.
_DTYPE_CODES = {torch.float16: 1, torch.bfloat16: 2, torch.float32: 3, torch.float64: 4}
_CODE_DTYPES = {code: dtype for dtype, code in _DTYPE_CODES.items()}
# Header fields a modality: present, rows, dim, dtype code, labels (1) or not (0).
_FIELDS = 5


class TooFewRows(GapscopeError):
    """:meth:`GapMetric.compute` was given no rows, or fewer than two of a modality (a
    validation loader left empty, a last batch of one row): nothing to report. The training
    callbacks skip such a report with a warning (:func:`compute_or_warn`) rather than stop
    the training."""


def compute_or_warn(metric: GapMetric, stage: str, warn: bool = True) -> Report | None:
    """``metric.compute()``, or ``None`` when it has too few rows (:class:`TooFewRows`), with a
    :class:`UserWarning` naming ``stage`` when ``warn`` (one process of several warns);
    every other error is raised."""
    try:
        return metric.compute()
    except TooFewRows as exc:
        if warn:
            warnings.warn(f"gapscope: {stage} not logged: {exc}", UserWarning, stacklevel=2)
        return None


class GapMetric:
    """Accumulate embeddings batch by batch and analyse them with :func:`gapscope.analyze`.

    Args:
        preset: ``"fast"`` or ``"full"`` (see the module notes).
        metrics: families to compute (as :func:`gapscope.analyze`); ``None``: the preset's.
        k: the K of recall@K.
        seed: seeds the sample and every other random choice, so reruns agree.
        sample: query rows a modality for uniformity and retrieval, ``None`` for every row;
            ``"preset"``: the preset's.
        device: where the similarity products run; ``None``: the device the rows are on.
        block_size, precision, uniformity_t, alignment_alpha, bootstrap, confidence,
            interval: as
            :func:`gapscope.analyze`.
        sync: gather the rows of every process in :meth:`compute` (``None``: when a process
            group of more than one process is initialised).
        process_group: the ``torch.distributed`` group to gather over (``None``: the default).
        share_passes: after a gather, share the similarity passes among the processes
            (the same bytes, the work split).
        global_groups: group codes are ids shared by every update and process (a dataset
            index) rather than local to their update.
        source: what the report's ``input.source`` says.

    Raises:
        GapscopeError: an unknown preset or a bad option (checked here, not at compute).
    """

    def __init__(
        self,
        preset: str = "fast",
        *,
        metrics: str | Sequence[str] | None = None,
        k: str | Sequence[int] = DEFAULT_K,
        seed: int = 0,
        sample: int | None | Literal["preset"] = "preset",
        device: str | torch.device | None = None,
        block_size: int | None = None,
        precision: str = "fp32",
        uniformity_t: float = 2.0,
        alignment_alpha: float = 2.0,
        bootstrap: int | None = None,
        confidence: float = 0.95,
        interval: str = "bca",
        sync: bool | None = None,
        process_group: Any = None,
        share_passes: bool = True,
        global_groups: bool = False,
        source: str = "<training loop>",
    ) -> None:
        if preset not in PRESETS:
            raise GapscopeError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        chosen = PRESETS[preset]
        self.preset = preset
        #: The keyword arguments of :func:`gapscope.analyze` (device aside).
        self.options: dict[str, Any] = dict(
            metrics=metrics if metrics is not None else chosen.metrics,
            k=k,
            seed=seed,
            sample=chosen.sample if sample == "preset" else sample,
            block_size=block_size,
            precision=precision,
            uniformity_t=uniformity_t,
            alignment_alpha=alignment_alpha,
            bootstrap=bootstrap,
            confidence=confidence,
            interval=interval,
        )
        # Every option is checked now, so that a typo fails before training, not at step N.
        AnalysisOptions.parse(**self.options, device=device if device is not None else "cpu")
        self.device = device
        self.sync = sync
        self.process_group = process_group
        self.share_passes = share_passes
        self.global_groups = global_groups
        self.source = source
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget every row given so far."""
        self._modalities: tuple[str, ...] | None = None
        self._rows: dict[str, list[torch.Tensor]] = {}
        self._groups: list[dict[str, torch.Tensor] | None] = []
        self._labels: dict[str, list[torch.Tensor]] | None = None
        self._dim: int | None = None
        self._where: torch.device | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities given so far (empty before the first update)."""
        return self._modalities or ()

    def rows(self, modality: str) -> int:
        """Rows of ``modality`` this process holds."""
        return sum(int(t.shape[0]) for t in self._rows.get(modality, []))

    def update(
        self,
        image: Any = None,
        text: Any = None,
        audio: Any = None,
        *,
        groups: Any = None,
        labels: Any = None,
    ) -> None:
        """Add one batch: raw embeddings ``(rows, dim)`` of two or more modalities.

        Args:
            image, text, audio: tensors (or arrays) of raw embeddings; every update gives the
                same modalities, of one dimension, on one device.
            groups: which rows pair (see the module notes): ``None`` (row i with row i; every
                modality then has the same rows), one integer vector for every modality, or a
                mapping ``{modality: vector}``.
            labels: integer class ids, one vector for every modality or a mapping; given in
                every update or in none.

        Raises:
            GapscopeError: a shape, dtype, device or modality that does not fit this update
                or the earlier ones.
        """
        given = {
            m: v for m, v in (("image", image), ("text", text), ("audio", audio)) if v is not None
        }
        if len(given) < 2:
            raise GapscopeError(
                "update: give the embeddings of two or more modalities, "
                "e.g. update(image=image_embeds, text=text_embeds)"
            )
        rows = {m: _checked_rows(v, m) for m, v in given.items()}
        self._check_fits(rows)
        counts = {m: int(t.shape[0]) for m, t in rows.items()}
        if groups is None and self.global_groups:
            raise GapscopeError(
                "update: global_groups=True needs groups in every update (ids that mean the "
                "same pairing in every batch and process, such as dataset indices)"
            )
        if groups is None and len(set(counts.values())) > 1:
            listed = ", ".join(f"{m} has {n}" for m, n in counts.items())
            raise GapscopeError(
                f"update: row counts differ ({listed}); without groups row i pairs with "
                "row i, so give groups to say which rows pair"
            )
        group_codes = None if groups is None else _codes(groups, counts, "groups")
        label_codes = None if labels is None else _codes(labels, counts, "labels")
        if self._modalities is not None and (self._labels is None) != (label_codes is None):
            earlier = "gave no labels" if self._labels is None else "gave labels"
            raise GapscopeError(
                f"update: earlier updates {earlier}; give labels in every update or in none"
            )
        if self._modalities is None:
            self._modalities = tuple(rows)
            self._rows = {m: [] for m in rows}
            self._labels = {m: [] for m in rows} if label_codes is not None else None
            first = next(iter(rows.values()))
            self._dim, self._where = int(first.shape[1]), first.device
        for m, t in rows.items():
            self._rows[m].append(t)
            if self._labels is not None and label_codes is not None:
                self._labels[m].append(label_codes[m])
        self._groups.append(group_codes)

    def _check_fits(self, rows: Mapping[str, torch.Tensor]) -> None:
        """Raise unless ``rows`` share one dim and one device with each other and with the
        rows given before, and name the modalities given before."""
        if self._modalities is not None and tuple(rows) != self._modalities:
            raise GapscopeError(
                f"update: got {', '.join(rows)}, but earlier updates gave "
                f"{', '.join(self._modalities)}; give the same modalities every time"
            )
        first = next(iter(rows.values()))
        dim = self._dim if self._dim is not None else int(first.shape[1])
        where = self._where if self._where is not None else first.device
        for m, t in rows.items():
            if int(t.shape[1]) != dim:
                raise EmbeddingError(
                    f"{m}: has dim {t.shape[1]}, but other embeddings have dim {dim}; "
                    "every modality lives in one embedding space"
                )
            if t.device != where:
                raise EmbeddingError(
                    f"{m}: is on {t.device}, other embeddings on {where}; "
                    "keep every update on one device"
                )

    # ------------------------------------------------------------------ compute

    def compute(self) -> Report:
        """Analyse every row given since the last :meth:`reset` (of every process, when
        synced) and return the report. The rows stay; call :meth:`reset` to start again.

        Raises:
            GapscopeError: no rows, fewer than two rows a modality, processes that disagree
                on modalities, dims or labels, or bad values (NaN, zero rows: the message
                names the row, counted in rank order).
        """
        data = self._local_data()
        group = self.process_group
        synced = self._synced()
        if synced:
            data = _gather_data(data, group, self.global_groups)
        if data is None:
            raise TooFewRows(
                "GapMetric.compute: no embeddings were given (on any process); call update() first"
            )
        embeddings, groups, labels = data
        # Decided on the gathered rows, so every process decides alike (none is left waiting
        # in the analysis's collectives).
        short = {m: int(t.shape[0]) for m, t in embeddings.items() if t.shape[0] < 2}
        if short:
            m, n = next(iter(short.items()))
            raise TooFewRows(
                f"GapMetric.compute: {m} has {n} row{'s' * (n != 1)} (every process's together); "
                "a report needs at least 2 a modality"
            )
        if synced and self._where is not None:  # back from the gather's device
            embeddings = {m: t.to(self._where) for m, t in embeddings.items()}
        device = self.device
        if device is None:
            device = next(iter(embeddings.values())).device
        source = EmbeddingSet(
            embeddings=embeddings,
            groups=groups,
            labels=labels,
            normalized={m: None for m in embeddings},
            source=self.source,
        )
        if synced and self.share_passes:
            with sharing(process_group_share(group)):
                return analyze(source, device=device, **self.options)
        return analyze(source, device=device, **self.options)

    def _synced(self) -> bool:
        if self.sync is False:
            return False
        import torch.distributed as dist

        ready = dist.is_available() and dist.is_initialized()
        if self.sync and not ready:
            raise GapscopeError(
                "GapMetric(sync=True) needs an initialised torch.distributed process group"
            )
        return bool(ready and dist.get_world_size(self.process_group) > 1)

    def _local_data(self) -> _Data | None:
        """This process's rows, group codes and labels, ready to analyse or gather."""
        if self._modalities is None:
            return None
        embeddings = {m: _concat(self._rows[m]) for m in self._modalities}
        groups = self._group_codes()
        labels = {}
        if self._labels is not None:
            labels = {
                m: np.concatenate([t.cpu().numpy().astype(np.int64) for t in self._labels[m]])
                for m in self._modalities
            }
        return embeddings, groups, labels

    def _group_codes(self) -> dict[str, np.ndarray]:
        """Each modality's int64 group codes over every update. Local codes are renumbered
        update by update (0, 1, ... in sorted order of the update's codes, after the codes of
        the updates before), so no two updates share a code."""
        assert self._modalities is not None
        out: dict[str, list[np.ndarray]] = {m: [] for m in self._modalities}
        offset = 0
        for u, given in enumerate(self._groups):
            counts = {m: int(self._rows[m][u].shape[0]) for m in self._modalities}
            if given is None:
                codes = {m: np.arange(counts[m], dtype=np.int64) for m in self._modalities}
            else:
                codes = {m: given[m].cpu().numpy().astype(np.int64) for m in self._modalities}
            if not self.global_groups:
                codes, n_codes = _renumber(codes)
                codes = {m: c + offset for m, c in codes.items()}
                offset += n_codes
            for m in self._modalities:
                out[m].append(codes[m])
        return {m: np.concatenate(parts) for m, parts in out.items()}


#: Embeddings, group codes and labels by modality.
_Data = tuple[dict[str, torch.Tensor], dict[str, np.ndarray], dict[str, np.ndarray]]


def _checked_rows(value: Any, modality: str) -> torch.Tensor:
    """``value`` as a detached tensor (not copied), checked by its shape and dtype alone."""
    tensor = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if tensor.ndim != 2 or tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise EmbeddingError(
            f"{modality}: expected embeddings of shape (rows, dim), got {tuple(tensor.shape)}"
        )
    if tensor.dtype not in _DTYPE_CODES:
        raise EmbeddingError(
            f"{modality}: expected float32, float16 or bfloat16 embeddings, got {tensor.dtype}"
        )
    return tensor


def _concat(parts: list[torch.Tensor]) -> torch.Tensor:
    """The parts one after the other, in the widest of their dtypes (exact for floats)."""
    dtype = functools.reduce(torch.promote_types, (p.dtype for p in parts))
    return torch.cat([p.to(dtype) for p in parts])


def _codes(value: Any, counts: Mapping[str, int], what: str) -> dict[str, torch.Tensor]:
    """Integer codes a modality from one vector for all or a mapping (checked, not copied)."""
    if isinstance(value, Mapping):
        if set(value) != set(counts):
            raise GapscopeError(
                f"update: {what} names {', '.join(sorted(map(str, value)))}; "
                f"expected one vector for each of {', '.join(counts)}"
            )
        vectors = {m: value[m] for m in counts}
    else:
        if len(set(counts.values())) > 1:
            raise GapscopeError(
                f"update: one {what} vector for every modality needs equal row counts; "
                f"give a mapping {{modality: vector}} instead"
            )
        vectors = {m: value for m in counts}
    out = {}
    for m, v in vectors.items():
        t = v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        if t.ndim != 1 or int(t.shape[0]) != counts[m]:
            raise GapscopeError(
                f"update: {m} {what}: expected shape ({counts[m]},), got {tuple(t.shape)}"
            )
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise GapscopeError(f"update: {m} {what}: expected integer codes, got {t.dtype}")
        out[m] = t
    return out


def _renumber(codes: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Codes of one update as 0, 1, ... in sorted order of their values, shared across the
    modalities; and how many there are."""
    values, inverse = np.unique(np.concatenate(list(codes.values())), return_inverse=True)
    out, start = {}, 0
    for m, c in codes.items():
        out[m] = inverse[start : start + c.size].astype(np.int64)
        start += c.size
    return out, int(values.size)


# ---------------------------------------------------------------------- the gather


def _gather_data(data: _Data | None, group: Any, global_groups: bool) -> _Data | None:
    """Every process's rows, codes and labels, in rank order, on every process.

    A header (modalities, rows, dim, dtype and labels of each; the local group count) goes
    first, so that every process makes the same decisions, and raises the same error, from
    the same information. Every all-gather starts with the status exchange of
    :meth:`~gapscope.engine.distributed.Share.raise_together`, inside
    :func:`~gapscope.engine.distributed.sharing`: a process that fails on its own (its
    header, memory for its padded rows) makes every process raise, none waits for it."""
    share = process_group_share(group)
    with sharing(share):
        return _gather_shared(data, share, global_groups)


def _gather_shared(data: _Data | None, share: Share, global_groups: bool) -> _Data | None:
    import torch.distributed as dist

    group = share.group
    comm = _comm_device(group, data)
    header = torch.as_tensor(_header(data), dtype=torch.int64, device=comm)
    headers = [torch.empty_like(header) for _ in range(share.world)]
    share.raise_together(None)
    dist.all_gather(headers, header, group=group)
    table = torch.stack(headers).cpu().numpy()
    plan = _plan(table)
    if plan is None:
        return None
    embeddings, groups, labels = data if data is not None else ({}, {}, {})
    offsets = np.concatenate([[0], np.cumsum(table[:, -1])])
    out_rows: dict[str, torch.Tensor] = {}
    out_groups: dict[str, np.ndarray] = {}
    out_labels: dict[str, np.ndarray] = {}
    for m, (counts, dim, dtype, has_labels) in plan.items():
        mine = embeddings.get(m)
        local = (
            mine.to(device=comm, dtype=dtype).contiguous()
            if mine is not None
            else torch.empty((0, dim), dtype=dtype, device=comm)
        )
        gathered = _gather_rows(local.view(torch.uint8), counts, share, comm)
        out_rows[m] = gathered.view(dtype)
        codes = groups.get(m, np.empty(0, dtype=np.int64))
        if not global_groups:
            codes = codes + offsets[share.rank]
        out_groups[m] = _gather_codes(codes, counts, share, comm)
        if has_labels:
            out_labels[m] = _gather_codes(
                labels.get(m, np.empty(0, dtype=np.int64)), counts, share, comm
            )
    return out_rows, out_groups, out_labels


def _header(data: _Data | None) -> list[int]:
    fields = []
    for m in MODALITIES:
        rows = data[0].get(m) if data is not None else None
        if rows is None:
            fields += [0] * _FIELDS
            continue
        has_labels = int(data is not None and m in data[2])
        code = _DTYPE_CODES.get(rows.dtype)
        if code is None:
            raise EmbeddingError(f"{m}: cannot gather {rows.dtype} embeddings")
        fields += [1, int(rows.shape[0]), int(rows.shape[1]), code, has_labels]
    n_codes = 0
    if data is not None:
        n_codes = max((int(c.max()) + 1 for c in data[1].values() if c.size), default=0)
    return [*fields, n_codes]


def _plan(table: np.ndarray) -> dict[str, tuple[list[int], int, torch.dtype, bool]] | None:
    """From every process's header: each modality's rows by rank, dim, dtype to gather in and
    whether it has labels; ``None`` when no process has rows. Raises (on every process alike)
    when the processes with rows disagree."""
    holders = [r for r in range(table.shape[0]) if table[r, :-1].any()]
    if not holders:
        return None
    plan = {}
    for i, m in enumerate(MODALITIES):
        block = table[:, i * _FIELDS : (i + 1) * _FIELDS]
        present = {int(block[r, 0]) for r in holders}
        if present == {0}:
            continue
        dims = {int(block[r, 2]) for r in holders}
        has_labels = {int(block[r, 4]) for r in holders}
        if len(present) > 1 or len(dims) > 1 or len(has_labels) > 1:
            what = "modalities" if len(present) > 1 else "dims" if len(dims) > 1 else "labels"
            raise GapscopeError(
                f"GapMetric.compute: the processes disagree on the {what} of {m} "
                f"({_by_rank(table, holders, i)}); every process must update alike"
            )
        dtype = functools.reduce(
            torch.promote_types, (_CODE_DTYPES[int(block[r, 3])] for r in holders)
        )
        plan[m] = ([int(n) for n in block[:, 1]], dims.pop(), dtype, has_labels.pop() == 1)
    return plan


def _by_rank(table: np.ndarray, holders: list[int], i: int) -> str:
    block = table[:, i * _FIELDS : (i + 1) * _FIELDS]
    described = []
    for r in holders:
        if not block[r, 0]:
            described.append(f"rank {r}: none")
        else:
            labels = "labels" if block[r, 4] else "no labels"
            described.append(f"rank {r}: dim {block[r, 2]}, {labels}")
    return "; ".join(described)


def _comm_device(group: Any, data: _Data | None) -> torch.device:
    """Where the gather's tensors live: the GPU for NCCL, else the host."""
    import torch.distributed as dist

    backend = str(dist.get_backend(group))
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if "nccl" in backend and data is not None:
        where = next(iter(data[0].values())).device
        if where.type == "cuda":
            return where
    return torch.device("cpu")


def _gather_rows(
    local: torch.Tensor, counts: list[int], share: Share, device: torch.device
) -> torch.Tensor:
    """The ``(counts[rank], width)`` tensors of every rank, stacked in rank order: padded to
    the largest count for ``all_gather``, then cut back. The buffers are made before the
    status exchange, so a process short of memory for them fails alone and is heard."""
    import torch.distributed as dist

    top = max(counts)
    padded = torch.zeros((top, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in counts]
    share.raise_together(None)
    dist.all_gather(parts, padded, group=share.group)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


def _gather_codes(
    codes: np.ndarray, counts: list[int], share: Share, device: torch.device
) -> np.ndarray:
    local = torch.as_tensor(np.ascontiguousarray(codes, dtype=np.int64)).to(device)
    return _gather_rows(local, counts, share, device).cpu().numpy()


def rows_from_outputs(outputs: Any) -> dict[str, Any] | None:
    """The keyword arguments of :meth:`GapMetric.update` found in a model's or a step's
    outputs, or ``None`` when they hold fewer than two modalities.

    Embeddings are read from the keys (or attributes) ``<modality>``, ``<modality>_embeds``
    (transformers' CLIP, SigLIP and CLAP outputs) or ``<modality>_features`` (open_clip's),
    for image, text and audio; ``groups`` and ``labels`` from the keys of a mapping of that
    name.

    >>> import torch
    >>> found = rows_from_outputs({"loss": 0.3, "image_embeds": torch.ones(2, 3),
    ...                            "text_embeds": torch.ones(2, 3)})
    >>> sorted(found)
    ['image', 'text']
    >>> rows_from_outputs({"loss": 0.3}) is None
    True
    """
    found: dict[str, Any] = {}
    for m in MODALITIES:
        for name in (m, f"{m}_embeds", f"{m}_features"):
            value = _field(outputs, name)
            if isinstance(value, torch.Tensor):
                found[m] = value
                break
    if len(found) < 2:
        return None
    if isinstance(outputs, Mapping):
        for extra in ("groups", "labels"):
            if outputs.get(extra) is not None:
                found[extra] = outputs[extra]
    return found


def check_every_n_steps(every_n_steps: Any) -> int | None:
    """A callback's logging interval: a positive integer, or ``None`` for never.

    >>> check_every_n_steps(None), check_every_n_steps(50)
    (None, 50)
    """
    if every_n_steps is not None and (
        isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1
    ):
        raise GapscopeError(
            f"every_n_steps: expected a positive integer or None, got {every_n_steps!r}"
        )
    return every_n_steps


def flat_values(report: Report, prefix: str = "") -> dict[str, float]:
    """The report's flat metrics (:meth:`~gapscope.report.model.Report.to_flat`) as floats,
    each key after ``prefix``: what the callbacks hand to a tracker."""
    return {f"{prefix}{key}": float(value) for key, value in report.to_flat().items()}


def _field(outputs: Any, name: str) -> Any:
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)
