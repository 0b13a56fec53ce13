"""Every random draw gapscope makes, each from a named seed stream.

A draw is ``numpy.random.default_rng([seed, stream])`` with ``seed`` the user's seed and
``stream`` a number from :class:`Stream`, so turning one feature on or off never changes the
draws of another (the bootstrap's resamples do not move when ``--sample`` is added), and the
same seed gives the same draws in every run. Streams drawn per modality add the modality's
slot (image 0, text 1, audio 2), so adding a modality to a store does not change the rows
drawn for the others; any other modality name gets its own third entropy word.

One draw is older than the streams and keeps its own generator: the separability probe's
cross-validation folds (:func:`stratified_folds`) are shuffled as scikit-learn's
``StratifiedKFold(shuffle=True, random_state=seed)`` shuffles them, from
``numpy.random.RandomState(seed)``, so that the probe's accuracies are scikit-learn's.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from enum import IntEnum

import numpy as np

from gapscope.errors import GapscopeError

__all__ = ["SEED_MAX", "Stream", "check_seed", "generator", "sample_rows", "stratified_folds"]

#: The largest seed: scikit-learn's estimators take seeds of 32 bits, and every draw must
#: accept the seed a report records.
SEED_MAX = 2**32 - 1


class Stream(IntEnum):
    """The seed streams, one a use. Values are part of the reproducibility contract: a
    report records the seed, and these numbers turn it into draws."""

    #: ``--sample``: the query rows of a modality (uniformity and retrieval share them).
    QUERIES = 0
    #: The query rows of the gap-closing what-ifs, when a modality has more than their cap.
    WHATIF_QUERIES = 10
    #: Points of the 2-D projection plot, per modality.
    PROJECTION_POINTS = 20
    #: True pairs linked by a line in the projection plot.
    PROJECTION_LINKS = 30
    #: Rows of the pair's first and second modality for the separability probe.
    SEPARABILITY_ROWS_X = 50
    SEPARABILITY_ROWS_Y = 51
    #: Positive pairs for linear CKA.
    CKA_PAIRS = 60
    #: Negative pairs for the similarity statistics.
    NEGATIVE_PAIRS = 70
    #: Tuples for the GRAM volume.
    GRAM_TUPLES = 80
    #: The bootstrap's group resamples.
    BOOTSTRAP = 101


_SLOTS = {"image": 0, "text": 1, "audio": 2}


def check_seed(seed: object) -> int:
    """``seed`` as an ``int``, checked: an integer from 0 to :data:`SEED_MAX`.

    >>> check_seed(7)
    7
    >>> check_seed(-1)
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: seed: expected an integer from 0 to 4294967295, got -1
    """
    if (
        isinstance(seed, bool)
        or not isinstance(seed, int | np.integer)
        or not 0 <= int(seed) <= SEED_MAX
    ):
        raise GapscopeError(f"seed: expected an integer from 0 to {SEED_MAX}, got {seed!r}")
    return int(seed)


def generator(seed: int, stream: Stream, modality: str | None = None) -> np.random.Generator:
    """The generator of ``stream`` (for ``modality``, if the stream is drawn per modality).

    >>> a = generator(0, Stream.QUERIES, "text").integers(1000, size=3)
    >>> b = generator(0, Stream.QUERIES, "text").integers(1000, size=3)
    >>> c = generator(0, Stream.QUERIES, "image").integers(1000, size=3)
    >>> bool((a == b).all()), bool((a == c).all())
    (True, False)
    """
    seed = check_seed(seed)
    if modality is None:
        return np.random.default_rng([seed, int(stream)])
    slot = _SLOTS.get(modality)
    if slot is not None:
        return np.random.default_rng([seed, int(stream) + slot])
    return np.random.default_rng([seed, int(stream), zlib.crc32(modality.encode("utf-8"))])


def sample_rows(
    n: int, limit: int | None, seed: int, stream: Stream, modality: str | None = None
) -> np.ndarray | None:
    """Sorted, seeded sample of ``limit`` distinct rows of ``n``, or ``None`` for all rows.

    >>> sample_rows(10, None, 0, Stream.QUERIES) is None
    True
    >>> sample_rows(10, 20, 0, Stream.QUERIES) is None
    True
    >>> sample_rows(10, 3, 0, Stream.QUERIES).size
    3
    """
    check_seed(seed)
    if limit is None or limit >= n:
        return None
    rng = generator(seed, stream, modality)
    return np.sort(rng.choice(n, size=limit, replace=False))


def stratified_folds(
    target: np.ndarray, folds: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` row indices of each of ``folds`` stratified folds of ``target``
    (integer classes), shuffled: the splits of scikit-learn's ``StratifiedKFold(folds,
    shuffle=True, random_state=seed).split``, index for index.

    Sorted by class (classes in order of first appearance), the rows' fold numbers are dealt
    round robin, so each fold holds each class's rows within one; each class's fold numbers
    are then shuffled by one ``RandomState(seed)``, class after class. Test rows of fold ``i``
    are those numbered ``i``, the training rows the others, both in row order.

    >>> [test.tolist() for _, test in stratified_folds(np.array([0, 0, 1, 1]), 2, 0)]
    [[1, 2], [0, 3]]
    """
    _, first, inverse = np.unique(target, return_index=True, return_inverse=True)
    _, by_first = np.unique(first, return_inverse=True)
    encoded = by_first[inverse]
    classes = first.size
    in_order = np.sort(encoded)
    allocation = np.asarray(
        [np.bincount(in_order[i::folds], minlength=classes) for i in range(folds)]
    )
    rng = np.random.RandomState(seed)
    numbers = np.empty(target.size, dtype=np.int64)
    for k in range(classes):
        dealt = np.arange(folds).repeat(allocation[:, k])
        rng.shuffle(dealt)
        numbers[encoded == k] = dealt
    rows = np.arange(target.size)
    for i in range(folds):
        test = numbers == i
        yield rows[~test], rows[test]
