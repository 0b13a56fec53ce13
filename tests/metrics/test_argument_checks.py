"""Arguments of the wrong kind get a gapscope error naming the argument, never a bare
TypeError, AttributeError or ZeroDivisionError from inside a metric."""

from __future__ import annotations

import numpy as np
import pytest

from gapscope import analyze
from gapscope.analysis.whatif import gap_closing_whatif, shift_along_gap
from gapscope.errors import GapscopeError
from gapscope.metrics import uniformity_sampled
from gapscope.metrics.alignment import alignment_from_cosine_total
from gapscope.metrics.cka import linear_cka
from gapscope.metrics.effective_rank import dimensional_collapse
from gapscope.metrics.gap_direction import gap_direction
from gapscope.metrics.gram_volume import gram_volume
from gapscope.metrics.similarity_stats import similarity_stats

X = np.random.default_rng(0).normal(size=(10, 4))
Y = X + 1.0

CASES = {
    "uniformity_sampled of a list": (
        lambda: uniformity_sampled(X.tolist(), n_queries=3),
        "x: expected a numpy array or torch tensor, got list",
    ),
    "uniformity_sampled of None": (
        lambda: uniformity_sampled(None, n_queries=3),
        "x: expected a numpy array or torch tensor, got NoneType",
    ),
    "linear_cka max_pairs 2.5": (
        lambda: linear_cka(X, Y, max_pairs=2.5),
        "max_pairs: expected an integer >= 2, got 2.5",
    ),
    "similarity_stats max_negatives '5'": (
        lambda: similarity_stats(X, Y, max_negatives="5"),
        "max_negatives: expected a positive integer, got '5'",
    ),
    "similarity_stats max_negatives 2.5": (
        lambda: similarity_stats(X, Y, max_negatives=2.5),
        "max_negatives: expected a positive integer, got 2.5",
    ),
    "dimensional_collapse top 2.5": (
        lambda: dimensional_collapse(X, 2.5),
        "top: numbers of components must be positive integers, got 2.5",
    ),
    "gap_direction top '3'": (
        lambda: gap_direction(X, Y, top="3"),
        "top: numbers of directions must be positive integers, got '3'",
    ),
    "gap_direction top ()": (
        lambda: gap_direction(X, Y, top=()),
        "top: expected at least one of the numbers of directions, got none",
    ),
    "gram_volume of a number": (
        lambda: gram_volume(3),
        "embeddings: expected a sequence of modalities, got int",
    ),
    "gram_volume max_tuples 0.5": (
        lambda: gram_volume([X, Y], max_tuples=0.5),
        "max_tuples: expected a positive integer, got 0.5",
    ),
    "alignment_from_cosine_total of no pairs": (
        lambda: alignment_from_cosine_total(0.0, 0),
        "n_pairs: expected a positive count, got 0",
    ),
    "gap_closing_whatif max_queries '3'": (
        lambda: gap_closing_whatif(X, Y, max_queries="3"),
        "max_queries: expected an integer >= 2, got '3'",
    ),
    "shift_along_gap fraction None": (
        lambda: shift_along_gap(X, Y, None),
        "fraction: expected a finite number, got None",
    ),
    "gap_closing_whatif shift_fractions with a string": (
        lambda: gap_closing_whatif(X, Y, shift_fractions=(0.5, "a")),
        "shift_fractions: expected a finite number, got 'a'",
    ),
    "analyze k 1.5": (
        lambda: analyze({"image": X, "text": Y}, metrics="retrieval", k=1.5),
        "k must be positive integers like 1,5,10, got 1.5",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_argument_is_named(case):
    call, message = CASES[case]
    with pytest.raises(GapscopeError) as caught:
        call()
    assert str(caught.value) == message


def test_one_cutoff_and_a_generator_of_modalities_are_taken_as_given():
    """k=1 is k=(1,) for analyze as for the metric functions, and a generator of modalities
    is read once, as the list of them."""
    data = {"image": X.astype(np.float32), "text": Y.astype(np.float32)}
    single = analyze(data, metrics="retrieval", k=1).to_dict()
    assert single == analyze(data, metrics="retrieval", k=(1,)).to_dict()
    assert gram_volume(iter([X, Y])) == gram_volume([X, Y])
    scenarios = gap_closing_whatif(X, Y, k=1, shift_fractions=(1.0,))
    assert scenarios == gap_closing_whatif(X, Y, k=(1,), shift_fractions=(1.0,))
