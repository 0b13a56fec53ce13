"""A ``transformers.TrainerCallback`` that logs gapscope's metrics while a model trains.

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val)
    GapscopeTrainerCallback.attach(trainer, every_n_steps=100)
    trainer.train()

**Where the embeddings come from.** The Trainer hands a callback neither the batches nor the
model's outputs, so the callback reads the outputs with a forward hook on ``trainer.model``:
they must carry ``image_embeds``/``text_embeds``/``audio_embeds`` (as transformers'
``CLIPModel``, ``SiglipModel`` and ``ClapModel`` outputs do; a custom model returns them in
its output dict beside ``loss``; ``<modality>_features`` and optional ``groups``/``labels``
keys work too), or ``outputs_to_rows=fn(outputs)`` maps them to
``{"image": ..., "text": ..., ...}``. ``CLIPModel`` and ``SiglipModel`` L2-normalise their
``*_embeds``: every metric but MIR is the same for normalised rows, while MIR, which scales
the raw outputs, then differs from the MIR of ``gapscope extract``'s raw rows of the same
weights (map the projections of the pooled outputs with ``outputs_to_rows`` to log it on raw
rows). Forwards in training mode feed the training logs,
forwards in evaluation mode (``trainer.evaluate()``) the evaluation logs; forwards of
``trainer.predict()`` are dropped.

**What is logged.** Every ``every_n_steps`` optimizer steps, the ``train_preset`` report
(``fast``) of that step's batch (every micro-batch of the step, on every process) as
``<prefix><flat key>``; after each evaluation, the ``eval_preset`` report (``full``) of every
evaluation batch of every process as ``<metric_key_prefix>_<prefix><flat key>`` (``eval_...``,
which the Trainer's TensorBoard, W&B and MLflow integrations show under ``eval/``). The flat
keys are :meth:`~gapscope.report.model.Report.to_flat`'s. Values go through
``trainer.log``, so they land in ``trainer.state.log_history`` and reach every ``report_to``
integration; the evaluation values are also added to the metrics ``trainer.evaluate()``
returns (so ``metric_for_best_model`` can name one). Under DDP the reports gather every
process's rows (:class:`~gapscope.integrations.metric.GapMetric`); evaluation samplers that
pad the last batch repeat rows, and those repeats are analysed too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

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
    from transformers import TrainerCallback
else:
    try:
        from transformers import TrainerCallback
    except ImportError:  # importable without transformers; making a callback asks for it
        TrainerCallback = object

__all__ = ["GapscopeTrainerCallback"]

#: ``outputs_to_rows(outputs)``: the update() arguments in one forward's outputs.
OutputsToRows = Callable[[Any], Mapping[str, Any] | None]


class GapscopeTrainerCallback(TrainerCallback):
    """Log gapscope's metrics every N training steps and after each evaluation.

    Make one with :meth:`attach`, which also registers it with the trainer.

    Args:
        trainer: the ``transformers.Trainer`` whose model's outputs are read and whose
            ``log`` receives the values.
        every_n_steps: log the training metrics every this many optimizer steps (``None``:
            never).
        evaluation: log the metrics of each evaluation.
        outputs_to_rows: ``fn(outputs) -> {"image": ..., "text": ...}`` for outputs that do
            not carry ``<modality>_embeds``.
        train_preset: the preset of the training logs (``fast``).
        eval_preset: the preset of the evaluation logs (``full``).
        prefix: put before every logged key.
        **options: options of :class:`~gapscope.integrations.metric.GapMetric`.

    Raises:
        MissingDependencyError: transformers is not installed.
        GapscopeError: a bad preset or option.
    """

    def __init__(
        self,
        trainer: Any,
        *,
        every_n_steps: int | None = 50,
        evaluation: bool = True,
        outputs_to_rows: OutputsToRows | None = None,
        train_preset: str = "fast",
        eval_preset: str = "full",
        prefix: str = "gapscope/",
        **options: Any,
    ) -> None:
        for module in ("transformers", "accelerate"):  # the Trainer needs both
            require(module, "gapscope's Trainer callback", extra="huggingface")
        self.trainer = trainer
        self.every_n_steps = check_every_n_steps(every_n_steps)
        self.evaluation = evaluation
        self.outputs_to_rows = outputs_to_rows or rows_from_outputs
        self.prefix = prefix
        self.train_metric = GapMetric(train_preset, **options)
        self.eval_metric = GapMetric(eval_preset, **options)
        self.last: dict[str, dict[str, float]] = {}
        self._logging = False
        self._hook = trainer.model.register_forward_hook(self._capture)

    @classmethod
    def attach(cls, trainer: Any, **kwargs: Any) -> GapscopeTrainerCallback:
        """Make a callback for ``trainer`` (arguments as the class) and add it to the
        trainer's callbacks; returns it."""
        callback = cls(trainer, **kwargs)
        trainer.add_callback(callback)
        return callback

    def detach(self) -> None:
        """Stop: remove the forward hook and take the callback off the trainer."""
        self._hook.remove()
        self.trainer.remove_callback(self)

    # ------------------------------------------------------------------ the forward hook

    def _capture(self, module: Any, args: Any, outputs: Any) -> None:
        if module.training:
            if not self._logging:
                return
            metric = self.train_metric
        elif self.evaluation:
            metric = self.eval_metric
        else:
            return
        rows = self.outputs_to_rows(outputs)
        if rows is None:
            raise GapscopeError(
                "GapscopeTrainerCallback: the model's outputs carry no embeddings of two "
                "modalities; return image_embeds and text_embeds (or audio_embeds) from its "
                "forward, or give outputs_to_rows=fn(outputs)"
            )
        metric.update(**rows)

    # ------------------------------------------------------------------ Trainer events

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = int(state.global_step) + 1  # the optimizer step about to run
        self._logging = self.every_n_steps is not None and step % self.every_n_steps == 0
        self.train_metric.reset()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._logging:
            return
        self._logging = False
        report = compute_or_warn(self.train_metric, "train", state.is_world_process_zero)
        self.train_metric.reset()
        if report is not None:
            self._log("train", report, "")

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> None:
        if not self.evaluation:
            return
        split = _split_of(metrics)
        report = compute_or_warn(self.eval_metric, split, state.is_world_process_zero)
        self.eval_metric.reset()
        if report is None:
            return
        values = self._log(split, report, f"{split}_")
        if isinstance(metrics, dict):
            metrics.update(values)

    def on_predict(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> None:
        self.eval_metric.reset()

    def _log(self, stage: str, report: Report, before: str) -> dict[str, float]:
        values = flat_values(report, f"{before}{self.prefix}")
        self.last[stage] = values
        self.trainer.log(dict(values))
        return values


def _split_of(metrics: Any) -> str:
    """The ``metric_key_prefix`` of an evaluation's metrics (``eval``, ``eval_<name>``): the
    Trainer adds ``<prefix>_runtime`` to every evaluation's metrics."""
    if isinstance(metrics, Mapping):
        for key in metrics:
            if isinstance(key, str) and key.endswith("_runtime"):
                return key[: -len("_runtime")]
    return "eval"
