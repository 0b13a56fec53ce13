"""``gapscope log``: reports into MLflow, TensorBoard or Weights & Biases, one step a report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gapscope.cli.errors import handle_errors
from gapscope.errors import GapscopeError

if TYPE_CHECKING:
    from gapscope.report.trackers import Tracker

__all__ = ["log_command"]


@handle_errors
def log_command(
    reports: Annotated[
        list[Path],
        typer.Argument(
            help="JSON reports (analyze --json); each is one step.",
            show_default=False,
        ),
    ],
    mlflow: Annotated[
        str | None,
        typer.Option(
            "--mlflow",
            metavar="URI",
            help="Log to a new run of this MLflow tracking URI, e.g. sqlite:///mlflow.db or "
            "http://localhost:5000 (or into --run-id).",
        ),
    ] = None,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            "--tensorboard",
            metavar="DIR",
            help="Write a new TensorBoard event file in this folder (one folder a run).",
        ),
    ] = None,
    wandb: Annotated[
        bool,
        typer.Option(
            "--wandb",
            help="Log to a new Weights & Biases run (WANDB_MODE=offline: a local run folder "
            "for wandb sync).",
        ),
    ] = False,
    project: Annotated[
        str | None, typer.Option(help="W&B: the project of the new run.", show_default=False)
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(
            help="MLflow: the experiment of the new run, created when missing (default "
            "MLFLOW_EXPERIMENT_NAME, else Default).",
            show_default=False,
        ),
    ] = None,
    run_name: Annotated[
        str | None,
        typer.Option("--run-name", help="MLflow or W&B: the name of the new run."),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="MLflow: log into this existing run (e.g. the training run); W&B: resume "
            "this run.",
        ),
    ] = None,
    step: Annotated[
        int | None,
        typer.Option(help="Log the one REPORT at this step instead of the step it records."),
    ] = None,
) -> None:
    """Log reports to MLflow, TensorBoard or Weights & Biases, one step a report.

    Each report's metrics go in under their flat keys, which every tracker
    takes: image-text/gap, image-text/recall/text_to_image/R5, ... Each report
    is logged at the step it records (analyze --step), or at its place in the
    list when none records one, with its checkpoint and tags beside the
    metrics: MLflow run tags, W&B config, TensorBoard text. Each tracker is an
    extra: pip install 'gapscope\\[mlflow]' (or tensorboard, wandb, or
    trackers for all three).

    Example:

        gapscope analyze examples/example-store --step 1000 -q -f json -o report.json

        gapscope log report.json --mlflow sqlite:///mlflow.db --experiment clip-eval

        gapscope log report.json --tensorboard runs/gapscope

        WANDB_MODE=offline gapscope log report.json --wandb --project clip-eval
    """
    from gapscope.gate.reports import load_report
    from gapscope.report.trackers import log_reports, resolve_steps

    _check_options(mlflow, tensorboard, wandb, project, experiment, run_name, run_id)
    if step is not None and len(reports) > 1:
        raise GapscopeError(
            f"--step gives one report's step, and {len(reports)} reports are given: record "
            "each report's step with analyze --step, or log them one at a time"
        )
    loaded = [load_report(path, "report") for path in reports]
    names = [str(path) for path in reports]
    steps = [step] * len(loaded)
    resolve_steps(loaded, steps, names)  # before a run is made for them
    # A run made here is finished here, as failed when logging failed.
    with _open(mlflow, tensorboard, project, experiment, run_name, run_id) as tracker:
        logged = log_reports(loaded, tracker, steps=steps, names=names)
    typer.echo(str(logged))


def _check_options(
    mlflow: str | None,
    tensorboard: Path | None,
    wandb: bool,
    project: str | None,
    experiment: str | None,
    run_name: str | None,
    run_id: str | None,
) -> None:
    chosen = [
        name
        for name, given in (
            ("--mlflow", mlflow),
            ("--tensorboard", tensorboard),
            ("--wandb", wandb),
        )
        if given
    ]
    if len(chosen) != 1:
        what = "none" if not chosen else " and ".join(chosen)
        raise GapscopeError(
            f"give one tracker: --mlflow URI, --tensorboard DIR or --wandb ({what} given)"
        )
    only = {
        "--project": (project, ("--wandb",)),
        "--experiment": (experiment, ("--mlflow",)),
        "--run-name": (run_name, ("--mlflow", "--wandb")),
        "--run-id": (run_id, ("--mlflow", "--wandb")),
    }
    for option, (value, trackers) in only.items():
        if value is not None and chosen[0] not in trackers:
            raise GapscopeError(f"{option} applies to {' and '.join(trackers)}, not {chosen[0]}")
    if run_id is not None and (experiment is not None or run_name is not None) and mlflow:
        raise GapscopeError(
            "--run-id logs into an existing MLflow run: drop --experiment and --run-name"
        )


def _open(
    mlflow: str | None,
    tensorboard: Path | None,
    project: str | None,
    experiment: str | None,
    run_name: str | None,
    run_id: str | None,
) -> Tracker:
    from gapscope.extras import require
    from gapscope.report.trackers import MlflowTracker, TensorBoardTracker, WandbTracker

    if mlflow is not None:
        require("mlflow", "logging to MLflow")
        # MLflow announces each step of setting up a sqlite store; the summary line is enough.
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        return MlflowTracker(mlflow, experiment=experiment, run_name=run_name, run_id=run_id)
    if tensorboard is not None:
        return TensorBoardTracker(tensorboard)
    return WandbTracker(project, run_name=run_name, run_id=run_id)
