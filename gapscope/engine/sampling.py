"""Every random draw gapscope makes, each from a named seed stream.

A draw is ``numpy.random.default_rng([seed, stream])`` with ``seed`` the user's seed and
``stream`` a number from :class:`Stream`, so turning one feature on or off never changes the
draws of another (the bootstrap's resamples do not move when ``--sample`` is added), and the
same seed gives the same draws in every run. Streams drawn per modality add the modality's
slot (image 0, text 1, audio 2), so adding a modality to a store does not change the rows
drawn for the others; any other modality name gets its own third entropy word.
"""

from __future__ import annotations

import zlib
from enum import IntEnum

import numpy as np

from gapscope.errors import GapscopeError

__all__ = ["SEED_MAX", "Stream", "check_seed", "generator", "sample_rows"]

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
