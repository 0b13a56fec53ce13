"""Plain-words readings of report values, shown beside the numbers in the terminal and HTML.

The readings use rough bands from the literature (e.g. CLIP ViT-B/32 on MSCOCO has a gap of
about 0.82 in Liang et al. 2022); they orient, they do not judge: compare checkpoints with
``gapscope diff``.
"""

from __future__ import annotations

__all__ = [
    "read_alignment",
    "read_cone",
    "read_cosines",
    "read_gap",
    "read_intra_vs_cross",
    "read_separability",
    "read_uniformity",
]


def read_gap(gap: float) -> str:
    """Plain-words reading of the modality gap ||mean x - mean y|| (0 to 2 on the sphere).

    >>> read_gap(0.8)
    'large: modalities occupy separate cones'
    """
    if gap < 0.1:
        return "small: the modalities share one region"
    if gap < 0.4:
        return "moderate: the modalities overlap only in part"
    return "large: modalities occupy separate cones"


def read_cone(cone: float) -> str:
    """Reading of the cone effect (mean cosine between distinct rows of one modality)."""
    if cone > 0.5:
        return "narrow cone: rows crowd around one direction"
    if cone > 0.15:
        return "moderate cone: rows share a common direction"
    return "wide: rows spread over the sphere"


def read_uniformity(u: float, t: float) -> str:
    """Reading of Wang & Isola uniformity; -2t is the value of an orthonormal set, the floor
    that well spread high-dimensional embeddings approach."""
    floor = -2 * t
    if u < 0.75 * floor:
        return f"near-uniform (best possible about {floor:g})"
    if u < 0.4 * floor:
        return f"partly spread (best possible about {floor:g})"
    return "concentrated: rows use a small part of the sphere"


def read_alignment(a: float) -> str:
    """Reading of alignment ||x - y||^2 over true pairs (2 - 2 cos for alpha = 2)."""
    if a < 0.5:
        return "true pairs lie close together"
    if a < 1.2:
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
    if accuracy > 0.95:
        return "a linear probe tells the modalities apart: they never mix"
    if accuracy > 0.7:
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
