"""A hook for open_clip's training script (``open_clip_train``): gapscope's report of the
validation set at every evaluation.

A launcher of a few lines gives the script an ``evaluate`` that also runs gapscope, and is
started like the script itself (``torchrun ... train_with_gapscope.py --train-data ...
--val-data ... --val-frequency 1``, with the script's own arguments)::

    # train_with_gapscope.py
    import sys

    from open_clip_train import main as training

    from gapscope.integrations.open_clip import with_gapscope

    training.evaluate = with_gapscope(training.evaluate)

    if __name__ == "__main__":
        training.main(sys.argv[1:])

open_clip evaluates on the first process only, over the whole validation set
(``--val-data``), with the unwrapped model. While its ``evaluate`` runs, a forward hook on that
model reads the ``image_features`` and ``text_features`` of each validation forward, so no
second pass over the data is made (open_clip's forward returns them L2-normalised: every
metric but MIR is the same as on raw rows, while MIR, which scales the raw outputs, differs
from the MIR of ``gapscope extract``'s raw rows of the same checkpoint); then the ``preset``
report (``full``) of those rows is logged where open_clip logs its own validation metrics, as
``val/gapscope/<flat key>``
(:meth:`~gapscope.report.model.Report.to_flat`): to its TensorBoard writer at the epoch
(``--report-to tensorboard``), to W&B at open_clip's step (``--report-to wandb``), and to its
log. With ``--save-logs`` (the default) the whole report is also written as
``<logs>/<name>/checkpoints/gapscope_epoch_<N>.json``, which ``gapscope check`` and
``gapscope diff`` read. The returned metrics are open_clip's with gapscope's added. An
evaluation without validation forwards (other processes, or an epoch that
``--val-frequency`` skips) adds nothing.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gapscope.data.atomic import atomic_write_text
from gapscope.integrations.metric import (
    GapMetric,
    compute_or_warn,
    flat_values,
    rows_from_outputs,
)

__all__ = ["with_gapscope"]

log = logging.getLogger(__name__)


def with_gapscope(
    evaluate: Callable[..., dict[str, Any]],
    *,
    preset: str = "full",
    prefix: str = "val/gapscope/",
    **options: Any,
) -> Callable[..., dict[str, Any]]:
    """``evaluate`` (``open_clip_train.train.evaluate``, or a function with its signature
    ``evaluate(model, data, epoch, args, tb_writer=None, tokenizer=None)``) that also logs
    gapscope's report of the validation forwards it makes.

    Args:
        evaluate: the function to wrap.
        preset: the report's preset (``full``, or ``fast``).
        prefix: put before every logged key.
        **options: options of :class:`~gapscope.integrations.metric.GapMetric` (``k``,
            ``device``, ``sample``, ...); it never gathers, as open_clip evaluates on one
            process.

    Returns:
        The wrapped function; its result is ``evaluate``'s metrics plus gapscope's
        (``gapscope/<flat key>``).

    Raises:
        GapscopeError: a bad preset or option (here, not at the first evaluation).
    """
    # One process evaluates: never gather. The options are checked now.
    options = dict(dict(source="open_clip validation"), **options)
    options.update(sync=False)
    GapMetric(preset, **options)

    @functools.wraps(evaluate)
    def evaluate_with_gapscope(
        model: Any,
        data: Any,
        epoch: int,
        args: Any,
        tb_writer: Any = None,
        tokenizer: Any = None,
    ) -> dict[str, Any]:
        metric = GapMetric(preset, **options)
        inner = getattr(model, "module", model)  # evaluate unwraps DDP itself

        def capture(module: Any, inputs: Any, outputs: Any) -> None:
            rows = None if module.training else rows_from_outputs(outputs)
            if rows is not None:
                metric.update(**rows)

        hook = inner.register_forward_hook(capture)
        try:
            metrics = evaluate(model, data, epoch, args, tb_writer=tb_writer, tokenizer=tokenizer)
        finally:
            hook.remove()
        if not metric.modalities:
            return metrics
        report = compute_or_warn(metric, "val")
        if report is None:
            return metrics
        values = flat_values(report, prefix)
        _log(values, report.to_json(), data, epoch, args, tb_writer)
        plain = flat_values(report, "gapscope/")
        return {**(metrics or {}), **plain}

    return evaluate_with_gapscope


def _log(
    values: dict[str, float], report_json: str, data: Any, epoch: int, args: Any, tb_writer: Any
) -> None:
    """Log as open_clip's ``evaluate`` logs its own metrics."""
    log.info("Eval Epoch: %s gapscope: %d metrics as %s...", epoch, len(values), _common(values))
    if getattr(args, "save_logs", False):
        if tb_writer is not None:
            for name, value in values.items():
                tb_writer.add_scalar(name, value, epoch)
        folder = getattr(args, "checkpoint_path", None)
        if folder:
            atomic_write_text(Path(folder) / f"gapscope_epoch_{epoch}.json", report_json)
    if getattr(args, "wandb", False):
        import wandb

        step = None
        if "train" in data:
            batches = data["train"].dataloader.num_batches // args.accum_freq
            step = batches * epoch
        wandb.log({**values, "epoch": epoch}, step=step)


def _common(values: dict[str, float]) -> str:
    return os.path.commonprefix(list(values)) if values else ""
