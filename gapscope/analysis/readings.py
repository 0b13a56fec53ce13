"""Plain-words readings of report values, shown beside the numbers in the terminal and HTML.

The readings use rough bands from the literature (e.g. CLIP ViT-B/32 on MSCOCO has a gap of
about 0.82 in Liang et al. 2022); they orient, they do not judge: compare checkpoints with
``gapscope diff``.

:func:`tone_of` says in which band a value falls: ``"good"`` (the band whose reading is
good news: a small gap, a wide cone, near-uniform rows, close pairs, mixed modalities, true
pairs that outscore non-pairs), ``"worrying"`` (the opposite band) or ``None`` (in between,
or a value without bands: MIR, CKA, recall, effective rank). The views colour values by it
(green, red) and the HTML summary lists them; the bands are the ones the readings use, so a
colour never disagrees with its words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gapscope.analysis import keys as K
from gapscope.data.weights import encoder_name, random_init_seed

__all__ = [
    "GOOD",
    "WORRYING",
    "read_alignment",
    "read_cone",
    "read_cosines",
    "read_cross_uniformity",
    "read_gap",
    "read_intra_vs_cross",
    "read_mmd",
    "read_random_weights",
    "read_separability",
    "read_uniformity",
    "read_value",
    "tone_of",
]

#: The tones of :func:`tone_of`.
GOOD = "good"
WORRYING = "worrying"

# The bands, shared by the readings and the tones: (good below, worrying from).
GAP_SMALL, GAP_LARGE = 0.1, 0.4
ALIGNMENT_CLOSE, ALIGNMENT_FAR = 0.5, 1.2
# Cone and separability: worrying above the second, good at or below the first.
CONE_WIDE, CONE_NARROW = 0.15, 0.5
SEPARABILITY_MIXED, SEPARABILITY_APART = 0.7, 0.95
# Uniformity: shares of the floor -2t (near-uniform below 0.75 of it, concentrated above 0.4).
UNIFORMITY_NEAR, UNIFORMITY_PARTLY = 0.75, 0.4
# Pair AUC (0.5 is chance): gapscope's own rough bands, not from a paper.
AUC_HIGH, AUC_LOW = 0.95, 0.75


def read_gap(gap: float) -> str:
    """Plain-words reading of the modality gap ||mean x - mean y|| (0 to 2 on the sphere).

    >>> read_gap(0.8)
    'large: modalities occupy separate cones'
    """
    if gap < GAP_SMALL:
        return "small: the modalities share one region"
    if gap < GAP_LARGE:
        return "moderate: the modalities overlap only in part"
    return "large: modalities occupy separate cones"


def read_cone(cone: float) -> str:
    """Reading of the cone effect (mean cosine between distinct rows of one modality)."""
    if cone > CONE_NARROW:
        return "narrow cone: rows crowd around one direction"
    if cone > CONE_WIDE:
        return "moderate cone: rows share a common direction"
    return "wide: rows spread over the sphere"


def read_uniformity(u: float, t: float) -> str:
    """Reading of Wang & Isola uniformity; -2t is the value of an orthonormal set, the floor
    that well spread high-dimensional embeddings approach."""
    floor = -2 * t
    if u < UNIFORMITY_NEAR * floor:
        return f"near-uniform (best possible about {floor:g})"
    if u < UNIFORMITY_PARTLY * floor:
        return f"partly spread (best possible about {floor:g})"
    return "concentrated: rows use a small part of the sphere"


def read_cross_uniformity(u: float, t: float) -> str:
    """Reading of the cross-modal uniformity: ``-2t`` is its value when every row of one
    modality is orthogonal to every row of the other.

    >>> read_cross_uniformity(-1.5, 2.0)
    'rows of the two modalities lie closer than orthogonal (about -4 if orthogonal)'
    """
    floor = -2 * t
    side = "closer than" if u > floor else "further apart than"
    return f"rows of the two modalities lie {side} orthogonal (about {floor:g} if orthogonal)"


def read_mmd(mmd2: float) -> str:
    """Reading of the unbiased kernel MMD² between two modalities (0: one distribution).

    >>> read_mmd(0.15)
    'lower is closer: 0 when both modalities share one distribution'
    """
    if mmd2 <= 0:
        return "indistinguishable to the kernel (unbiased: may dip below 0)"
    return "lower is closer: 0 when both modalities share one distribution"


def read_alignment(a: float) -> str:
    """Reading of alignment ||x - y||^2 over true pairs (2 - 2 cos for alpha = 2)."""
    if a < ALIGNMENT_CLOSE:
        return "true pairs lie close together"
    if a < ALIGNMENT_FAR:
        return "true pairs are only loosely aligned"
    return "true pairs are far apart: weak alignment"


def read_cosines(paired: float | None, unpaired: float | None) -> str:
    """Reading of the paired cosine against the unpaired one."""
    if paired is None or unpaired is None:
        return ""
    margin = paired - unpaired
    if margin <= 0:
        return "true pairs are no closer than random pairs"
    return f"true pairs are {margin:.3f} more similar than non-pairs"


def read_separability(accuracy: float) -> str:
    """Reading of the cross-validated accuracy of telling two modalities apart (0.5: chance)."""
    if accuracy > SEPARABILITY_APART:
        return "a linear probe tells the modalities apart: they never mix"
    if accuracy > SEPARABILITY_MIXED:
        return "the modalities are mostly separable"
    return "the modalities mix: hard to tell apart"


def read_intra_vs_cross(
    best_intra: float | None, best_cross: float | None, k: int, *, by_labels: bool
) -> str | None:
    """Compare same-modality with cross-modal retrieval, the question behind "Cross the Gap"
    (Mistretta et al. 2025): does the gap make cross-modal search worse?

    ``best_intra`` and ``best_cross`` are the best recall@K of each kind (``None`` when not
    measured); ``by_labels`` says whether intra-modal relevance came from class labels.

    >>> read_intra_vs_cross(0.8, 0.5, 1, by_labels=False)
    'best intra-modal R@1 is 30.0 points above the best cross-modal R@1'
    """
    if best_intra is None or best_cross is None:
        return None
    name = f"R@{k}"
    diff = 100 * (best_intra - best_cross)
    if abs(diff) < 0.05:
        return f"best intra-modal and best cross-modal {name} are equal"
    word = "above" if diff > 0 else "below"
    # Class labels make intra-modal retrieval easier than matching exact pairs; say so.
    caveat = " (intra-modal relevance is by label, cross-modal by true pair)" if by_labels else ""
    return (
        f"best intra-modal {name} is {abs(diff):.1f} points {word} the best cross-modal "
        f"{name}{caveat}"
    )


def read_value(key: str, value: Any, *, uniformity_t: float = 2.0) -> str | None:
    """The reading of a value that needs nothing beside it: the gap, the cone, uniformity,
    alignment and separability (``uniformity_t`` is the report's ``params.uniformity_t``);
    ``None`` for other keys and for values that are not numbers.

    >>> read_value("cone", 0.6), read_value("mir", 0.1)
    ('narrow cone: rows crowd around one direction', None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    if key == K.GAP.name:
        return read_gap(v)
    if key == K.CONE.name:
        return read_cone(v)
    if key == K.UNIFORMITY.name:
        return read_uniformity(v, uniformity_t)
    if key == K.ALIGNMENT.name:
        return read_alignment(v)
    if key == K.SEPARABILITY.name:
        return read_separability(v)
    return None


def read_random_weights(encoder: Any) -> str | None:
    """The note of a report whose encoder had random weights (``None`` for trained weights
    or no encoder): the numbers describe an untrained network, whatever they look like.

    >>> read_random_weights({"model": "ViT-B-32", "random_init_seed": 0})[:58]
    'random weights: ViT-B-32 was not pretrained (random init, '
    """
    seed = random_init_seed(encoder)
    if seed is None:
        return None
    name = encoder_name(encoder) or "the encoder"
    return (
        f"random weights: {name} was not pretrained (random init, seed {seed}; extracted "
        "without --pretrained), so its embeddings carry no meaning and these numbers describe "
        "an untrained network"
    )


def tone_of(
    key: str,
    value: Any,
    *,
    entry: Mapping[str, Any] | None = None,
    uniformity_t: float = 2.0,
) -> str | None:
    """The band a report value falls in: :data:`GOOD`, :data:`WORRYING` or ``None``.

    ``key`` is the value's leaf key (``gap``, ``cone``, ``uniformity``, ``alignment``,
    ``separability``, ``auc``, ``paired_cosine``); ``entry`` the mapping that holds it (the
    paired cosine is judged against the ``unpaired_cosine`` beside it); ``uniformity_t`` the
    report's ``params.uniformity_t``. Keys without bands, and values that are not numbers,
    give ``None``.

    >>> tone_of("gap", 0.05), tone_of("gap", 0.2), tone_of("gap", 0.82)
    ('good', None, 'worrying')
    >>> tone_of("paired_cosine", 0.3, entry={"unpaired_cosine": 0.35}), tone_of("mir", 0.1)
    ('worrying', None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    if key == K.GAP.name:
        return _band(v, GAP_SMALL, GAP_LARGE)
    if key == K.ALIGNMENT.name:
        return _band(v, ALIGNMENT_CLOSE, ALIGNMENT_FAR)
    if key == K.CONE.name:
        return GOOD if v <= CONE_WIDE else WORRYING if v > CONE_NARROW else None
    if key == K.SEPARABILITY.name:
        return GOOD if v <= SEPARABILITY_MIXED else WORRYING if v > SEPARABILITY_APART else None
    if key == K.UNIFORMITY.name:
        floor = -2 * uniformity_t
        return _band(v, UNIFORMITY_NEAR * floor, UNIFORMITY_PARTLY * floor)
    if key == K.AUC.name:
        return GOOD if v >= AUC_HIGH else WORRYING if v < AUC_LOW else None
    if key == K.PAIRED_COSINE.name:
        unpaired = (entry or {}).get(K.UNPAIRED_COSINE.name)
        if isinstance(unpaired, int | float) and not isinstance(unpaired, bool):
            return WORRYING if v - float(unpaired) <= 0 else None
    return None


def _band(value: float, good_below: float, worrying_from: float) -> str | None:
    """Lower is better: good below the first bound, worrying from the second."""
    if value < good_below:
        return GOOD
    if value >= worrying_from:
        return WORRYING
    return None
