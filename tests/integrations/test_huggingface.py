"""GapscopeTrainerCallback with the real transformers Trainer on a tiny model, a few CPU
steps: what reaches the Trainer's log history equals the report of the same embeddings
computed apart."""

from __future__ import annotations

import sys

import pytest
import torch
from callback_testkit import expected

from gapscope.errors import GapscopeError, MissingDependencyError

transformers = pytest.importorskip("transformers")

from gapscope.integrations.huggingface import GapscopeTrainerCallback  # noqa: E402

DIM = 8


class TinyClip(torch.nn.Module):
    """Two linear encoders with a CLIP loss; keeps a copy of the embeddings of every forward,
    by mode."""

    def __init__(self, *, key: str = "image_embeds") -> None:
        super().__init__()
        self.image = torch.nn.Linear(12, DIM)
        self.text = torch.nn.Linear(10, DIM)
        self.key = key
        self.seen: dict[bool, list[tuple[torch.Tensor, torch.Tensor]]] = {True: [], False: []}

    def forward(self, image, text):
        x, y = self.image(image), self.text(text)
        logits = torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(y).T
        loss = torch.nn.functional.cross_entropy(logits / 0.1, torch.arange(len(x)))
        self.seen[self.training].append((x.detach().clone(), y.detach().clone()))
        return {"loss": loss, self.key: x, "text_embeds": y}


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.image, self.text = torch.randn(n, 12, generator=g), torch.randn(n, 10, generator=g)

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, i):
        return {"image": self.image[i], "text": self.text[i]}


def make_trainer(tmp_path, model, **kwargs):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=8,
        learning_rate=0.5,
        logging_steps=50,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        **kwargs,
    )
    return transformers.Trainer(
        model=model, args=args, train_dataset=Pairs(64, 0), eval_dataset=Pairs(24, 1)
    )


def logged(history, step: int, prefix: str) -> dict[str, float]:
    out = {}
    for entry in history:
        if entry["step"] == step:
            out.update(
                {k.removeprefix(prefix): v for k, v in entry.items() if k.startswith(prefix)}
            )
    return out


def test_training_steps_and_evaluation_reach_the_log_history(tmp_path):
    model = TinyClip()
    trainer = make_trainer(tmp_path, model)
    callback = GapscopeTrainerCallback.attach(trainer, every_n_steps=2)
    trainer.train()
    history = trainer.state.log_history
    train = model.seen[True]
    assert len(train) == 4
    for step in (2, 4):
        assert logged(history, step, "gapscope/") == expected([train[step - 1]], "fast")
    assert not logged(history, 1, "gapscope/") and not logged(history, 3, "gapscope/")
    # One evaluation at step 4 over the 24 evaluation rows, with the full report.
    assert sum(len(p[0]) for p in model.seen[False]) == 24
    want = expected(model.seen[False], "full")
    assert logged(history, 4, "eval_gapscope/") == want and len(want) > 50
    assert callback.last["eval"] == {f"eval_gapscope/{k}": v for k, v in want.items()}


def test_evaluate_returns_the_values_and_predict_leaves_no_rows(tmp_path):
    model = TinyClip(key="image_features")
    trainer = make_trainer(tmp_path, model)
    callback = GapscopeTrainerCallback.attach(trainer, every_n_steps=None, eval_preset="fast")
    trainer.predict(Pairs(8, 5))
    assert callback.eval_metric.rows("image") == 0
    model.seen[False].clear()
    metrics = trainer.evaluate(metric_key_prefix="probe")
    want = expected(model.seen[False], "fast")
    assert {
        k.removeprefix("probe_gapscope/"): v for k, v in metrics.items() if "gapscope" in k
    } == want
    callback.detach()
    trainer.evaluate()
    assert callback.eval_metric.rows("image") == 0


def test_outputs_without_embeddings_say_what_to_return(tmp_path):
    trainer = make_trainer(tmp_path, TinyClip(key="something_else"))
    GapscopeTrainerCallback.attach(trainer, every_n_steps=1)
    with pytest.raises(GapscopeError, match="outputs_to_rows"):
        trainer.train()


def test_outputs_to_rows_maps_custom_outputs(tmp_path):
    model = TinyClip(key="picture")
    trainer = make_trainer(tmp_path, model)

    def rows(outputs):
        return {"image": outputs["picture"], "text": outputs["text_embeds"]}

    GapscopeTrainerCallback.attach(trainer, every_n_steps=4, outputs_to_rows=rows, evaluation=False)
    trainer.train()
    assert logged(trainer.state.log_history, 4, "gapscope/") == expected(
        [model.seen[True][3]], "fast"
    )
    assert not logged(trainer.state.log_history, 4, "eval_gapscope/")


def test_a_step_of_several_micro_batches_is_analysed_whole(tmp_path):
    model = TinyClip()
    trainer = make_trainer(tmp_path, model, gradient_accumulation_steps=2)
    trainer.train_dataset = Pairs(128, 0)
    GapscopeTrainerCallback.attach(trainer, every_n_steps=2, evaluation=False)
    trainer.train()
    train = model.seen[True]
    assert len(train) == 8
    for step in (2, 4):
        want = expected(train[2 * step - 2 : 2 * step], "fast")
        assert logged(trainer.state.log_history, step, "gapscope/") == want
        assert [v for k, v in want.items() if k.endswith("n_pairs")] == [32]


@pytest.mark.parametrize("missing", ["transformers", "accelerate"])
def test_without_the_trainer_packages_the_callback_names_the_extra(tmp_path, monkeypatch, missing):
    trainer = make_trainer(tmp_path, TinyClip())
    monkeypatch.setitem(sys.modules, missing, None)  # importing it now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'gapscope\[huggingface\]'"):
        GapscopeTrainerCallback(trainer)
