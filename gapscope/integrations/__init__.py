"""gapscope inside a training loop: a metric object and the callbacks that log it.

- :mod:`gapscope.integrations.metric`: :class:`~gapscope.integrations.metric.GapMetric`
  (``update``, ``compute`` -> :class:`~gapscope.report.model.Report`, ``reset``; the
  ``fast`` and ``full`` presets; gathers across ``torch.distributed`` processes).
- :mod:`gapscope.integrations.lightning`: a Lightning ``Callback`` (the ``lightning`` extra).
- :mod:`gapscope.integrations.huggingface`: a ``transformers.TrainerCallback``.
- :mod:`gapscope.integrations.open_clip`: a hook for open_clip's training script
  (``open_clip_train``).

Nothing here is imported by ``import gapscope``; ``from gapscope import GapMetric`` imports the
metric on first use.
"""
