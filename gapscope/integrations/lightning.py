"""A Lightning callback that logs gapscope's metrics while a model trains.

>>> from gapscope.integrations.lightning import GapscopeCallback
>>> callback = GapscopeCallback(every_n_steps=100)  # Trainer(callbacks=[callback], ...)

**Where the embeddings come from.** By default, from what the LightningModule's steps return:
``training_step`` and ``validation_step`` return a dict such as ``{"loss": loss,
"image_embeds": image, "text_embeds": text}`` (also ``<modality>_features`` or plain
``image``/``text``/``audio``, and optional ``groups`` and ``labels``: see
:meth:`~gapscope.integrations.metric.GapMetric.update`). Or give ``embed=fn(pl_module, batch)``
returning such a dict: it is called under ``torch.no_grad()``, only for the batches analysed
(at a logging step the model has already taken that step's optimizer step).

**What is logged.** Every ``every_n_steps`` optimizer steps, the ``train_preset`` report
(``fast``) of that step's batch (every micro-batch of the step, on every process) as
``<prefix>train/<flat key>``; after each validation epoch (not the sanity check), the
``val_preset`` report (``full``) of every validation batch of every process as
``<prefix>val/<flat key>`` (``.../dataloader_idx_<i>/...`` with several validation loaders).
The flat keys are :meth:`~gapscope.report.model.Report.to_flat`'s. Values go to each of
``trainer.loggers`` with ``log_metrics(values, step=trainer.global_step)`` on global rank
zero: straight to the loggers, because ``self.log`` in a step reaches them only on the
trainer's own ``log_every_n_steps``. ``callback.last`` keeps the latest values by stage
(``"train"``, ``"val"``) on every process.

Under DDP every process runs the callback; the reports gather every process's rows (see
:class:`~gapscope.integrations.metric.GapMetric`), so every process must reach the same
logging steps and validation ends, as Lightning's loops do. Lightning's distributed sampler
pads a validation set whose size the process count does not divide by repeating rows, and
those repeats are analysed too (37 rows on 2 processes: 38 pairs); a size the process count
divides has none.

A report with too few rows (an empty validation loader, a step's batch of one row) is not
logged: a ``UserWarning`` says which (on global rank zero), and training goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from gapscope.errors import GapscopeError
from gapscope.extras import require
from gapscope.integrations.metric import (
    GapMetric,
    check_every_n_steps,
    compute_or_warn,
    flat_values,
    rows_from_outputs,
)
from gapscope.report.model import Report

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback
else:
    try:
        from lightning.pytorch.callbacks import Callback
    except ImportError:  # importable without lightning; making a callback asks for the extra
        Callback = object

__all__ = ["GapscopeCallback"]

#: ``embed(pl_module, batch)``: the update() arguments of one batch.
Embed = Callable[[Any, Any], Mapping[str, Any]]


class GapscopeCallback(Callback):
    """Log gapscope's metrics every N training steps and after each validation epoch.

    Args:
        every_n_steps: log the training metrics every this many optimizer steps (``None``:
            never).
        validation: log the metrics of each validation epoch.
        embed: ``fn(pl_module, batch) -> {"image": ..., "text": ..., ...}``; ``None``: read
            the embeddings from what the steps return.
        train_preset: the preset of the training logs (``fast``: sampled retrieval).
        val_preset: the preset of the validation logs (``full``: the whole report).
        prefix: put before every logged key.
        **options: options of :class:`~gapscope.integrations.metric.GapMetric` (``k``,
            ``seed``, ``sample``, ``device``, ``block_size``, ``global_groups``, ...).

    Raises:
        MissingDependencyError: lightning is not installed.
        GapscopeError: a bad preset or option.
    """

    def __init__(
        self,
        *,
        every_n_steps: int | None = 50,
        validation: bool = True,
        embed: Embed | None = None,
        train_preset: str = "fast",
        val_preset: str = "full",
        prefix: str = "gapscope/",
        **options: Any,
    ) -> None:
        require("lightning", "gapscope's Lightning callback")
        super().__init__()
        self.every_n_steps = check_every_n_steps(every_n_steps)
        self.validation = validation
        self.embed = embed
        self.prefix = prefix
        self.val_preset = val_preset
        self.options = options
        self.train_metric = GapMetric(train_preset, **options)
        # Checks the validation options now too; one metric a validation dataloader.
        self.val_metrics: dict[int, GapMetric] = {0: GapMetric(val_preset, **options)}
        self.last: dict[str, dict[str, float]] = {}
        self._step = -1
        self._logging = False

    # ------------------------------------------------------------------ training

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        step = int(trainer.global_step) + 1  # the optimizer step this batch belongs to
        if step != self._step:
            self._step = step
            self._logging = self.every_n_steps is not None and step % self.every_n_steps == 0
            self.train_metric.reset()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._logging:
            return
        self.train_metric.update(**self._rows(pl_module, outputs, batch, "training_step"))
        if int(trainer.global_step) == self._step:  # the step's optimizer step is done
            self._logging = False
            report = compute_or_warn(self.train_metric, "train", trainer.is_global_zero)
            self.train_metric.reset()
            if report is not None:
                self._log(trainer, "train", report)

    # ------------------------------------------------------------------ validation

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        for metric in self.val_metrics.values():
            metric.reset()

    def on_validation_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.validation or trainer.sanity_checking:
            return
        self._val_metric(dataloader_idx).update(
            **self._rows(pl_module, outputs, batch, "validation_step")
        )

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.validation or trainer.sanity_checking:
            return
        # Every loader's metric on every process, rows or not: compute() is collective.
        loaders = max(1, len(getattr(trainer, "num_val_batches", None) or [0]))
        for idx in range(loaders):
            metric = self._val_metric(idx)
            stage = "val" if loaders == 1 else f"val/dataloader_idx_{idx}"
            report = compute_or_warn(metric, stage, trainer.is_global_zero)
            metric.reset()
            if report is not None:
                self._log(trainer, stage, report)

    # ------------------------------------------------------------------ helpers

    def _val_metric(self, idx: int) -> GapMetric:
        if idx not in self.val_metrics:
            self.val_metrics[idx] = GapMetric(self.val_preset, **self.options)
        return self.val_metrics[idx]

    def _rows(self, pl_module: Any, outputs: Any, batch: Any, step: str) -> dict[str, Any]:
        if self.embed is not None:
            with torch.no_grad():
                given = self.embed(pl_module, batch)
            rows = rows_from_outputs(given)
            if rows is None:
                raise GapscopeError(
                    "GapscopeCallback: embed() must return the embeddings of two or more "
                    'modalities, e.g. {"image": ..., "text": ...}'
                )
            return rows
        rows = rows_from_outputs(outputs)
        if rows is None:
            raise GapscopeError(
                f"GapscopeCallback: {step} returned no embeddings of two modalities; return "
                '{"loss": loss, "image_embeds": ..., "text_embeds": ...} from it, or give '
                "GapscopeCallback(embed=fn(pl_module, batch))"
            )
        return rows

    def _log(self, trainer: Any, stage: str, report: Report) -> None:
        values = flat_values(report, f"{self.prefix}{stage}/")
        self.last[stage] = values
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=int(trainer.global_step))
