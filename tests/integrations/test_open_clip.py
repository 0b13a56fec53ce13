"""with_gapscope with open_clip's real training code and the bundled tiny open_clip model:
what reaches open_clip's TensorBoard writer equals the report of the validation features
computed apart; and the launcher of the docs runs open_clip_train.main end to end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from gapscope import analyze
from gapscope.analysis import keys as K
from gapscope.integrations.metric import PRESETS
from gapscope.report.model import Report

pytest.importorskip("open_clip")
pytest.importorskip("open_clip_train")

from gapscope.extract.open_clip_encoder import register_tiny_model, require_open_clip  # noqa: E402
from gapscope.integrations.open_clip import with_gapscope  # noqa: E402

TINY = "gapscope-tiny-vit"


class Writer:
    """Records add_scalar calls, as open_clip's SummaryWriter receives them."""

    def __init__(self) -> None:
        self.scalars: dict[str, tuple[float, int]] = {}

    def add_scalar(self, name, value, step):
        self.scalars[name] = (value, step)

    def under(self, prefix: str) -> dict[str, float]:
        return {
            k.removeprefix(prefix): v for k, (v, _) in self.scalars.items() if k.startswith(prefix)
        }


class Data:
    """What open_clip's ``data["val"]`` is (``open_clip_train.data.DataInfo``)."""

    def __init__(self, dataloader) -> None:
        self.dataloader = dataloader


class Loader(list):
    """Validation batches (images, tokens) with open_clip's ``num_samples``."""

    num_samples = 0


def tiny_setup(n: int = 12, batch: int = 4):
    open_clip = require_open_clip()
    register_tiny_model()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, output_dict=True)
    tokenizer = open_clip.get_tokenizer(TINY)
    captions = [f"a photo of thing number {i}" for i in range(n)]
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    loader = Loader(
        (images[i : i + batch], tokenizer(captions[i : i + batch])) for i in range(0, n, batch)
    )
    loader.num_samples = n
    return model, loader


def open_clip_args(tmp_path) -> argparse.Namespace:
    return argparse.Namespace(
        device="cpu",
        precision="fp32",
        val_frequency=1,
        epochs=1,
        distributed=False,
        horovod=False,
        save_logs=True,
        checkpoint_path=str(tmp_path),
        wandb=False,
        rank=0,
        local_rank=0,
        zeroshot_frequency=0,
    )


def features(model, loader):
    model.eval()
    out = {"image": [], "text": []}
    with torch.inference_mode():
        for images, tokens in loader:
            result = model(images, tokens)
            out["image"].append(result["image_features"])
            out["text"].append(result["text_features"])
    return {m: torch.cat(v) for m, v in out.items()}


def test_validation_report_reaches_the_writer(tmp_path):
    from open_clip_train.train import evaluate

    model, loader = tiny_setup()
    writer = Writer()
    metrics = with_gapscope(evaluate)(
        model, {"val": Data(loader)}, 1, open_clip_args(tmp_path), tb_writer=writer
    )
    want = analyze(features(model, loader), device="cpu").to_flat()
    got = writer.under("val/gapscope/")
    assert got == {k: float(v) for k, v in want.items()} and len(got) > 50
    assert {step for _, step in writer.scalars.values()} == {1}
    assert "val/clip_val_loss" in writer.scalars  # open_clip's own, beside
    # open_clip's own metrics are still there, gapscope's beside them.
    assert "image_to_text_R@1" in metrics and "clip_val_loss" in metrics
    assert {
        k.removeprefix("gapscope/"): v for k, v in metrics.items() if k.startswith("gapscope/")
    } == got
    saved = Report.from_dict(json.loads((tmp_path / "gapscope_epoch_1.json").read_text()))
    assert saved.to_flat() == want
    assert saved.input[K.MODALITIES_SECTION]["image"][K.ROWS] == 12


def test_fast_preset_and_an_evaluation_without_validation(tmp_path):
    from open_clip_train.train import evaluate

    model, loader = tiny_setup()
    writer = Writer()
    args = open_clip_args(tmp_path)
    hooked = with_gapscope(evaluate, preset="fast", prefix="gap/")
    hooked(model, {"val": Data(loader)}, 2, args, tb_writer=writer)
    chosen = PRESETS["fast"]
    want = analyze(
        features(model, loader), metrics=chosen.metrics, sample=chosen.sample, device="cpu"
    )
    assert writer.under("gap/") == want.to_flat()
    # Another process (rank 1) evaluates nothing, and nothing is added.
    writer.scalars.clear()
    args.rank = 1
    assert hooked(model, {"val": Data(loader)}, 3, args, tb_writer=writer) == {}
    assert not writer.under("gap/") and not (tmp_path / "gapscope_epoch_3.json").exists()


LAUNCHER = textwrap.dedent(
    """
    import sys

    from gapscope.extract.open_clip_encoder import register_tiny_model

    register_tiny_model()  # the launcher of the docs, with the bundled tiny model known

    from open_clip_train import main as training

    from gapscope.integrations.open_clip import with_gapscope

    training.evaluate = with_gapscope(training.evaluate)

    if __name__ == "__main__":
        training.main(sys.argv[1:])
    """
)


def test_the_launcher_runs_open_clip_train(tmp_path):
    pytest.importorskip("tensorboard")
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = ["filepath,title"]
    for i in range(8):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (32, 32), (30 * i, 255 - 30 * i, 7 * i)).save(path)
        rows.append(f"{path},a picture of colour {i}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "train_with_gapscope.py").write_text(LAUNCHER)
    command = [
        sys.executable,
        str(tmp_path / "train_with_gapscope.py"),
        *("--train-data", str(tmp_path / "data.csv"), "--val-data", str(tmp_path / "data.csv")),
        *("--dataset-type", "csv", "--csv-separator", ","),
        *("--model", TINY, "--batch-size", "4", "--epochs", "1", "--workers", "0"),
        *("--lr", "1e-3", "--warmup", "1", "--device", "cpu", "--precision", "fp32"),
        *("--report-to", "tensorboard", "--logs", str(tmp_path / "logs"), "--name", "run"),
        *("--val-frequency", "1", "--save-frequency", "0", "--seed", "0"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads(
        (tmp_path / "logs" / "run" / "checkpoints" / "gapscope_epoch_1.json").read_text()
    )
    flat = Report.from_dict(saved).to_flat()
    events = EventAccumulator(str(tmp_path / "logs" / "run" / "tensorboard"))
    events.Reload()
    tags = {
        t.removeprefix("val/gapscope/")
        for t in events.Tags()["scalars"]
        if t.startswith("val/gapscope/")
    }
    assert tags == set(flat) and len(tags) > 50
    for key, value in flat.items():
        (scalar,) = events.Scalars(f"val/gapscope/{key}")
        assert scalar.step == 1
        assert scalar.value == pytest.approx(value, rel=1e-6, abs=1e-6), key
    assert saved[K.INPUT_SECTION][K.MODALITIES_SECTION]["image"][K.ROWS] == 8
    assert "val/clip_val_loss" in events.Tags()["scalars"]  # open_clip's own logs still there
