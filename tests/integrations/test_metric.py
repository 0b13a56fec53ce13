"""GapMetric: what it accumulates equals analyze() on the same rows computed apart; under
torch.distributed (2 real gloo processes) every process gets the single-process report byte
for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gap_metric_worker import SCENARIOS, alone, batches
from helpers import make_paired
from process_group import run_ranks

import gapscope
from gapscope import analyze
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.integrations.metric import FAST_SAMPLE, PRESETS, GapMetric, rows_from_outputs

WORKER = Path(__file__).parents[1] / "gap_metric_worker.py"


@pytest.mark.parametrize("world", [2, 3])
def test_every_process_gets_the_single_process_report(tmp_path, world):
    run_ranks(WORKER, world, str(tmp_path))
    for scenario in SCENARIOS:
        want = alone(scenario, world)
        assert want.startswith("{"), want  # a report, not an error
        for rank in range(world):
            got = (tmp_path / f"{scenario}-rank-{rank}.txt").read_text()
            assert got == want, (scenario, rank)
    errors = {(tmp_path / f"disagree-rank-{r}.txt").read_text() for r in range(world)}
    assert len(errors) == 1
    assert errors.pop().startswith("error: GapMetric.compute: the processes disagree on the dims")
    # The last process failed in the gather, before the scenarios above: it raised its own
    # error, every other a crash naming it (none waited), and all went on in step.
    for rank in range(world):
        said = (tmp_path / f"failing-rank-{rank}.txt").read_text()
        if rank == world - 1:
            assert said == "MemoryError: no memory for the codes"
        else:
            assert said == (
                f"ProcessCrashedError: process {world - 1} of {world} failed (a crash); "
                "its own message says why"
            )


def test_the_worker_scenarios_are_what_they_claim():
    # The ranks' batches differ in count and rows, and the fast scenario samples.
    sizes = [[len(b["image"]) for b in batches(rank)] for rank in range(3)]
    assert sizes == [[17, 9], [23], [5, 30, 2]]
    fast = alone("fast", 2)
    report = gapscope.Report.from_dict(__import__("json").loads(fast))
    assert any(key.endswith("_se") for key in report.to_flat())  # sampled: standard errors
    assert alone("fast", 2) != alone("fast", 3)


def test_the_metric_equals_analyze_on_the_rows_given():
    image, text, gi, gt, labels, text_labels = make_paired(n=60, captions=2)
    metric = GapMetric("full", device="cpu")
    # Three batches with per-batch groups (0.. in each), as a training loop gives them.
    for lo, hi in ((0, 25), (25, 26), (26, 60)):
        rows = slice(2 * lo, 2 * hi)
        metric.update(
            image=torch.from_numpy(image[lo:hi]),
            text=torch.from_numpy(text[rows]),
            groups={"image": gi[lo:hi] - lo, "text": gt[rows] - lo},
            labels={"image": labels[lo:hi], "text": text_labels[rows]},
        )
    got = metric.compute()
    want = analyze(
        EmbeddingSet(
            embeddings={"image": image, "text": text},
            groups={"image": gi, "text": gt},
            labels={"image": labels, "text": text_labels},
            normalized={"image": None, "text": None},
            source="<training loop>",
        ),
        device="cpu",
    )
    assert got.to_json() == want.to_json()


def test_presets_and_options():
    image, text, *_ = make_paired(n=80, captions=1)
    fast = GapMetric("fast", device="cpu", sample=16)
    fast.update(image=torch.from_numpy(image), text=torch.from_numpy(text))
    chosen = PRESETS["fast"]
    want = analyze({"image": image, "text": text}, metrics=chosen.metrics, sample=16, device="cpu")
    assert fast.compute().to_flat() == want.to_flat()
    assert GapMetric("fast").options["sample"] == FAST_SAMPLE
    assert GapMetric("fast", sample=None).options["sample"] is None
    assert GapMetric("full").options["metrics"] is None
    assert GapMetric("fast", metrics="gap").options["metrics"] == "gap"
    with pytest.raises(GapscopeError, match="preset"):
        GapMetric("quick")
    with pytest.raises(GapscopeError, match="k"):
        GapMetric(k=[0])
    with pytest.raises(GapscopeError, match="sample"):
        GapMetric(sample=1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_updates_equal_their_float32_values(dtype):
    # bfloat16 is widened to float32 on the way in (numpy has none): the same report, input
    # section included; float16 keeps its dtype there, and every value is the same.
    image, text, *_ = make_paired(n=50, captions=1)
    low = GapMetric("full", device="cpu")
    wide = GapMetric("full", device="cpu")
    for half in (slice(0, 20), slice(20, 50)):
        x = torch.from_numpy(image[half]).to(dtype)
        y = torch.from_numpy(text[half]).to(dtype)
        low.update(image=x, text=y)
        wide.update(image=x.float(), text=y.float())
    got, want = low.compute(), wide.compute()
    if dtype == torch.bfloat16:
        assert got.to_json() == want.to_json()
    else:
        assert (got.modalities, got.pairs, got.params) == (want.modalities, want.pairs, want.params)
        assert got.to_flat() == want.to_flat()


def test_rows_are_kept_detached_and_inference_tensors_work():
    image, text, *_ = make_paired(n=30, captions=1)
    x = torch.from_numpy(image).requires_grad_(True)
    metric = GapMetric("fast", device="cpu")
    metric.update(image=x * 1.0, text=torch.from_numpy(text))
    assert not metric._rows["image"][0].requires_grad
    with torch.inference_mode():
        inferred = GapMetric("fast", device="cpu")
        inferred.update(image=torch.from_numpy(image) * 1.0, text=torch.from_numpy(text) * 1.0)
    assert inferred.compute().to_json() == metric.compute().to_json()


def test_reset_and_compute_without_rows():
    metric = GapMetric("fast", device="cpu")
    with pytest.raises(GapscopeError, match="call update"):
        metric.compute()
    metric.update(image=torch.ones(3, 2), text=torch.eye(3, 2) + 1)
    assert metric.rows("image") == 3 and metric.modalities == ("image", "text")
    metric.reset()
    assert metric.rows("image") == 0 and metric.modalities == ()
    with pytest.raises(GapscopeError, match="call update"):
        metric.compute()


def test_bad_values_are_named_at_compute():
    metric = GapMetric("fast", device="cpu")
    metric.update(image=torch.ones(3, 2), text=torch.ones(3, 2))
    bad = torch.ones(2, 2)
    bad[1, 0] = float("nan")
    metric.update(image=torch.ones(2, 2), text=bad)
    with pytest.raises(EmbeddingError, match="text: row 4 contains NaN"):
        metric.compute()


@pytest.mark.parametrize(
    ("first", "second", "match"),
    [
        ({}, {"image": torch.ones(3, 2)}, "two or more modalities"),
        ({}, {"image": torch.ones(3), "text": torch.ones(3)}, "shape \\(rows, dim\\)"),
        ({}, {"image": torch.ones(3, 2, dtype=torch.int64), "text": torch.ones(3, 2)}, "float32"),
        ({}, {"image": torch.ones(3, 2), "text": torch.ones(3, 4)}, "dim 4"),
        ({}, {"image": torch.ones(3, 2), "text": torch.ones(4, 2)}, "row counts differ"),
        ({}, {"image": torch.ones(0, 2), "text": torch.ones(0, 2)}, "shape \\(rows, dim\\)"),
        (
            {"image": torch.ones(2, 2), "text": torch.ones(2, 2)},
            {"image": torch.ones(2, 2), "audio": torch.ones(2, 2)},
            "same modalities",
        ),
        (
            {"image": torch.ones(2, 2), "text": torch.ones(2, 2)},
            {"image": torch.ones(2, 3), "text": torch.ones(2, 3)},
            "dim 3",
        ),
        (
            {"image": torch.ones(2, 2), "text": torch.ones(2, 2)},
            {"image": torch.ones(2, 2, device="meta"), "text": torch.ones(2, 2, device="meta")},
            "one device",
        ),
        (
            {"image": torch.ones(2, 2), "text": torch.ones(2, 2)},
            {"image": torch.ones(2, 2), "text": torch.ones(2, 2), "labels": [0, 1]},
            "labels in every update",
        ),
        (
            {"image": torch.ones(2, 2), "text": torch.ones(2, 2), "labels": [0, 1]},
            {"image": torch.ones(2, 2), "text": torch.ones(2, 2)},
            "labels in every update",
        ),
        ({}, {"image": torch.ones(2, 2), "text": torch.ones(3, 2), "groups": [0, 1]}, "mapping"),
        (
            {},
            {"image": torch.ones(2, 2), "text": torch.ones(2, 2), "groups": [0, 1, 2]},
            "\\(2,\\)",
        ),
        ({}, {"image": torch.ones(2, 2), "text": torch.ones(2, 2), "groups": [0.5, 1]}, "integer"),
        (
            {},
            {"image": torch.ones(2, 2), "text": torch.ones(2, 2), "groups": {"image": [0, 1]}},
            "one vector for each",
        ),
    ],
)
def test_bad_updates_are_one_line_and_keep_the_state(first, second, match):
    metric = GapMetric("fast", device="cpu")
    if first:
        metric.update(**first)
    with pytest.raises(GapscopeError, match=match):
        metric.update(**second)
    assert metric.rows("image") == (2 if first else 0)


def test_global_groups_pair_rows_across_updates():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    metric = GapMetric("full", device="cpu", global_groups=True, metrics="cosine,retrieval")
    with pytest.raises(GapscopeError, match="global_groups=True needs groups"):
        metric.update(image=x, text=x)
    # The image of id 5 comes in the first update, its caption in the second.
    metric.update(image=x[:2], text=x[:2] + 0.1, groups=[5, 6])
    metric.update(image=x[2:], text=x[:1] + 0.2, groups={"image": [7], "text": [5]})
    got = metric.compute()
    want = analyze(
        EmbeddingSet(
            embeddings={"image": x, "text": torch.cat([x[:2] + 0.1, x[:1] + 0.2])},
            groups={"image": np.array([5, 6, 7]), "text": np.array([5, 6, 5])},
            normalized={"image": None, "text": None},
            source="<training loop>",
        ),
        device="cpu",
        metrics="cosine,retrieval",
    )
    assert got.to_json() == want.to_json()
    # Local groups: the same codes in two updates are two different groups.
    local = GapMetric("full", device="cpu", metrics="cosine,retrieval")
    local.update(image=x[:2], text=x[:2] + 0.1, groups=[5, 6])
    local.update(image=x[2:], text=x[:1] + 0.2, groups={"image": [7], "text": [5]})
    assert local.compute().to_json() != got.to_json()


def test_sync_true_without_a_process_group_is_one_line():
    metric = GapMetric("fast", device="cpu", sync=True)
    metric.update(image=torch.ones(2, 2), text=torch.eye(2) + 1)
    with pytest.raises(GapscopeError, match="process group"):
        metric.compute()


def test_rows_from_outputs_reads_the_usual_names():
    class Output:
        image_embeds = torch.ones(2, 3)
        text_embeds = torch.ones(2, 3)

    assert sorted(rows_from_outputs(Output())) == ["image", "text"]
    found = rows_from_outputs(
        {"audio_features": torch.ones(2, 3), "text": torch.ones(2, 3), "labels": [1, 2]}
    )
    assert sorted(found) == ["audio", "labels", "text"]
    assert rows_from_outputs((torch.ones(2, 3), torch.ones(2, 3))) is None


def test_the_package_root_gives_the_metric_lazily():
    assert gapscope.GapMetric is GapMetric


def test_too_few_rows_is_its_own_error_and_the_callbacks_skip_it():
    from gapscope.integrations.metric import TooFewRows, compute_or_warn

    metric = GapMetric("fast")
    with pytest.raises(TooFewRows, match="no embeddings were given"):
        metric.compute()
    metric.update(image=torch.ones(1, 4), text=torch.ones(1, 4))
    with pytest.raises(TooFewRows, match="image has 1 row \\(every process's together\\)"):
        metric.compute()
    with pytest.warns(UserWarning, match="gapscope: eval not logged: GapMetric.compute: image"):
        assert compute_or_warn(metric, "eval") is None
    metric.update(image=torch.randn(3, 4), text=torch.randn(3, 4))
    assert compute_or_warn(metric, "eval", warn=False) is not None
    metric.reset()
    metric.update(image=torch.full((2, 4), float("nan")), text=torch.ones(2, 4))
    with pytest.raises(GapscopeError) as caught:  # bad rows are not "too few": raised
        compute_or_warn(metric, "eval")
    assert not isinstance(caught.value, TooFewRows)
