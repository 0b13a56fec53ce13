"""Log reports to the experiment trackers people already use: MLflow, TensorBoard and
Weights & Biases.

Each report is one step. Its metrics (:meth:`Report.to_flat`, in the spelling every tracker
takes: ``image-text/recall/image_to_text/R5``) are logged at its step, and its run fields
beside them under the names of the flat outputs (``checkpoint``, ``tag.<key>``): as run tags
in MLflow and config entries in W&B (both keep one value a run, the last report's), and as
text summaries at the step in TensorBoard. A tag or config value of a run of the caller's
(not gapscope's) under one of those names is replaced with a warning naming both values.
Several reports are logged in the order of their steps: each report's recorded step
(``analyze --step``), or their order when none records one.

A tracker is named by a spec (what ``gapscope log`` builds from its options) or given as an
object:

- ``"mlflow:<tracking URI>"`` (``mlflow:sqlite:///mlflow.db``, ``mlflow:http://host:5000``;
  ``"mlflow"`` alone: MLflow's own default): a new run in the experiment ``Default`` (or
  ``MLFLOW_EXPERIMENT_NAME``); :class:`MlflowTracker` for another experiment, a run name or
  an existing run; an MLflow run (``mlflow.start_run()``), or the ``mlflow`` module for its
  active run.
- ``"tensorboard:<folder>"``: a new event file in the folder; :class:`TensorBoardTracker`; a
  ``SummaryWriter`` (torch's or tensorboardX's). TensorBoard keeps scalars as float32.
- ``"wandb:<project>"`` or ``"wandb"``: a new W&B run (with ``WANDB_MODE=offline`` a local run
  folder, for ``wandb sync``); :class:`WandbTracker`; a W&B run (``wandb.init()``). W&B drops
  values logged at a step below the run's current one, so that is refused here.

The packages are optional extras (``gapscope[mlflow]``, ``[tensorboard]``, ``[wandb]``, or
``[trackers]`` for all three), imported only when a tracker is opened; a missing one is a
:class:`~gapscope.errors.MissingDependencyError` naming the extra. What a tracker refuses (a
bad tracking URI, an unknown run, no W&B login) is a :class:`~gapscope.errors.GapscopeError`
with the tracker's reason.

Example:
    >>> import tempfile
    >>> from gapscope.report import Report
    >>> report = Report(input={}, params={}, pairs={"image-text": {"gap": 0.61}},
    ...                 run={"step": 1000, "tags": {}, "checkpoint": "ViT-B-32@openai"})
    >>> folder = tempfile.mkdtemp()
    >>> print(report.log_to(f"tensorboard:{folder}"))
    logged 1 report (1 value) to TensorBoard folder ... at step 1000
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from gapscope.errors import GapscopeError
from gapscope.extras import require
from gapscope.report.run import check_step

if TYPE_CHECKING:
    from gapscope.report.model import Report

__all__ = [
    "TRACKERS",
    "Logged",
    "MlflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "WandbTracker",
    "as_tracker",
    "log_reports",
    "open_tracker",
    "resolve_steps",
]

#: The trackers a spec may name: ``<name>:<where>``.
TRACKERS = ("mlflow", "tensorboard", "wandb")
# MLflow's log_batch takes at most 1000 metrics and 100 tags a request.
_MLFLOW_METRICS_A_BATCH = 1000
_MLFLOW_TAGS_A_BATCH = 100
# MLflow URI schemes of database stores, which need SQLAlchemy and Alembic.
_MLFLOW_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
_MLFLOW_DEFAULT_EXPERIMENT = "Default"
_SPEC_HELP = (
    "give 'mlflow:<tracking URI>', 'tensorboard:<folder>' or 'wandb:<project>' (or 'wandb'), "
    "a gapscope Tracker, an MLflow run, a TensorBoard SummaryWriter or a W&B run"
)


@dataclass(frozen=True)
class Logged:
    """What :func:`log_reports` logged.

    Attributes:
        tracker: ``"MLflow"``, ``"TensorBoard"`` or ``"W&B"``.
        where: the run or folder, in words (``MLflow run 3f2a... of experiment Default in
            sqlite:///mlflow.db``).
        steps: the steps, in the order they were logged.
        values: the metric values logged, over every step.
    """

    tracker: str
    where: str
    steps: tuple[int, ...]
    values: int

    def __str__(self) -> str:
        reports = f"{len(self.steps)} report{'s' if len(self.steps) != 1 else ''}"
        values = f"{self.values} value{'s' if self.values != 1 else ''}"
        steps = ", ".join(str(s) for s in self.steps)
        label = "step" if len(self.steps) == 1 else "steps"
        return f"logged {reports} ({values}) to {self.where} at {label} {steps}"


class Tracker(ABC):
    """Where reports are logged: one run of one tracker.

    A tracker you make is yours to close (``with`` closes it, as failed on an exception);
    :func:`log_reports` closes the ones it makes from a spec or a tracker's object.
    """

    kind: ClassVar[str] = "tracker"

    @abstractmethod
    def log(self, metrics: Mapping[str, float], step: int, fields: Mapping[str, str]) -> None:
        """Log ``metrics`` (flat key -> number) at ``step``, with the run ``fields``
        (``checkpoint``, ``tag.<key>`` -> string)."""

    def close(self, failed: bool = False) -> None:  # noqa: B027 - optional, nothing by default
        """Finish what this tracker started (a run it created, a file it opened); ``failed``
        marks the run as failed where the tracker has such a state."""

    @property
    def where(self) -> str:
        """The run or folder the values go to, in words."""
        return self.kind

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)


class MlflowTracker(Tracker):
    """An MLflow run: a new one, or an existing one by its id.

    Metrics are logged with ``log_batch`` at the step, the run fields as run tags.

    Args:
        uri: the tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``, a folder for
            MLflow's file store); None: MLflow's own (``MLFLOW_TRACKING_URI``, or its default).
        experiment: the experiment of a new run (created when missing); default
            ``MLFLOW_EXPERIMENT_NAME``, else ``Default``.
        run_name: the name of a new run.
        run_id: log into this existing run instead of a new one (it is left running).

    Raises:
        MissingDependencyError: mlflow (or, for a database URI, SQLAlchemy or Alembic) is not
            installed.
        GapscopeError: MLflow refused the URI, the experiment or the run id.
    """

    kind = "MLflow"

    def __init__(
        self,
        uri: str | None = None,
        *,
        experiment: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
    ) -> None:
        if run_id is not None and (experiment is not None or run_name is not None):
            raise GapscopeError(
                "an MLflow experiment or run name is for a new run; a run id names an existing one"
            )
        mlflow = require("mlflow", "logging to MLflow")
        target = uri or mlflow.get_tracking_uri() or ""
        scheme = target.split(":", 1)[0].split("+", 1)[0]
        if scheme in _MLFLOW_DATABASES:
            require("sqlalchemy", "an MLflow database store")
            require("alembic", "an MLflow database store")
        if scheme == "sqlite":
            _check_sqlite_store(target)
        if scheme in ("http", "https"):
            _check_reachable(target)
        from mlflow.tracking import MlflowClient

        with _mlflow_errors():
            self._client = MlflowClient(tracking_uri=uri)
            self.uri = str(uri or mlflow.get_tracking_uri())
            if run_id is not None:
                run = self._client.get_run(run_id)
                name = self._client.get_experiment(run.info.experiment_id).name
                self._owned = False
            else:
                name = (
                    experiment
                    or os.environ.get("MLFLOW_EXPERIMENT_NAME")
                    or _MLFLOW_DEFAULT_EXPERIMENT
                )
                found = self._client.get_experiment_by_name(name)
                experiment_id = (
                    found.experiment_id if found else self._client.create_experiment(name)
                )
                run = self._client.create_run(experiment_id, run_name=run_name)
                self._owned = True
        self.run_id: str = run.info.run_id
        self.experiment: str = name
        # Set for a run of the caller's (an MLflow run object or the active run): a tag of
        # its own under a run field's name is replaced with a warning, as in W&B.
        self._callers = False
        # The run fields gapscope has written to this run, over every tracker of it.
        self._set = _MLFLOW_FIELDS_SET.setdefault(self.run_id, {})

    def log(self, metrics: Mapping[str, float], step: int, fields: Mapping[str, str]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        tags = [RunTag(key, value) for key, value in fields.items()]
        with _mlflow_errors():
            if self._callers and fields:
                self._warn_of_replaced(fields)
            for start in range(0, len(tags), _MLFLOW_TAGS_A_BATCH):
                self._client.log_batch(self.run_id, tags=tags[start : start + _MLFLOW_TAGS_A_BATCH])
            for start in range(0, len(entries), _MLFLOW_METRICS_A_BATCH):
                batch = entries[start : start + _MLFLOW_METRICS_A_BATCH]
                self._client.log_batch(self.run_id, metrics=batch)
        self._set.update(fields)

    def _warn_of_replaced(self, fields: Mapping[str, str]) -> None:
        """A run of the caller's may hold a tag of its own under a run field's name
        (``checkpoint``): replaced, as a run's fields are, but said, since it is not ours."""
        tags = self._client.get_run(self.run_id).data.tags
        _warn_of_replaced(f"MLflow run {self.run_id}: its tag", tags, fields, self._set)

    def close(self, failed: bool = False) -> None:
        if self._owned:
            self._owned = False
            with _mlflow_errors():
                self._client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")

    @property
    def where(self) -> str:
        return f"MLflow run {self.run_id} of experiment {self.experiment} in {self.uri}"


class TensorBoardTracker(Tracker):
    """TensorBoard event files: a new one in a folder, or a ``SummaryWriter`` of your own.

    Each step's metrics are scalars, its run fields text summaries (the text plugin).

    Args:
        log_dir: the folder to write a new event file in (created when missing).
        writer: a ``SummaryWriter`` (``torch.utils.tensorboard`` or tensorboardX) to log
            through instead; it is flushed, not closed.

    Raises:
        MissingDependencyError: tensorboard is not installed (a folder needs it).
        GapscopeError: both or neither of ``log_dir`` and ``writer``; ``log_dir`` is a file.
    """

    kind = "TensorBoard"

    def __init__(self, log_dir: str | os.PathLike[str] | None = None, *, writer: Any = None):
        if (log_dir is None) == (writer is None):
            raise GapscopeError("a TensorBoard tracker takes a folder or a writer, one of them")
        self._writer = writer
        self._events: Any = None
        self.folder: Path | None = None
        if log_dir is not None:
            folder = Path(log_dir)
            if folder.exists() and not folder.is_dir():
                raise GapscopeError(f"TensorBoard folder {folder} is a file; give a folder")
            require("tensorboard", "logging to TensorBoard")
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            folder.mkdir(parents=True, exist_ok=True)
            self._events = EventFileWriter(str(folder))
            self.folder = folder

    def log(self, metrics: Mapping[str, float], step: int, fields: Mapping[str, str]) -> None:
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), global_step=step)
            for key, text in fields.items():
                self._writer.add_text(key, text, global_step=step)
            self._writer.flush()
            return
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=key, simple_value=float(v)) for key, v in metrics.items()]
        values += [_text_value(key, text) for key, text in fields.items()]
        self._events.add_event(
            Event(wall_time=time.time(), step=step, summary=Summary(value=values))
        )
        self._events.flush()

    def close(self, failed: bool = False) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        elif self._writer is not None:
            self._writer.flush()

    @property
    def where(self) -> str:
        if self.folder is not None:
            return f"TensorBoard folder {self.folder}"
        logdir = getattr(self._writer, "log_dir", None) or getattr(self._writer, "logdir", None)
        return f"TensorBoard writer of {logdir}" if logdir else "a TensorBoard writer"


def _text_value(tag: str, text: str) -> Any:
    """A TensorBoard text summary (what ``SummaryWriter.add_text`` writes)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.compat.proto.types_pb2 import DT_STRING

    tensor = TensorProto(
        dtype=DT_STRING,
        string_val=[text.encode("utf-8")],
        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
    )
    plugin = SummaryMetadata.PluginData(plugin_name="text")
    return Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin), tensor=tensor)


class WandbTracker(Tracker):
    """A Weights & Biases run: a new one (offline with ``WANDB_MODE=offline``), or yours.

    Metrics are logged with ``run.log(..., step=step)``, the run fields into ``run.config``.

    Args:
        project: the project of a new run (default: W&B's, ``WANDB_PROJECT``).
        run_name: the display name of a new run.
        run_id: resume the run with this id (``resume="allow"``) instead of a new one.
        run: a run of your own (``wandb.init()``) to log into; it is not finished.
        dir: the folder W&B writes its ``wandb/`` folder in (default ``WANDB_DIR``, else the
            working folder).

    Raises:
        MissingDependencyError: wandb is not installed.
        GapscopeError: W&B refused to start the run (no login: set ``WANDB_MODE=offline`` for
            a local run folder, or run ``wandb login``).
    """

    kind = "W&B"

    def __init__(
        self,
        project: str | None = None,
        *,
        run_name: str | None = None,
        run_id: str | None = None,
        run: Any = None,
        dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._owned = run is None
        if run is None:
            wandb = require("wandb", "logging to Weights & Biases")
            # A short evaluation run: no console capture, no system metrics, no banner.
            settings = wandb.Settings(console="off", silent=True, x_disable_stats=True)
            with _wandb_errors():
                run = wandb.init(
                    project=project,
                    name=run_name,
                    id=run_id,
                    resume="allow" if run_id else None,
                    dir=None if dir is None else str(dir),
                    settings=settings,
                    reinit="create_new",
                )
        self._run = run
        # The run fields gapscope has written to this run, over every tracker of it.
        self._set = _WANDB_FIELDS_SET.setdefault(str(run.id), {})

    def log(self, metrics: Mapping[str, float], step: int, fields: Mapping[str, str]) -> None:
        if not self._owned:
            self._warn_of_replaced(fields)
        current = getattr(self._run, "step", None)
        if isinstance(current, int) and step < current:
            raise GapscopeError(
                f"W&B run {self._run.id} is at step {current}, and W&B drops values logged at "
                f"an earlier step ({step}); log at step {current} or later, or to a new run"
            )
        with _wandb_errors():
            if fields:
                self._run.config.update(dict(fields), allow_val_change=True)
                self._set.update(fields)
            self._run.log({key: float(value) for key, value in metrics.items()}, step=step)

    def _warn_of_replaced(self, fields: Mapping[str, str]) -> None:
        """A run of the caller's may hold a config value of its own under a run field's name
        (``checkpoint``): replaced, as a run's fields are, but said, since it is not ours."""
        config = self._run.config
        _warn_of_replaced(f"W&B run {self._run.id}: its config", config, fields, self._set)

    def close(self, failed: bool = False) -> None:
        if self._owned:
            self._owned = False
            with _wandb_errors():
                self._run.finish(exit_code=1 if failed else 0)

    @property
    def where(self) -> str:
        run = self._run
        if getattr(run, "offline", False):
            return f"W&B offline run {run.id} in {Path(run.dir).parent}"
        return f"W&B run {getattr(run, 'path', run.id)}"


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_store(uri: str) -> None:
    """Refuse, before MLflow opens it, an ``sqlite:`` tracking URI that cannot hold a run:
    an in-memory database (gone when the process ends), a file that is not an SQLite
    database, or one that cannot be made where it is named (MLflow would retry for
    minutes, then fail inside SQLAlchemy)."""
    rest = uri.split(":", 1)[1].split("?", 1)[0]  # sqlite:///a.db -> ///a.db
    if not rest.startswith("///") or rest[3:] in ("", ":memory:"):
        raise GapscopeError(
            f"MLflow: {uri!r} is an in-memory database, which keeps nothing once this process "
            "ends; give a file, e.g. sqlite:///mlflow.db"
        )
    path = Path(rest[3:])
    if path.exists():
        try:
            with path.open("rb") as handle:
                head = handle.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise GapscopeError(f"MLflow: {path}: cannot be read ({exc.strerror})") from None
        if head and head != _SQLITE_HEADER:
            raise GapscopeError(f"MLflow: {path} is not an SQLite database")
        return
    try:  # made and removed: the database MLflow makes there next
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        os.unlink(path)
    except OSError as exc:
        raise GapscopeError(
            f"MLflow: cannot make the database {path} ({exc.strerror or exc})"
        ) from None


#: W&B (MLflow) run id -> the run fields gapscope has written there, in this process: a
#: later log into the same run replaces them without a warning.
_WANDB_FIELDS_SET: dict[str, dict[str, str]] = {}
_MLFLOW_FIELDS_SET: dict[str, dict[str, str]] = {}

#: Seconds to wait for a tracking server to accept a connection.
_CONNECT_SECONDS = 10.0


def _check_reachable(uri: str) -> None:
    """Refuse a tracking server that does not accept a connection, at once: MLflow retries a
    refused connection with backoff for minutes before it reports it. Skipped when requests
    go through a proxy (the proxy, not this machine, reaches the server)."""
    import socket
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname
    if not host:
        raise GapscopeError(f"MLflow: {uri!r} names no server")
    if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise GapscopeError(f"MLflow: {uri!r} has no valid port") from None
    try:
        socket.create_connection((host, port), timeout=_CONNECT_SECONDS).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise GapscopeError(f"MLflow: cannot reach the tracking server {uri} ({reason})") from None


@contextlib.contextmanager
def _mlflow_errors() -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    database_errors: tuple[type[BaseException], ...] = ()
    try:
        from sqlalchemy.exc import SQLAlchemyError

        database_errors = (SQLAlchemyError,)
    except ImportError:  # a server URI needs no SQLAlchemy
        pass
    try:
        yield
    except MlflowException as exc:
        raise GapscopeError(f"MLflow: {exc.message}") from None
    except database_errors as exc:
        # SQLAlchemy's message spans lines (the statement, a link); the driver's is one.
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise GapscopeError(f"MLflow: the database store failed: {reason}") from None


@contextlib.contextmanager
def _wandb_errors() -> Iterator[None]:
    from wandb.errors import Error as WandbError

    try:
        yield
    except WandbError as exc:
        hint = (
            "" if os.environ.get("WANDB_MODE") else " (WANDB_MODE=offline logs to a local folder)"
        )
        raise GapscopeError(f"W&B: {exc}{hint}") from None


def open_tracker(spec: str) -> Tracker:
    """The tracker a spec names: ``mlflow[:<tracking URI>]``, ``tensorboard:<folder>`` or
    ``wandb[:<project>]``.

    Raises:
        GapscopeError: an unknown tracker, or ``tensorboard`` without a folder.

    >>> open_tracker("neptune:x")
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: unknown tracker 'neptune' in 'neptune:x': ...
    """
    name, _, where = spec.partition(":")
    if name == "mlflow":
        return MlflowTracker(where or None)
    if name == "tensorboard":
        if not where:
            raise GapscopeError(f"tracker {spec!r}: give the folder, e.g. 'tensorboard:runs/'")
        return TensorBoardTracker(where)
    if name == "wandb":
        return WandbTracker(where or None)
    raise GapscopeError(f"unknown tracker {name!r} in {spec!r}: {_SPEC_HELP}")


def as_tracker(target: Any) -> tuple[Tracker, bool]:
    """A :class:`Tracker` for ``target`` (see the module docstring), and whether it was made
    here (and so is to be closed here).

    Raises:
        GapscopeError: ``target`` is none of the accepted kinds; the ``mlflow`` module
            without an active run.
    """
    if isinstance(target, Tracker):
        return target, False
    if isinstance(target, str):
        return open_tracker(target), True
    if isinstance(target, os.PathLike):
        raise GapscopeError(f"a path alone names no tracker ({target}): {_SPEC_HELP}")
    if isinstance(target, ModuleType) and target.__name__ == "mlflow":
        active = target.active_run()
        if active is None:
            raise GapscopeError(
                "no MLflow run is active: start one (mlflow.start_run()), or give "
                "'mlflow:<tracking URI>' for a new run"
            )
        return _callers_mlflow_run(active.info.run_id), True
    module = type(target).__module__ or ""
    if module.startswith("mlflow") and hasattr(target, "info"):
        return _callers_mlflow_run(target.info.run_id), True
    if hasattr(target, "add_scalar") and hasattr(target, "add_text"):
        return TensorBoardTracker(writer=target), True
    if module.startswith("wandb") and hasattr(target, "log"):
        return WandbTracker(run=target), True
    raise GapscopeError(f"cannot log to a {type(target).__name__}: {_SPEC_HELP}")


def _callers_mlflow_run(run_id: str) -> MlflowTracker:
    tracker = MlflowTracker(run_id=run_id)
    tracker._callers = True
    return tracker


def resolve_steps(
    reports: Sequence[Report],
    steps: Sequence[int | None] | None = None,
    names: Sequence[str] | None = None,
) -> list[int]:
    """The step of each report: the one given in ``steps`` (not None), else the report's
    recorded step; when no report has one, their order (0, 1, ...).

    Raises:
        GapscopeError: some reports have a step and others not, two reports share a step (a
            tracker keeps one value a metric and step), or a step is not an integer >= 0.
            ``names`` (file names) name the reports in the message.
    """
    labels = list(names) if names is not None else [f"report {i + 1}" for i in range(len(reports))]
    given = list(steps) if steps is not None else [None] * len(reports)
    if len(given) != len(reports) or len(labels) != len(reports):
        raise ValueError("steps and names must have one entry a report")
    chosen = [
        check_step(step) if step is not None else report.run_info.step
        for step, report in zip(given, reports, strict=True)
    ]
    if all(step is None for step in chosen):
        return list(range(len(reports)))
    without = [label for label, step in zip(labels, chosen, strict=True) if step is None]
    if without:
        with_step = next(
            label for label, step in zip(labels, chosen, strict=True) if step is not None
        )
        raise GapscopeError(
            f"{without[0]} records no step but {with_step} does: give every report a step "
            "(analyze --step N), or log them one at a time with --step"
        )
    seen: dict[int, str] = {}
    for label, step in zip(labels, chosen, strict=True):
        assert step is not None
        if step in seen:
            raise GapscopeError(
                f"{seen[step]} and {label} are both at step {step}; a tracker keeps one value "
                "a metric and step"
            )
        seen[step] = label
    return [step for step in chosen if step is not None]


def log_reports(
    reports: Sequence[Report],
    tracker: Any,
    *,
    steps: Sequence[int | None] | None = None,
    names: Sequence[str] | None = None,
) -> Logged:
    """Log each report as one step of ``tracker``, in the order of their steps.

    Args:
        reports: the reports.
        tracker: a spec, a :class:`Tracker` or a tracker's own object (see the module
            docstring). A tracker made here from a spec is closed here (a run it created is
            finished, as failed when logging failed).
        steps: a step a report, None to use the report's recorded one (:func:`resolve_steps`).
        names: how messages name the reports (their files); default ``report 1``, ...

    Returns:
        A :class:`Logged`.

    Raises:
        MissingDependencyError: the tracker's package is not installed.
        GapscopeError: steps that do not fit (:func:`resolve_steps`), a malformed spec, or the
            tracker refused the values.
    """
    if not reports:
        raise GapscopeError("no report to log")
    chosen = resolve_steps(reports, steps, names)
    order = sorted(range(len(reports)), key=lambda i: chosen[i])
    target, made_here = as_tracker(tracker)
    values = 0
    failed = True
    try:
        for i in order:
            metrics = reports[i].to_flat()
            target.log(metrics, chosen[i], reports[i].run_info.fields())
            values += len(metrics)
        failed = False
    finally:
        if made_here:
            target.close(failed=failed)
    return Logged(target.kind, target.where, tuple(chosen[i] for i in order), values)


def _warn_of_replaced(
    where: str, held: Any, fields: Mapping[str, str], written: Mapping[str, str]
) -> None:
    """Warn of each run field in ``fields`` that replaces a value the run ``held`` (its tags,
    its config) and that gapscope did not write itself (``written``): the caller's own value
    under a run field's name. ``where`` names the run and what holds the value."""
    for key, value in fields.items():
        old = held.get(key)
        if old is not None and old != value and written.get(key) != old:
            warnings.warn(
                f"{where} {key!r} was {old!r}; gapscope replaces it with the report's {value!r}",
                UserWarning,
                stacklevel=5,
            )
