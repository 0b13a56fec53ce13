"""Edge cases of the metrics: uniformity of equal rows, MIR with a huge row, and the note of
an intra-modal retrieval with nothing to retrieve."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from gapscope import analyze
from gapscope.cli import app
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.errors import EmbeddingError
from gapscope.metrics import cross_modal_uniformity, modality_integration_rate, uniformity
from gapscope.metrics.mir import frechet_distance
from gapscope.metrics.uniformity import uniformity_sampled

runner = CliRunner()


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Rows whose products, unclamped, gave a uniformity and a cross-uniformity above 0.
EQUAL_ROWS = [(512, 2, 0), (512, 100, 0), (3, 5, 0), (512, 3000, 0)]


@pytest.mark.parametrize(("d", "n", "seed"), EQUAL_ROWS)
@pytest.mark.parametrize("t", [2.0, 0.3, 40.0])
def test_uniformity_of_equal_rows_is_never_above_zero(d, n, seed, t):
    # n copies of one float32 unit row: their float32 products round above 1 (a squared
    # distance below 0) for some d and seeds.
    rng = np.random.default_rng(seed)
    x = np.tile(_unit_rows(rng, 1, d), (n, 1)).astype(np.float32)
    assert uniformity(x, t=t) <= 0.0
    for block_size in (1, 7):
        assert uniformity(x, t=t, block_size=block_size) <= 0.0
    assert uniformity_sampled(x, t=t, n_queries=2)[0] <= 0.0
    assert cross_modal_uniformity(x, x[:7], t=t) <= 0.0
    assert cross_modal_uniformity(x, x, t=t) <= 0.0


def test_uniformity_of_spread_rows_is_unchanged_by_the_clamp():
    x = _unit_rows(np.random.default_rng(1), 200, 16)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    pairs = d2[np.triu_indices(200, 1)]
    want = float(np.log(np.mean(np.exp(-2.0 * pairs))))
    assert uniformity(x) == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------------- MIR


def _huge_row_pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image, text = _unit_rows(rng, 50, 8), _unit_rows(rng, 50, 8)
    image[3] *= 1e300
    return image, text


def test_mir_replaces_a_huge_row_without_warnings():
    image, text = _huge_row_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = modality_integration_rate(image, text, names=("image", "text"))
    # The row of norm 1e300 is the outlier the step replaces by the median row.
    assert r.outliers_x == 1 and r.outliers_y == 0
    assert np.isfinite(r.mir) and r.scale == pytest.approx(1.0)
    # The Fréchet distance with that row replaced by the coordinate-wise median row.
    fixed = image.copy()
    fixed[3] = np.median(image, axis=0)
    fixed, text = fixed * r.scale, text * r.scale
    want = frechet_distance(fixed.mean(0), np.cov(fixed.T), text.mean(0), np.cov(text.T))
    assert r.fd == pytest.approx(want, rel=1e-9)


def test_mir_errors_name_the_modalities():
    rng = np.random.default_rng(0)
    image, text = _unit_rows(rng, 50, 8) * 1e200, _unit_rows(rng, 50, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(EmbeddingError) as caught:
            modality_integration_rate(image, text, names=("image", "text"))
    message = str(caught.value)
    assert message.startswith("image: its covariance, in units of text's mean norm")
    assert "\n" not in message


def _analyze_mir(tmp_path, image: np.ndarray, text: np.ndarray):
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "text.npy", text)
    args = ["analyze", "--image", tmp_path / "image.npy", "--text", tmp_path / "text.npy"]
    args += ["-q", "-f", "flat", "--metrics", "mir"]
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_mir_with_a_huge_row(tmp_path):
    result = _analyze_mir(tmp_path, *_huge_row_pair())
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert '"image-text/mir_detail/outliers/image": 1' in result.stdout


def test_cli_mir_error_is_one_line_naming_the_modality(tmp_path):
    rng = np.random.default_rng(0)
    result = _analyze_mir(tmp_path, _unit_rows(rng, 50, 8) * 1e200, _unit_rows(rng, 50, 8))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: image: its covariance, in units of text's mean norm")
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ retrieval notes


def _set(labels: dict[str, np.ndarray] | None) -> EmbeddingSet:
    rng = np.random.default_rng(0)
    n = 12
    return EmbeddingSet(
        embeddings={
            "image": rng.normal(size=(n, 6)).astype(np.float32),
            "text": rng.normal(size=(n, 6)).astype(np.float32),
        },
        groups={"image": np.arange(n), "text": np.arange(n)},
        labels=labels or {},
    )


def _retrieval_notes(data: EmbeddingSet) -> list[str]:
    report = analyze(data, metrics="retrieval", device="cpu")
    return [note for note in report.notes if note.startswith("image->image retrieval")]


def test_note_without_labels_asks_for_them():
    (note,) = _retrieval_notes(_set(None))
    assert "no labels were given" in note and "give labels" in note


def test_note_with_singleton_labels_does_not_ask_for_labels():
    labels = {"image": np.arange(12), "text": np.arange(12)}
    (note,) = _retrieval_notes(_set(labels))
    assert "give labels" not in note
    assert "shares its label with another image row" in note


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_whatif_uniformities_of_nearly_equal_rows_are_never_above_zero(seed):

    # Rows within 1e-5 of one point: every uniformity is a hair from 0, where float32 rounding
    # of the moved versions' kernels lifted some above it.
    rng = np.random.default_rng(seed)
    v = rng.normal(size=16)
    x = np.tile(v, (40, 1)) + 1e-5 * rng.normal(size=(40, 16))
    y = np.tile(rng.normal(size=16) - v, (40, 1)) + 1e-5 * rng.normal(size=(40, 16))
    data = {"image": x.astype(np.float32), "text": y.astype(np.float32)}
    report = analyze(data, metrics="uniformity,whatif", device="cpu").to_dict()
    whatif = report["pairs"]["image-text"]["whatif"]
    values = [v for scenario in whatif.values() for v in scenario["uniformity"].values()]
    assert len(values) >= 10 and all(v <= 0.0 for v in values), values


def test_the_restricted_whatif_uniformity_is_never_above_zero():
    # Over 5,000 rows the what-ifs restrict the report's own row terms to their queries; the
    # "original" value they give must be capped as the report's is.
    rng = np.random.default_rng(3)
    n, d = 5200, 64
    v = rng.normal(size=(1, d))
    image = (v + 3e-6 * rng.normal(size=(n, d))).astype(np.float32)
    text = rng.normal(size=(n, d)).astype(np.float32)
    data = {"image": image, "text": text}
    report = analyze(data, metrics="uniformity,retrieval,whatif", device="cpu").to_dict()
    original = report["pairs"]["image-text"]["whatif"]["original"]["uniformity"]["image"]
    assert report["modalities"]["image"]["uniformity"] <= 0.0 and original <= 0.0


def test_a_uniformity_interval_never_lies_above_zero():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(1, 64)).astype(np.float32)
    image = np.repeat(v, 50, 0) * rng.uniform(0.5, 3, (50, 1)).astype(np.float32)
    data = {"image": image, "text": rng.normal(size=(50, 64)).astype(np.float32)}
    entry = analyze(data, metrics=["uniformity"], bootstrap=50, device="cpu").to_dict()
    image_entry = entry["modalities"]["image"]
    low, high = image_entry["uniformity_ci"]
    assert image_entry["uniformity"] <= 0.0 and low <= high <= 0.0
