"""GapscopeCallback with the real Lightning Trainer on a tiny model, a few CPU steps: what
reaches the trainer's logger equals the report of the same embeddings computed apart."""

from __future__ import annotations

import csv
import sys

import pytest
import torch
from callback_testkit import expected

from gapscope.errors import GapscopeError, MissingDependencyError
from gapscope.integrations.metric import GapMetric

L = pytest.importorskip("lightning")

from gapscope.integrations.lightning import GapscopeCallback  # noqa: E402

DIM = 8

# The trainer's own log_every_n_steps (50) stays: the callback logs whatever it is.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The number of training batches"),
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no"),
]


class TinyClip(L.LightningModule):
    """Two linear encoders trained with a CLIP loss; every step returns its embeddings and
    the module keeps a copy of what each step returned."""

    def __init__(self, *, return_embeddings: bool = True) -> None:
        super().__init__()
        self.image = torch.nn.Linear(12, DIM)
        self.text = torch.nn.Linear(10, DIM)
        self.return_embeddings = return_embeddings
        self.train_seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.val_seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _embed(self, batch):
        images, texts = batch
        return self.image(images), self.text(texts).bfloat16()

    def training_step(self, batch, batch_idx):
        image, text = self._embed(batch)
        logits = (
            torch.nn.functional.normalize(image) @ torch.nn.functional.normalize(text.float()).T
        )
        target = torch.arange(len(image))
        loss = torch.nn.functional.cross_entropy(logits / 0.1, target)
        pair = (image.detach().clone(), text.detach().clone())
        self.train_seen.setdefault(self.global_step + 1, []).append(pair)
        if not self.return_embeddings:
            return loss
        return {"loss": loss, "image_embeds": image, "text_embeds": text}

    def validation_step(self, batch, batch_idx):
        image, text = self._embed(batch)
        self.val_seen.append((image.clone(), text.clone()))
        return {"image_embeds": image, "text_embeds": text}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def loader(n: int, seed: int, batch: int = 16):
    g = torch.Generator().manual_seed(seed)
    data = torch.utils.data.TensorDataset(
        torch.randn(n, 12, generator=g), torch.randn(n, 10, generator=g)
    )
    return torch.utils.data.DataLoader(data, batch_size=batch)


def trainer(tmp_path, callback, **kwargs):
    return L.Trainer(
        max_steps=4,
        accelerator="cpu",
        devices=1,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="run", version=0),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=2,
        **kwargs,
    )


def logged(tmp_path) -> dict[int, dict[str, float]]:
    """metrics.csv as step -> {key: value}, merging rows of one step."""
    out: dict[int, dict[str, float]] = {}
    with open(tmp_path / "run" / "version_0" / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            values = {k: float(v) for k, v in row.items() if v not in ("", None) and k != "step"}
            out.setdefault(int(row["step"]), {}).update(values)
    return out


def stage(values: dict[str, float], prefix: str) -> dict[str, float]:
    """The values logged under ``prefix``, without it."""
    return {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix)}


def test_training_steps_and_validation_reach_the_logger(tmp_path):
    model = TinyClip()
    callback = GapscopeCallback(every_n_steps=2)
    trainer(tmp_path, callback).fit(model, loader(64, 0), loader(40, 1))
    rows = logged(tmp_path)
    for step in (2, 4):
        want = expected(model.train_seen[step], "fast")
        assert stage(rows[step], "gapscope/train/") == want
    # Steps 1 and 3 log nothing of gapscope's.
    assert not any(k.startswith("gapscope/") for s in (0, 1, 3) for k in rows.get(s, {}))
    # Validation: every batch of the epoch (40 rows), not the sanity check's.
    assert sum(len(p[0]) for p in model.val_seen) == 40 + 32
    want = expected(model.val_seen[2:], "full")
    assert stage(rows[4], "gapscope/val/") == want
    assert len(want) > 50  # the full report, not the fast one
    assert callback.last["val"] == {f"gapscope/val/{k}": v for k, v in want.items()}


def test_embed_function_reads_the_batch(tmp_path):
    model = TinyClip(return_embeddings=False)
    seen = []

    def embed(module, batch):
        image, text = module._embed(batch)
        seen.append((image, text))
        return {"image": image, "text": text}

    callback = GapscopeCallback(every_n_steps=4, validation=False, embed=embed)
    trainer(tmp_path, callback).fit(model, loader(64, 0), loader(16, 1))
    assert len(seen) == 1 and not seen[0][0].requires_grad
    rows = logged(tmp_path)
    want = expected(seen, "fast")
    assert stage(rows[4], "gapscope/") == {f"train/{k}": v for k, v in want.items()}


def test_a_step_without_embeddings_says_what_to_return(tmp_path):
    callback = GapscopeCallback(every_n_steps=1, validation=False)
    with pytest.raises(GapscopeError, match="training_step returned no embeddings"):
        trainer(tmp_path, callback).fit(TinyClip(return_embeddings=False), loader(32, 0))


def test_bad_options_fail_when_the_callback_is_made():
    with pytest.raises(GapscopeError, match="every_n_steps"):
        GapscopeCallback(every_n_steps=0)
    with pytest.raises(GapscopeError, match="k"):
        GapscopeCallback(k=[0])
    assert isinstance(GapscopeCallback().train_metric, GapMetric)


def test_a_step_of_several_micro_batches_is_analysed_whole(tmp_path):
    model = TinyClip()
    callback = GapscopeCallback(every_n_steps=2, validation=False)
    trainer(tmp_path, callback, accumulate_grad_batches=2).fit(model, loader(128, 0))
    rows = logged(tmp_path)
    for step in (2, 4):
        assert len(model.train_seen[step]) == 2
        want = expected(model.train_seen[step], "fast")
        assert stage(rows[step], "gapscope/train/") == want
        assert [v for k, v in want.items() if k.endswith("n_pairs")] == [32]  # both batches


def test_without_lightning_the_callback_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)  # import lightning now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'gapscope\[lightning\]'"):
        GapscopeCallback()


def test_a_validation_set_of_one_row_is_skipped_with_a_warning(tmp_path):
    """Too few rows to report on stop nothing: the training runs to its end, the warning
    names the stage, and the training logs still reach the logger."""
    model = TinyClip()
    callback = GapscopeCallback(every_n_steps=2)
    with pytest.warns(UserWarning, match="gapscope: val not logged: .*image has 1 row "):
        trainer(tmp_path, callback).fit(model, loader(64, 0), loader(1, 1))
    assert model.global_step == 4
    rows = logged(tmp_path)
    assert stage(rows[4], "gapscope/train/") == expected(model.train_seen[4], "fast")
    assert not any(k.startswith("gapscope/val/") for values in rows.values() for k in values)
    assert "val" not in callback.last
