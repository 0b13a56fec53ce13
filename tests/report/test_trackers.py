"""Reports logged to real trackers and read back, value by value: MLflow (a sqlite and a file
tracking store, read through MlflowClient), TensorBoard (event files, read with TensorBoard's
event_accumulator) and Weights & Biases (an offline run folder, its records read back). Through
``gapscope log`` and through ``Report.log_to`` with specs and with the trackers' own objects.
Nothing here needs the network."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from full_reports import full_report, three_modalities
from typer.testing import CliRunner

from gapscope import analyze
from gapscope.cli import app
from gapscope.errors import GapscopeError
from gapscope.report import Report
from gapscope.report.trackers import MlflowTracker, TensorBoardTracker, log_reports

runner = CliRunner()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def reports() -> tuple[Report, Report]:
    """Two checkpoints' full reports (every kind of key, three modalities, intervals): steps
    7 and 8, other tags, other embeddings (so other checkpoint identities)."""
    first = full_report(step=7, tags={"lr": "3e-4", "data": "coco-val"})
    second = analyze(
        three_modalities(seed=1), device="cpu", bootstrap=20, seed=0, step=8, tags={"lr": "1e-4"}
    )
    return first, second


@pytest.fixture()
def report_files(tmp_path, reports) -> list[Path]:
    paths = []
    for report in reports:
        path = tmp_path / f"step-{report.run_info.step}.json"
        path.write_text(report.to_json())
        paths.append(path)
    return paths


@pytest.fixture()
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode, every folder it writes under tmp_path, no key, no network. W&B
    reads its settings once a process (``wandb.setup``); teardown makes it read them again."""
    import wandb

    root = tmp_path / "wandb-home"
    for variable in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        folder = root / variable.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(variable, str(folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    wandb.teardown()
    yield root / "wandb_dir"
    wandb.teardown()


@pytest.fixture(autouse=True)
def no_tracker_environment(monkeypatch):
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, created once: creating one runs MLflow's migrations
    (seconds); a copy opens at once."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "template.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def sqlite_store(tmp_path, mlflow_template) -> str:
    path = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template, path)
    return f"sqlite:///{path}"


def file_store(tmp_path: Path, monkeypatch) -> str:
    """A file tracking store (MLflow 3 deprecates it; allowed on request)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def expected(*reports: Report) -> dict[tuple[str, int], float]:
    """Every (flat key, step) -> value the reports hold."""
    return {
        (key, report.run_info.step): value
        for report in reports
        for key, value in report.to_flat().items()
    }


def log(*args: object):
    return runner.invoke(app, ["log", *(str(a) for a in args)], catch_exceptions=False)


def one_error_line(result, fragment: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


# --------------------------------------------------------------------------- read back


def mlflow_read(uri: str, run_id: str) -> tuple[dict[tuple[str, int], float], dict[str, str]]:
    """Every metric value of a run at every step, and its tags, through MlflowClient."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    values = {
        (metric.key, metric.step): metric.value
        for key in run.data.metrics
        for metric in client.get_metric_history(run_id, key)
    }
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return values, tags


def mlflow_only_run(uri: str, experiment: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0].info.run_id


def tensorboard_read(
    folder: Path,
) -> tuple[dict[tuple[str, int], float], dict[tuple[str, int], str]]:
    """Every scalar (tag, step) -> value and text summary (tag, step) -> text in a folder."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    scalars = {(t, e.step): e.value for t in acc.Tags()["scalars"] for e in acc.Scalars(t)}
    texts = {
        (t, e.step): e.tensor_proto.string_val[0].decode("utf-8")
        for t in acc.Tags()["tensors"]
        for e in acc.Tensors(t)
    }
    return scalars, texts


def finish_writing() -> None:
    """W&B's service process writes a run file's last block when it shuts down, not when
    ``run.finish()`` returns (a process that exits shuts it down): shut it down to read."""
    import wandb

    wandb.teardown()


def wandb_records(run_file: Path):
    """The records of a W&B run file (``run-<id>.wandb``): a 7-byte W&B header, then LevelDB
    log records in 32 KiB blocks (7-byte record headers: crc, length, type 1 full / 2 first /
    3 middle / 4 last), each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # the rest of a block too small for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:
            break  # zeros after the last record
        payload = data[position + 7 : position + 7 + length]
        assert len(payload) == length, "truncated record"
        position += 7 + length
        if kind == 1:
            complete = payload
        elif kind == 2:
            pending = payload
            continue
        elif kind == 3:
            pending += payload
            continue
        else:
            assert kind == 4, kind
            complete = pending + payload
        record = wandb_internal_pb2.Record()
        record.ParseFromString(complete)
        yield record


def wandb_read(wandb_dir: Path) -> tuple[dict[tuple[str, int], float], dict[str, str], str]:
    """Every history value (key, step) -> value and the config of the one offline run."""
    finish_writing()
    (run_file,) = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    history: dict[tuple[str, int], float] = {}
    config: dict[str, str] = {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    history[(key, record.history.step.num)] = json.loads(item.value_json)
        elif kind in ("config", "run"):
            updates = record.config.update if kind == "config" else record.run.config.update
            for item in updates:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    config[key] = json.loads(item.value_json)
    return history, config, run_file.parent.name


# --------------------------------------------------------------------------- MLflow


def test_gapscope_log_to_mlflow_every_value_reads_back(sqlite_store, reports, report_files):
    uri = sqlite_store
    result = log(*report_files, "--mlflow", uri, "--experiment", "clip-eval", "--run-name", "eval")
    assert result.exit_code == 0, result.output
    run_id = mlflow_only_run(uri, "clip-eval")
    assert result.stdout == (
        f"logged 2 reports ({2 * len(reports[0].to_flat())} values) to MLflow run {run_id} "
        f"of experiment clip-eval in {uri} at steps 7, 8\n"
    )
    assert result.stderr == ""
    values, tags = mlflow_read(uri, run_id)
    assert values == expected(*reports)  # float64: every value exactly
    # The run's tags are the last report's run fields.
    assert tags == {
        "checkpoint": reports[1].run_info.checkpoint,
        "tag.lr": "1e-4",
        "tag.data": "coco-val",
    }
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "eval"


def test_gapscope_log_to_an_mlflow_file_store(tmp_path, monkeypatch, reports, report_files):
    from mlflow.tracking import MlflowClient

    uri = file_store(tmp_path, monkeypatch)
    result = log(report_files[0], "--mlflow", uri)
    assert result.exit_code == 0, result.output
    run_id = mlflow_only_run(uri, "Default")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    # One report: each metric's latest value is its only one.
    assert run.data.metrics == reports[0].to_flat()
    for key in ("image-text/gap", "image-text/recall/text_to_image/R5", "image-text/gap_ci/low"):
        (metric,) = client.get_metric_history(run_id, key)
        assert metric.step == 7
    assert run.data.tags["checkpoint"] == reports[0].run_info.checkpoint


def test_log_into_an_existing_mlflow_run(tmp_path, sqlite_store, reports, report_files):
    import mlflow

    uri = sqlite_store
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run() as run:  # the training run, still active
            mlflow.log_metric("train/loss", 0.5, step=7)
            logged = reports[0].log_to(run)
            assert logged.steps == (7,) and logged.tracker == "MLflow"
            reports[1].log_to(mlflow)  # the module: its active run
            assert mlflow.active_run().info.run_id == run.info.run_id
        # gapscope log --run-id appends to it (and leaves its status alone).
        later = reports[0].to_dict()
        later["run"]["step"] = 9
        path = tmp_path / "step-9.json"
        path.write_text(json.dumps(later))
        result = log(path, "--mlflow", uri, "--run-id", run.info.run_id)
        assert result.exit_code == 0, result.output
    finally:
        mlflow.set_tracking_uri(previous)
    values, _ = mlflow_read(uri, run.info.run_id)
    assert values.pop(("train/loss", 7)) == 0.5
    assert values == {
        **expected(*reports),
        **{(key, 9): value for key, value in reports[0].to_flat().items()},
    }


def test_a_tag_of_the_callers_mlflow_run_is_replaced_with_a_warning(sqlite_store, reports):
    """A run of the caller's with a ``checkpoint`` tag of its own: the report's replaces it,
    with one warning naming both; gapscope's own tag from an earlier log is replaced in
    silence, and a run gapscope opens or resumes by id is not warned of."""
    import warnings

    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(sqlite_store)
    try:
        with mlflow.start_run(tags={"checkpoint": "/ckpts/epoch_5.pt", "lr": "0.1"}) as run:
            with pytest.warns(UserWarning, match="its tag 'checkpoint' was '/ckpts/epoch_5.pt'"):
                reports[0].log_to(run, step=1)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                reports[1].log_to(mlflow, step=2)
            tags = mlflow.get_run(run.info.run_id).data.tags
        assert tags["checkpoint"] == reports[1].run_info.checkpoint and tags["lr"] == "0.1"
        client = mlflow.MlflowClient()
        client.set_tag(run.info.run_id, "checkpoint", "/ckpts/epoch_9.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            log_reports([reports[0]], MlflowTracker(run_id=run.info.run_id), steps=[3])
    finally:
        mlflow.set_tracking_uri(previous)


def test_mlflow_refusals_are_one_line(tmp_path, monkeypatch, report_files):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    line = one_error_line(log(report_files[0], "--mlflow", tmp_path / "mlruns"), "MLflow: ")
    assert "MLFLOW_ALLOW_FILE_STORE" in line
    uri = file_store(tmp_path, monkeypatch)
    one_error_line(log(report_files[0], "--mlflow", uri, "--run-id", "0" * 32), "MLflow: Run")
    one_error_line(
        log(report_files[0], "--mlflow", uri, "--run-id", "x", "--experiment", "e"),
        "--run-id logs into an existing MLflow run",
    )


def test_sqlite_stores_that_cannot_hold_a_run_are_one_line(tmp_path, report_files):
    """Refused before MLflow opens them: it would fail inside SQLAlchemy (exit 3), retry for
    minutes, or keep nothing (an in-memory database)."""
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("hello\n")
    for uri, fragment in (
        (f"sqlite:///{not_a_database}", f"MLflow: {not_a_database} is not an SQLite database"),
        (f"sqlite:///{tmp_path}/missing/m.db", "MLflow: cannot make the database"),
        ("sqlite://", "MLflow: 'sqlite://' is an in-memory database"),
        ("sqlite:///:memory:", "is an in-memory database, which keeps nothing"),
    ):
        one_error_line(log(report_files[0], "--mlflow", uri), fragment)
    assert not_a_database.read_text() == "hello\n"
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".json" and p != not_a_database]


def test_a_tracking_server_that_refuses_connections_is_one_line_at_once(monkeypatch, report_files):
    """MLflow retries a refused connection for minutes; a port nothing listens on is refused
    in one line before any request. Through a proxy the check is left to the proxy."""
    import socket
    import time

    from gapscope.report import trackers

    for variable in ("http", "all", "no"):
        for name in (f"{variable}_proxy", f"{variable.upper()}_PROXY"):
            monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a port free on this machine, closed again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    line = one_error_line(
        log(report_files[0], "--mlflow", f"http://127.0.0.1:{port}"),
        f"MLflow: cannot reach the tracking server http://127.0.0.1:{port} (",
    )
    assert time.monotonic() - started < 60, line
    one_error_line(log(report_files[0], "--mlflow", "http://:80"), "names no server")
    one_error_line(log(report_files[0], "--mlflow", "http://h:99999"), "has no valid port")

    def never(*args, **kwargs):
        raise AssertionError("connected despite the proxy")

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setattr(socket, "create_connection", never)
    trackers._check_reachable(f"http://127.0.0.1:{port}")  # left to the proxy


def test_a_database_error_inside_mlflow_is_one_line(monkeypatch, sqlite_store, report_files):
    """An error SQLAlchemy raises past MLflow (a locked or corrupt database) is exit 2 with
    the driver's one-line reason, not a crash."""
    import sqlalchemy.exc
    from mlflow.tracking import MlflowClient

    def broken(self, *args, **kwargs):
        raise sqlalchemy.exc.OperationalError(
            "INSERT INTO runs ...", {}, Exception("database is locked\n(more)")
        )

    monkeypatch.setattr(MlflowClient, "create_run", broken)
    one_error_line(
        log(report_files[0], "--mlflow", sqlite_store),
        "MLflow: the database store failed: database is locked",
    )


# --------------------------------------------------------------------------- TensorBoard


def test_gapscope_log_to_tensorboard_every_value_reads_back(tmp_path, reports, report_files):
    folder = tmp_path / "runs" / "gapscope"
    result = log(*report_files, "--tensorboard", folder)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("logged 2 reports (") and "at steps 7, 8" in result.stdout
    scalars, texts = tensorboard_read(folder)
    want = expected(*reports)
    assert set(scalars) == set(want)
    # TensorBoard keeps scalars as float32: every value is the float32 of the report's.
    assert all(scalars[k] == float(np.float32(v)) for k, v in want.items())
    # The run fields at each step: each report's own checkpoint and tags.
    first, second = (r.run_info for r in reports)
    assert texts == {
        ("checkpoint", 7): first.checkpoint,
        ("tag.data", 7): "coco-val",
        ("tag.lr", 7): "3e-4",
        ("checkpoint", 8): second.checkpoint,
        ("tag.lr", 8): "1e-4",
    }


def test_log_to_a_summary_writer_and_a_folder_spec(tmp_path, reports):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "writer"))
    logged = reports[0].log_to(writer, step=100)
    writer.add_scalar("train/loss", 0.25, 100)  # the writer is the caller's, still open
    writer.close()
    assert logged.steps == (100,) and logged.where.endswith("writer")
    scalars, texts = tensorboard_read(tmp_path / "writer")
    assert scalars.pop(("train/loss", 100)) == 0.25
    want = {(key, 100): float(np.float32(v)) for key, v in reports[0].to_flat().items()}
    assert scalars == want
    # torch's add_text writes the text under <tag>/text_summary.
    assert texts[("checkpoint/text_summary", 100)] == reports[0].run_info.checkpoint
    assert texts[("tag.lr/text_summary", 100)] == "3e-4"

    logged = log_reports(list(reports), f"tensorboard:{tmp_path / 'spec'}")
    assert str(logged).endswith("at steps 7, 8")
    scalars, _ = tensorboard_read(tmp_path / "spec")
    assert scalars == {k: float(np.float32(v)) for k, v in expected(*reports).items()}


def test_tensorboard_folder_that_is_a_file(tmp_path, report_files):
    (tmp_path / "file").write_text("x")
    one_error_line(log(report_files[0], "--tensorboard", tmp_path / "file"), "is a file")


# --------------------------------------------------------------------------- W&B


def test_gapscope_log_to_wandb_offline_every_value_reads_back(wandb_offline, reports, report_files):
    result = log(*report_files, "--wandb", "--project", "clip-eval", "--run-name", "eval")
    assert result.exit_code == 0, result.output
    history, config, folder = wandb_read(wandb_offline)
    assert f"W&B offline run {folder.rsplit('-', 1)[-1]}" in result.stdout
    assert "at steps 7, 8" in result.stdout and result.stderr == ""
    assert history == expected(*reports)  # JSON in the run file: every value exactly
    assert config == {
        "checkpoint": reports[1].run_info.checkpoint,
        "tag.lr": "1e-4",
        "tag.data": "coco-val",
    }


def test_a_config_value_of_the_callers_run_is_replaced_with_a_warning(wandb_offline, reports):
    """A run of the caller's with a ``checkpoint`` of its own: the report's replaces it (the
    run fields are the report's), with one warning naming both; gapscope's own value from an
    earlier log is replaced in silence."""
    import warnings

    import wandb

    config = {"checkpoint": "/ckpts/epoch_5.pt", "lr": 0.1}
    settings = wandb.Settings(console="off", x_disable_stats=True)
    run = wandb.init(project="training", config=config, settings=settings)
    try:
        with pytest.warns(UserWarning, match="its config 'checkpoint' was '/ckpts/epoch_5.pt'"):
            reports[0].log_to(run, step=1)
        assert run.config["checkpoint"] == reports[0].run_info.checkpoint
        assert run.config["lr"] == 0.1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            reports[1].log_to(run, step=2)
        assert run.config["checkpoint"] == reports[1].run_info.checkpoint
    finally:
        run.finish()


def test_log_to_a_wandb_run_refuses_an_earlier_step(wandb_offline, reports):
    import wandb

    run = wandb.init(
        project="training", settings=wandb.Settings(console="off", x_disable_stats=True)
    )
    try:
        run.log({"train/loss": 0.5}, step=7)
        reports[0].log_to(run)  # step 7: the run's current step
        reports[1].log_to(run)
        with pytest.raises(
            GapscopeError, match="at step 8, and W&B drops values logged at an earlier step"
        ):
            reports[0].log_to(run, step=3)
        log_reports([reports[0]], "wandb:other", steps=[20])  # a spec opens its own run
    finally:
        run.finish()
    finish_writing()
    runs = sorted(wandb_offline.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    histories = {}
    for path in runs:
        history = {}
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        history[(key, record.history.step.num)] = json.loads(item.value_json)
        histories[path.stem.removeprefix("run-")] = history
    training = histories.pop(run.id)
    assert training.pop(("train/loss", 7)) == 0.5
    assert training == expected(*reports)
    (other,) = histories.values()
    assert other == {(key, 20): v for key, v in reports[0].to_flat().items()}


def test_wandb_without_a_login_is_one_line(wandb_offline, monkeypatch, tmp_path, report_files):
    import wandb

    wandb.teardown()
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # never a real server
    one_error_line(log(report_files[0], "--wandb"), "W&B: ")


# --------------------------------------------------------------------------- steps, specs, extras


def test_steps_come_from_the_reports_or_their_order(tmp_path, reports):
    plain = [Report.from_dict({**r.to_dict(), "run": None}) for r in reports]
    assert all(r.run_info.step is None for r in plain)
    logged = log_reports(plain, f"tensorboard:{tmp_path / 'order'}")
    assert logged.steps == (0, 1)
    scalars, _ = tensorboard_read(tmp_path / "order")
    assert {step for _, step in scalars} == {0, 1}
    # Reversed on the command line, still logged in the order of their steps.
    logged = log_reports(list(reversed(reports)), f"tensorboard:{tmp_path / 'sorted'}")
    assert logged.steps == (7, 8)
    with pytest.raises(GapscopeError, match="report 2 records no step but report 1 does"):
        log_reports([reports[0], plain[0]], f"tensorboard:{tmp_path / 'never'}")
    with pytest.raises(GapscopeError, match="report 1 and report 2 are both at step 7"):
        log_reports([reports[0], reports[0]], f"tensorboard:{tmp_path / 'never'}")
    assert not (tmp_path / "never").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("neptune:x", "unknown tracker 'neptune'"),
        ("tensorboard", "give the folder"),
        (42, "cannot log to a int"),
        (Path("runs"), "a path alone names no tracker"),
    ],
)
def test_bad_tracker_targets(reports, target, fragment):
    with pytest.raises(GapscopeError, match=re.escape(fragment)):
        reports[0].log_to(target)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "give one tracker: --mlflow URI, --tensorboard DIR or --wandb (none given)"),
        (["--tensorboard", "tb", "--wandb"], "(--tensorboard and --wandb given)"),
        (["--tensorboard", "tb", "--project", "p"], "--project applies to --wandb"),
        (["--tensorboard", "tb", "--run-name", "r"], "--run-name applies to --mlflow and --wandb"),
        (["--wandb", "--experiment", "e"], "--experiment applies to --mlflow"),
        (["--tensorboard", "tb", "--step", "-1"], "step: expected an integer >= 0, got -1"),
    ],
)
def test_bad_log_options_are_one_line(tmp_path, monkeypatch, report_files, args, fragment):
    monkeypatch.chdir(tmp_path)
    one_error_line(log(report_files[0], *args), fragment)


def test_bad_reports_are_one_line(tmp_path, report_files):
    one_error_line(log(tmp_path / "missing.json", "--tensorboard", tmp_path), "does not exist")
    (tmp_path / "bad.json").write_text('{"schema": "gapscope.report/2"}')
    one_error_line(log(tmp_path / "bad.json", "--tensorboard", tmp_path), "lacks the required")
    one_error_line(
        log(*report_files, "--tensorboard", tmp_path, "--step", "3"),
        "--step gives one report's step, and 2 reports are given",
    )
    one_error_line(
        log(report_files[0], report_files[0], "--tensorboard", tmp_path), "both at step 7"
    )


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    [
        ("mlflow", ["--mlflow", "sqlite:///m.db"], "mlflow"),
        ("sqlalchemy", ["--mlflow", "sqlite:///m.db"], "mlflow"),
        ("tensorboard", ["--tensorboard", "tb"], "tensorboard"),
        ("wandb", ["--wandb"], "wandb"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    tmp_path, monkeypatch, report_files, blocked, args, extra
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, blocked, None)  # "import <blocked>" now fails
    line = one_error_line(log(report_files[0], *args), f"pip install 'gapscope[{extra}]'")
    assert not (tmp_path / "tb").exists() and not (tmp_path / "m.db").exists()
    assert blocked in line


def test_gapscope_log_loads_no_torch(tmp_path, report_files):
    code = (
        "import sys\n"
        "from gapscope.cli import main\n"
        f"sys.argv = ['gapscope', 'log', {str(report_files[0])!r}, '--tensorboard', "
        f"{str(tmp_path / 'tb')!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("logged 1 report (")


def test_tracker_objects_close_what_they_opened(tmp_path, monkeypatch, reports):
    with TensorBoardTracker(tmp_path / "tb") as tracker:
        log_reports([reports[0]], tracker)
        log_reports([reports[1]], tracker)
    scalars, _ = tensorboard_read(tmp_path / "tb")
    assert {step for _, step in scalars} == {7, 8}
    uri = file_store(tmp_path, monkeypatch)
    with (
        pytest.raises(GapscopeError, match="boom"),
        MlflowTracker(uri, experiment="failing") as tracker,
    ):
        raise GapscopeError("boom")
    from mlflow.tracking import MlflowClient

    assert MlflowClient(tracking_uri=uri).get_run(tracker.run_id).info.status == "FAILED"
