"""Zero-shot classification: a hand-computed case, CLIP_benchmark's definition on the same
arrays (ties included), sklearn's balanced accuracy, and the class prompts' checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference import clip_benchmark_classifier, clip_benchmark_zeroshot
from sklearn.metrics import balanced_accuracy_score

from gapscope.data.class_prompts import ClassPrompts, class_indices, ensemble_prompts
from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.metrics.zeroshot import class_ranks, zero_shot_classification


def test_hand_computed_case():
    # Three classes along the axes. By hand (scores are the rows' coordinates / their norm):
    #   x0 = (2,1,0), class 0: scores 2, 1, 0 -> rank 0
    #   x1 = (1,3,0), class 0: class 1 scores higher -> rank 1
    #   x2 = (0,1,1), class 1: classes 1 and 2 tie; 2 is the higher index -> rank 0
    #   x3 = (0,1,1), class 2: the same tie; class 1 has the lower index -> rank 1
    #   x4 = (1,1,5), class 2: rank 0
    w = np.eye(3)
    x = np.array([[2, 1, 0], [1, 3, 0], [0, 1, 1], [0, 1, 1], [1, 1, 5]], dtype=np.float64)
    y = np.array([0, 0, 1, 2, 2])
    r = zero_shot_classification(x, w, y, k=(1, 2, 5))
    assert r.rank.tolist() == [0, 1, 0, 1, 0]
    assert r.accuracy == {1: 3 / 5, 2: 1.0, 5: None}  # top-5 undefined with 3 classes
    # Per-class recall: class 0 1/2, class 1 1/1, class 2 1/2.
    assert r.balanced_accuracy == pytest.approx((0.5 + 1.0 + 0.5) / 3, abs=1e-15)
    assert (r.n_queries, r.n_classes, r.n_classes_present) == (5, 3, 3)


def test_top_k_is_defined_from_k_classes_on():
    w = np.eye(5)
    x = np.eye(5)[[0, 1, 2]]
    r = zero_shot_classification(x, w, [0, 1, 3], k=(1, 5))
    assert r.accuracy == {1: 2 / 3, 5: 1.0}


def test_prompt_ensembling_by_hand():
    # Class 0: prompts (3, 4) and (0, 2) -> unit (0.6, 0.8) and (0, 1) -> mean (0.3, 0.9)
    # -> / sqrt(0.9) ; class 1: one prompt (-2, 0) -> (-1, 0).
    w = ensemble_prompts([np.array([[3.0, 4.0], [0.0, 2.0]]), np.array([[-2.0, 0.0]])])
    expected = np.array([[0.3, 0.9], [-1.0, 0.0]]) / np.array([[math.sqrt(0.9)], [1.0]])
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("n_classes", [3, 10])
def test_matches_clip_benchmark_on_random_arrays(n_classes):
    rng = np.random.default_rng(n_classes)
    d, templates, n = 16, 4, 300
    prompts = rng.normal(size=(n_classes, templates, d))
    classifier = clip_benchmark_classifier(prompts)
    w = ensemble_prompts(prompts)
    np.testing.assert_allclose(w, classifier.numpy().T, rtol=0, atol=1e-12)
    y = rng.integers(0, n_classes, n)
    x = 0.7 * w[y] + rng.normal(size=(n, d)) * 0.3
    ours = zero_shot_classification(x, w, y)
    ref = clip_benchmark_zeroshot(x, classifier, y, n_classes)
    assert ours.accuracy[1] == ref["acc1"]
    if n_classes >= 5:
        assert ours.accuracy[5] == ref["acc5"]
    else:
        assert ours.accuracy[5] is None and math.isnan(ref["acc5"])
    assert ours.balanced_accuracy == pytest.approx(ref["mean_per_class_recall"], abs=1e-12)
    assert 0.0 < ours.accuracy[1] < 1.0  # neither trivial nor empty


def test_ties_follow_the_lower_class_index():
    # Duplicated class rows and integer rows make many exactly equal scores; CLIP_benchmark's
    # topk leaves their order open, so the reference ranks with a stable sort (lower index
    # first), the rule gapscope uses for retrieval.
    rng = np.random.default_rng(7)
    base = rng.integers(-1, 2, size=(4, 6)).astype(np.float64)
    base[np.abs(base).sum(axis=1) == 0, 0] = 1.0
    w = np.concatenate([base, base[[0, 2]], base[[1]]])  # 7 classes, 3 duplicates
    x = rng.integers(0, 2, size=(400, 6)).astype(np.float64)
    x[x.sum(axis=1) == 0, 1] = 1.0
    y = rng.integers(0, w.shape[0], 400)
    classifier = torch.from_numpy(ensemble_prompts(w[:, None, :]).T.copy())
    # The exact order of the scores x.w / (|x| |w|) within a row, as integers: a float64
    # product rounds the sums of equal terms in another order differently on some CPUs
    # (MKL on an Intel Xeon with AMX broke a tie this way), so the reference ranks these.
    dots = (x @ w.T).astype(np.int64)
    squares = (w * w).sum(axis=1).astype(np.int64)
    common = math.lcm(*squares.tolist())
    exact = np.sign(dots) * dots * dots * (common // squares)
    logits = exact.astype(np.float64)
    target_scores = logits[np.arange(400), y]
    ties = (logits == target_scores[:, None]).sum(axis=1) - 1
    assert (ties > 0).sum() > 100  # the case is about ties
    ours = zero_shot_classification(x, w, y)
    ref = clip_benchmark_zeroshot(
        x, classifier, y, w.shape[0], stable=True, logits=torch.from_numpy(logits)
    )
    assert ours.accuracy[1] == ref["acc1"] and ours.accuracy[5] == ref["acc5"]
    assert ours.balanced_accuracy == pytest.approx(ref["mean_per_class_recall"], abs=1e-12)
    # The rank rule itself, from the full score matrix.
    expected = [
        int((row > row[t]).sum() + (row[:t] == row[t]).sum())
        for row, t in zip(logits, y, strict=True)
    ]
    assert ours.rank.tolist() == expected


# sklearn warns that classes predicted but absent are left out: what is tested here.
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracy_matches_sklearn_with_missing_classes():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 12))
    y = rng.choice([0, 1, 2, 4, 6], size=150)  # classes 3, 5 and 7 have no rows
    x = w[y] + rng.normal(size=(150, 12))
    r = zero_shot_classification(x, w, y)
    predicted = np.argmax(
        x
        / np.linalg.norm(x, axis=1, keepdims=True)
        @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T,
        axis=1,
    )
    assert r.n_classes_present == 5
    assert r.accuracy[1] == pytest.approx(float(np.mean(predicted == y)), abs=0)
    assert r.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, predicted), abs=1e-12)


def test_ranks_do_not_depend_on_blocks(monkeypatch):
    import gapscope.metrics.zeroshot as zs

    rng = np.random.default_rng(5)
    w = rng.normal(size=(30, 8))
    x = rng.normal(size=(100, 8)).astype(np.float32)
    y = rng.integers(0, 30, 100)
    unit_w = w / np.linalg.norm(w, axis=1, keepdims=True)
    whole = class_ranks(x, unit_w, y)
    monkeypatch.setattr(zs, "_BLOCK_ROWS", 7)
    assert class_ranks(x, unit_w, y).tolist() == whole.tolist()


def test_bad_inputs():
    w = np.eye(3)
    with pytest.raises(EmbeddingError, match="row 1 is class 3, outside 0..2"):
        zero_shot_classification(np.eye(3), w, [0, 3, 1])
    with pytest.raises(EmbeddingError, match="dim 3 differs"):
        zero_shot_classification(np.ones((2, 4)), w, [0, 1])
    with pytest.raises(EmbeddingError, match="expected 2 class indices"):
        zero_shot_classification(np.eye(2, 3), w, [0])
    with pytest.raises(EmbeddingError, match="at least 2 classes"):
        ClassPrompts(np.ones((1, 3)))
    with pytest.raises(EmbeddingError, match="row 1 is zero"):
        ClassPrompts(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(GapscopeError, match="2 names for 3 class embeddings"):
        ClassPrompts(w, names=("a", "b"))
    with pytest.raises(GapscopeError, match="'a' is given twice"):
        ClassPrompts(w, names=("a", "b", "a"))
    with pytest.raises(EmbeddingError, match="cancel out"):
        ensemble_prompts([np.array([[1.0, 0.0], [-1.0, 0.0]])])


def test_class_indices_by_name_or_index():
    prompts = ClassPrompts(np.eye(3), names=("cat", "dog", "fox"))
    assert class_indices(["dog", "fox", "cat"], prompts).tolist() == [1, 2, 0]
    assert class_indices(np.array([2, 0]), prompts).tolist() == [2, 0]
    with pytest.raises(GapscopeError, match=r"row 1 is 'cow', which is not a class \(cat, dog"):
        class_indices(["cat", "cow"], prompts)
    with pytest.raises(GapscopeError, match="row 0 is class 3, outside 0..2"):
        class_indices([3, 1], prompts)
    # Labels beyond int64 are named as they are, not as the wrapped int64 they would cast to.
    with pytest.raises(GapscopeError, match="row 1 is class 9223372036854775808, outside"):
        class_indices(np.array([0, 2**63], dtype=np.uint64), prompts)
    with pytest.raises(GapscopeError, match="row 0 is class 100000000000000000000, outside"):
        class_indices(np.array([1e20, 1.0]), prompts)
    assert class_indices(np.array([2, 1], dtype=np.uint8), prompts).tolist() == [2, 1]
    unnamed = ClassPrompts(np.eye(3))
    with pytest.raises(
        GapscopeError, match=r"no names, so labels must be class indices 0..2; row 0 is 'cat'$"
    ):
        class_indices(["cat"], unnamed)
    with pytest.raises(GapscopeError, match="labels: no labels"):
        class_indices(np.array([], dtype=str), prompts)
