"""Zero-shot accuracy in the report: its values, intervals, what-if sweep, gate and plot, each
against a direct recomputation."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from reference import clip_benchmark_classifier, clip_benchmark_zeroshot, unit
from typer.testing import CliRunner

from gapscope import analyze
from gapscope.analysis.bootstrap import bca_interval, resample_weights
from gapscope.cli import app
from gapscope.data.class_prompts import ClassPrompts
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.metrics.zeroshot import zero_shot_classification
from gapscope.report import report_schema

N_CLASSES, D = 6, 16


def make_data(seed: int = 0, n: int = 90, names: bool = True, shuffle_classes: bool = False):
    """Images and captions around class prototypes, both off-centre (a gap), with class
    prompts near the prototypes on the text side."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(N_CLASSES, D))
    y = rng.integers(0, N_CLASSES, n)
    offset = rng.normal(size=D) * 1.5
    image = protos[y] + rng.normal(size=(n, D)) + offset
    text = protos[y] + 0.6 * rng.normal(size=(n, D)) - offset
    prompts = protos - offset + 0.3 * rng.normal(size=(N_CLASSES, D))
    if shuffle_classes:
        prompts = prompts[rng.permutation(N_CLASSES)]
    class_names = tuple(f"class{i}" for i in range(N_CLASSES))
    classes = ClassPrompts(prompts, names=class_names if names else None)
    labels = [class_names[c] for c in y] if names else y
    data = EmbeddingSet.from_arrays(
        {"image": image, "text": text}, labels={"image": labels}, classes=classes
    )
    return data, image, text, prompts, y


def test_report_values_are_clip_benchmark_s():
    data, image, _, prompts, y = make_data()
    report = analyze(data, metrics="gap,zeroshot", device="cpu")
    entry = report.pairs["image-text"]["zeroshot"]
    ref = clip_benchmark_zeroshot(image, clip_benchmark_classifier(prompts[:, None]), y, N_CLASSES)
    assert entry["classified"] == "image"
    assert entry["top1_accuracy"] == pytest.approx(ref["acc1"], abs=1e-8)
    assert entry["top5_accuracy"] == pytest.approx(ref["acc5"], abs=1e-8)
    assert entry["balanced_accuracy"] == pytest.approx(ref["mean_per_class_recall"], abs=1e-8)
    assert (entry["n_queries"], entry["n_classes"], entry["n_classes_present"]) == (90, 6, 6)
    assert 0.3 < entry["top1_accuracy"] < 1.0
    jsonschema.validate(json.loads(report.to_json()), report_schema())


def test_integer_labels_are_class_indices():
    named, *_ = make_data(names=True)
    indexed, *_ = make_data(names=False)
    a = analyze(named, metrics="zeroshot", device="cpu").pairs["image-text"]["zeroshot"]
    b = analyze(indexed, metrics="zeroshot", device="cpu").pairs["image-text"]["zeroshot"]
    assert a == b


def _groups_bootstrap(hits_fn, groups, n_resamples, seed, confidence):
    """Resample groups with the analysis's own draws and recompute from the rows; the BCa
    interval's estimate and jackknife are recomputed from the rows too (every weight 1, and
    one group's weight 0 in turn)."""
    n_groups = int(groups.max()) + 1
    values = []
    for weights in resample_weights(n_groups, n_resamples, seed):
        for w in weights:
            values.append(hits_fn(w[groups]))
    estimate = hits_fn(np.ones(groups.shape[0]))
    jackknife = np.array([hits_fn((groups != g).astype(float)) for g in range(n_groups)])
    return bca_interval(np.array(values), estimate, jackknife, confidence)


def test_intervals_are_a_bootstrap_of_the_rows():
    data, image, _, prompts, y = make_data()
    report = analyze(data, metrics="zeroshot", device="cpu", bootstrap=60, seed=4)
    entry = report.pairs["image-text"]["zeroshot"]
    direct = zero_shot_classification(image, prompts, y)
    hit1, hit5 = direct.rank == 0, direct.rank < 5
    groups = np.arange(image.shape[0])  # plain arrays: each row its own group

    def top(hits):
        return lambda w: float((w * hits).sum() / w.sum())

    def balanced(w):
        recall = [
            (w * hit1 * (y == c)).sum() / (w * (y == c)).sum()
            for c in range(N_CLASSES)
            if (w * (y == c)).sum() > 0
        ]
        return float(np.mean(recall))

    for key, fn in (
        ("top1_accuracy", top(hit1)),
        ("top5_accuracy", top(hit5)),
        ("balanced_accuracy", balanced),
    ):
        expected = _groups_bootstrap(fn, groups, 60, 4, 0.95)
        assert entry[f"{key}_ci"] == pytest.approx(list(expected), abs=1e-8), key
        low, high = entry[f"{key}_ci"]
        assert low <= entry[key] <= high
    again = analyze(data, metrics="zeroshot", device="cpu", bootstrap=60, seed=4)
    assert again.to_json() == report.to_json()
    other = analyze(data, metrics="zeroshot", device="cpu", bootstrap=60, seed=5)
    assert other.pairs["image-text"]["zeroshot"] != entry


def test_intervals_resample_groups():
    # Two captions an image and the image's label; groups tie each image to its captions.
    data, image, text, prompts, y = make_data(n=60)
    groups = np.arange(60)
    data = EmbeddingSet.from_arrays(
        {"image": image, "text": np.concatenate([text, text[::-1]])},
        groups={"image": groups, "text": np.concatenate([groups, groups[::-1]])},
        labels={"image": y},
        classes=ClassPrompts(prompts),
    )
    report = analyze(data, metrics="zeroshot", device="cpu", bootstrap=40, seed=1)
    entry = report.pairs["image-text"]["zeroshot"]
    hit1 = zero_shot_classification(image, prompts, y).rank == 0
    expected = _groups_bootstrap(lambda w: float((w * hit1).sum() / w.sum()), groups, 40, 1, 0.95)
    assert entry["top1_accuracy_ci"] == pytest.approx(list(expected), abs=1e-8)


def _shifted_accuracy(image, text, prompts, y, fraction=None, centered=False):
    """Zero-shot accuracy after a what-if, from the moved arrays themselves."""
    u, t, w = unit(image), unit(text), unit(prompts)
    if centered:
        u2, w2 = u - u.mean(0), w - t.mean(0)
    else:
        g = u.mean(0) - t.mean(0)
        u2, w2 = u - fraction / 2 * g, w + fraction / 2 * g
    ref = clip_benchmark_zeroshot(u2, clip_benchmark_classifier(w2[:, None]), y, N_CLASSES)
    return ref["acc1"], ref["mean_per_class_recall"]


def test_whatif_sweep_reports_accuracy_on_the_moved_arrays():
    data, image, text, prompts, y = make_data(seed=2)
    report = analyze(data, metrics="zeroshot,whatif", device="cpu")
    pair = report.pairs["image-text"]
    whatif = pair["whatif"]
    assert set(whatif) == {
        "original",
        "centered",
        "shift_-1.0",
        "shift_-0.5",
        "shift_0.5",
        "shift_1.0",
    }
    for key in ("top1_accuracy", "top5_accuracy", "balanced_accuracy"):
        assert whatif["original"]["zeroshot"][key] == pair["zeroshot"][key]
    cases = [("centered", None, True)] + [
        (f"shift_{f!r}", f, False) for f in (-1.0, -0.5, 0.5, 1.0)
    ]
    seen = set()
    for name, fraction, centered in cases:
        acc1, balanced = _shifted_accuracy(image, text, prompts, y, fraction, centered)
        got = whatif[name]["zeroshot"]
        assert got["top1_accuracy"] == pytest.approx(acc1, abs=1e-8), name
        assert got["balanced_accuracy"] == pytest.approx(balanced, abs=1e-8), name
        seen.add(got["top1_accuracy"])
    assert len(seen) > 1  # the moves change the classification


def test_notes_when_nothing_can_be_classified():
    data, image, text, prompts, _ = make_data()
    unlabelled = EmbeddingSet.from_arrays(
        {"image": image, "text": text}, classes=ClassPrompts(prompts)
    )
    report = analyze(unlabelled, metrics="zeroshot", device="cpu")
    assert "zeroshot" not in report.pairs["image-text"]
    assert any("image has no labels" in n for n in report.notes)
    audio = EmbeddingSet.from_arrays(
        {"image": image, "audio": text},
        labels={"image": np.zeros(90, int)},
        classes=ClassPrompts(prompts),
    )
    report = analyze(audio, metrics="zeroshot", device="cpu")
    assert any("stand for text, which this input does not have" in n for n in report.notes)


def _save(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return str(path)


def test_cli_arrays_check_gates_a_drop(tmp_path):
    data, image, text, prompts, y = make_data()
    runner = CliRunner()
    img, txt = _save(tmp_path, "img.npy", image), _save(tmp_path, "txt.npy", text)
    labels = _save(tmp_path, "labels.npy", np.array([f"class{c}" for c in y]))
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(f"class{i}" for i in range(N_CLASSES)) + "\n")
    good = _save(tmp_path, "good.npy", prompts)
    bad = _save(tmp_path, "bad.npy", prompts[[1, 2, 3, 4, 5, 0]])  # names no longer fit
    reports = {}
    for name, classes in (("base", good), ("cur", bad)):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(
            app,
            [
                "analyze", "--image", img, "--text", txt, "--labels", f"image={labels}",
                "--classes", classes, "--class-names", str(names), "--metrics",
                "gap,zeroshot", "--device", "cpu", "-f", "json", "-o", str(out),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(out.read_text())["pairs"]["image-text"]["zeroshot"]
    assert reports["cur"]["top1_accuracy"] < reports["base"]["top1_accuracy"] - 0.2
    result = runner.invoke(
        app, ["check", str(tmp_path / "cur.json"), "--baseline", str(tmp_path / "base.json")]
    )
    assert result.exit_code == 1, result.output
    assert "regressed: image-text/zeroshot/top1_accuracy" in " ".join(result.output.split())
    same = runner.invoke(
        app, ["check", str(tmp_path / "base.json"), "--baseline", str(tmp_path / "base.json")]
    )
    assert same.exit_code == 0, same.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("labels", "image labels: row 0 is 'zebra', which is not a class (class0, class1"),
        ("dim", "classes: dim 8 differs from the embeddings' 16"),
        ("names-only", "--class-names names the rows of --classes: give --classes too"),
        ("index", "image labels: row 0 is class 6, outside 0..5 (6 classes)"),
        ("one-name", "names one class ('class0'); zero-shot classification needs at least 2"),
    ],
)
def test_cli_bad_class_input_is_one_line_exit_2(tmp_path, change, message):
    _, image, text, prompts, y = make_data()
    img, txt = _save(tmp_path, "img.npy", image), _save(tmp_path, "txt.npy", text)
    values = np.array([f"class{c}" for c in y])
    if change == "labels":
        values[0] = "zebra"
    if change == "index":
        values = y.copy()
        values[0] = 6
    labels = _save(tmp_path, "labels.npy", values)
    classes = _save(tmp_path, "c.npy", prompts[:, :8] if change == "dim" else prompts)
    names = tmp_path / "classes.txt"
    count = 1 if change == "one-name" else N_CLASSES
    names.write_text("\n".join(f"class{i}" for i in range(count)) + "\n")
    args = ["analyze", "--image", img, "--text", txt, "--labels", f"image={labels}"]
    if change != "names-only":
        args += ["--classes", classes]
    if change != "index":
        args += ["--class-names", str(names)]
    result = CliRunner().invoke(app, [*args, "--metrics", "zeroshot", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_plot_draws_accuracy_and_recall_against_the_shift(tmp_path):
    pytest.importorskip("matplotlib")
    from gapscope.report.plots import PIXELS, plot_all, plot_whatif_sweep

    data, *_ = make_data(seed=2)
    report = analyze(data, metrics="gap,retrieval,zeroshot,whatif", device="cpu")
    plot = plot_whatif_sweep(report.context, "image", "text", tmp_path / "sweep.png")
    assert plot.path is not None and plot.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    whatif = report.pairs["image-text"]["whatif"]
    assert plot.data["fraction"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    order = ["shift_-1.0", "shift_-0.5", "original", "shift_0.5", "shift_1.0"]
    curves = plot.data["curves"]
    assert curves["zero-shot top-1"] == pytest.approx(
        [whatif[s]["zeroshot"]["top1_accuracy"] for s in order], abs=1e-8
    )
    assert curves["image->text R@1"] == pytest.approx(
        [whatif[s]["recall"]["image->text"]["R@1"] for s in order], abs=1e-8
    )
    assert plot.data["centered"]["zero-shot top-1"] == pytest.approx(
        whatif["centered"]["zeroshot"]["top1_accuracy"], abs=1e-8
    )
    drawn = plot_all(report, tmp_path / "all", points=20, links=5, umap=False)
    assert "whatif-image-text.png" in {p.path.name for p in drawn.plots}
    assert (tmp_path / "all" / "whatif-image-text.png").stat().st_size > 0
    assert plot.data["axes"] == {
        "x": "shift along the gap (fraction of the gap closed; < 0 widens it)",
        "y": "accuracy / recall@1",
    }
    from PIL import Image

    assert Image.open(plot.path).size == PIXELS


def test_a_store_s_class_prompts_are_read_with_its_labels(example_store, tmp_path):
    import shutil

    from gapscope.data.class_prompts import write_store_classes
    from gapscope.data.store import EmbeddingStore

    store_path = tmp_path / "store"
    shutil.copytree(example_store, store_path)
    store = EmbeddingStore.open(store_path)
    items = store.items("text")
    names = sorted({item["label"] for item in items})
    text = np.asarray(store.embeddings("text"), dtype=np.float64)
    text_labels = np.array([item["label"] for item in items])
    prompts = np.stack([unit(text[text_labels == name]).mean(0) for name in names])
    write_store_classes(store_path, ClassPrompts(prompts, names=names), store.encoder)
    report = analyze(store_path, metrics="zeroshot", device="cpu")
    entry = report.pairs["image-text"]["zeroshot"]
    image_labels = [names.index(item["label"]) for item in store.items("image")]
    direct = zero_shot_classification(store.embeddings("image"), prompts, image_labels)
    assert entry["top1_accuracy"] == pytest.approx(direct.accuracy[1], abs=1e-8)
    assert entry["top5_accuracy"] == pytest.approx(direct.accuracy[5], abs=1e-8)
    assert entry["balanced_accuracy"] == pytest.approx(direct.balanced_accuracy, abs=1e-8)
    assert entry["n_classes"] == len(names) and entry["n_queries"] == 300


def test_terminal_and_html_show_the_task_next_to_the_geometry():
    from rich.console import Console

    from gapscope.report.html import render_html
    from gapscope.report.terminal import render_report

    data, *_ = make_data(seed=2)
    report = analyze(data, metrics="gap,zeroshot,whatif", device="cpu", bootstrap=20)
    entry = report.pairs["image-text"]["zeroshot"]
    console = Console(record=True, width=160)
    render_report(report, console)
    text = console.export_text()
    low, high = entry["top1_accuracy_ci"]
    shown = f"zero-shot top-1 │ {entry['top1_accuracy']:.4f} [{low:.4f}, {high:.4f}] │"
    assert shown in " ".join(text.split())
    assert "zero-shot" in text.split("what-ifs")[1]  # the what-if table's column
    centred = report.pairs["image-text"]["whatif"]["centered"]["zeroshot"]["top1_accuracy"]
    assert f"{100 * centred:.1f}%" in text.split("mean-centred")[1].splitlines()[0]
    page = render_html(report, plots=[])
    assert "zero-shot top-1 / balanced" in page and "zero-shot balanced" in page


def test_one_labelled_modality_is_analysed_against_its_class_prompts(tmp_path):
    # A classification dataset: images and labels, no captions. The prompts stand in for the
    # text rows and each image pairs with its class's prompt, so image->text retrieval is the
    # zero-shot classification itself, under the same tie rule, in every what-if too.
    _, image, _, prompts, y = make_data(seed=3, n=120)
    img, labels = _save(tmp_path, "img.npy", image), _save(tmp_path, "y.npy", y)
    classes = _save(tmp_path, "c.npy", prompts)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app,
        [
            "analyze", "--image", img, "--labels", labels, "--classes", classes,
            "--metrics", "gap,retrieval,zeroshot,whatif", "--device", "cpu", "-f", "json",
            "-o", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    pair = data["pairs"]["image-text"]
    assert data["input"]["modalities"]["text"]["n"] == N_CLASSES
    assert pair["zeroshot"]["top1_accuracy"] == pair["recall"]["image->text"]["R@1"]
    assert pair["zeroshot"]["top5_accuracy"] == pair["recall"]["image->text"]["R@5"]
    assert 0.2 < pair["zeroshot"]["top1_accuracy"] < 1.0
    for name, scenario in pair["whatif"].items():
        recall = scenario["recall"]["image->text"]["R@1"]
        assert scenario["zeroshot"]["top1_accuracy"] == recall, name
    assert any("class prompts stand in for the text rows" in n for n in data["notes"])
    direct = zero_shot_classification(image, prompts, y)
    assert pair["zeroshot"]["top1_accuracy"] == pytest.approx(direct.accuracy[1], abs=1e-8)
