"""The report's vocabulary: every key of the JSON report, spelled once, with its direction.

A report (schema ``gapscope.report/2``) has three sections of metrics:

```
modalities.<m>.<key>              cone, uniformity, effective rank, ..., recall.<m>-><m>
pairs.<a>-<b>.<key>               gap, cosines, alignment, uniformity, mir, recall.<a>-><b>,
                                  zeroshot, ...
tuples.<a>-<b>-<c>.<key>          GRAM volume
```

Every key a metric family writes is a :class:`Key` below; :mod:`gapscope.analysis.families`
says which family writes which, and the views and the gate read them from here, never as
string literals of their own. The derived keys are rules: ``<key>_ci`` (a bootstrap interval,
``[low, high]``), ``<key>_se`` (a standard error of a sampled estimate), ``R@<K>`` (recall at
K). A *detail* key (an interval bound, a standard error, anything inside a what-if) describes
a metric or a hypothetical fix rather than the checkpoint, and is never gated.

This module imports nothing heavy: the gate reads it without loading torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gapscope.errors import GapscopeError

__all__ = [
    "DIRECTIONS",
    "INPUT",
    "KEYS",
    "METRIC_SECTIONS",
    "PARAMS",
    "SECTIONS",
    "Key",
    "ci_key",
    "direction_of",
    "is_detail_key",
    "metric_leaf",
    "recall_key",
    "scenario_key",
    "se_key",
    "tracker_key",
]

HIGHER = "higher"
LOWER = "lower"


@dataclass(frozen=True)
class Key:
    """One key of the report.

    Attributes:
        name: the key as it appears in the JSON (for recall, the pattern ``R@K``).
        direction: ``"lower"`` or ``"higher"`` is better; ``None`` for a key that describes
            rather than judges (counts, details, positions).
        doc: what the value is, in one line.
    """

    name: str
    direction: str | None = None
    doc: str = ""

    def __str__(self) -> str:
        return self.name


# ------------------------------------------------------------------ pairs: geometry
GAP = Key("gap", LOWER, "||mean x - mean y|| of the unit rows (Liang et al. 2022)")
CENTROID_COSINE = Key("centroid_cosine", HIGHER, "cosine between the two centroids")
CENTROID_NORMS = Key("centroid_norms", None, "||mean|| of each modality's unit rows")
GAP_CONCENTRATION = Key("gap_concentration", None, "share of ||g||^2 in its top coordinates")
TOP1 = Key("top1", None, "share in the largest coordinate")
TOP10 = Key("top10", None, "share in the 10 largest coordinates")
PAIRED_COSINE = Key("paired_cosine", HIGHER, "mean cosine over positive pairs")
UNPAIRED_COSINE = Key("unpaired_cosine", LOWER, "mean cosine over every other cross pair")
N_PAIRS = Key("n_pairs", None, "number of positive pairs")
ALIGNMENT = Key("alignment", LOWER, "mean ||x_i - y_j||^alpha over positive pairs")
MIR = Key("mir", LOWER, "log10 Frechet distance after text-centric scaling (Huang et al.)")
MIR_DETAIL = Key("mir_detail", None, "how MIR was obtained")
FD = Key("fd", None, "the Frechet distance MIR is the log10 of")
SCALE = Key("scale", None, "1 / mean norm of the scaling modality")
SCALE_FROM = Key("scale_from", None, "the modality MIR scales by")
OUTLIERS = Key("outliers", None, "rows replaced as norm outliers, per modality")
OUTLIER_STEP_SKIPPED = Key("outlier_step_skipped", None, "per modality: norms all equal")
FULL_RANK = Key("full_rank", None, "both covariances full rank")
CROSS_UNIFORMITY = Key(
    "cross_uniformity", None, "log mean exp(-t ||x_i - y_j||^2) over every cross pair (Fahim)"
)
MMD2 = Key("mmd2", LOWER, "unbiased kernel MMD^2 between the modalities, uniformity's kernel")

# ------------------------------------------------------------------ modalities
CONE = Key("cone", LOWER, "mean cosine between distinct rows (Liang et al. 2022)")
UNIFORMITY = Key("uniformity", LOWER, "log mean exp(-t ||x_i - x_j||^2) (Wang & Isola 2020)")
EFFECTIVE_RANK = Key("effective_rank", HIGHER, "exp of the entropy of the singular values")
EFFECTIVE_RANK_RATIO = Key("effective_rank_ratio", HIGHER, "effective rank / dimension")
VARIANCE_TOP1 = Key("variance_top1", LOWER, "variance share of the top component")
VARIANCE_TOP10 = Key("variance_top10", LOWER, "variance share of the top 10 components")

# ------------------------------------------------------------------ retrieval
RECALL = Key("recall", None, "retrieval entries by direction, 'q->k'")
RECALL_AT = Key("R@K", HIGHER, "share of queries with a relevant key in their top K")
MAP = Key("mAP", HIGHER, "mean average precision (intra-modal)")
R_PRECISION = Key("R-precision", HIGHER, "precision in the top R, R relevant rows (intra)")
MEAN_RANK = Key("mean_rank", LOWER, "mean rank of the best positive, from 1 (open_clip)")
MEDIAN_RANK = Key("median_rank", LOWER, "floor(median rank of the best positive) + 1")
N_QUERIES = Key("n_queries", None, "queries evaluated")
N_SKIPPED = Key("n_skipped", None, "queries without a relevant key, left out")
RELEVANCE = Key("relevance", None, "'labels' or 'groups': what intra-modal relevance is")
LABELS = "labels"
GROUPS = "groups"

# ------------------------------------------------------------------ diagnostics
SEPARABILITY = Key("separability", LOWER, "cross-validated accuracy telling the two apart")
SEPARABILITY_SE = Key("separability_se", None, "its standard error over the folds")
SEPARABILITY_ROWS = Key("separability_rows", None, "rows of each modality used")
CKA = Key("cka", HIGHER, "linear CKA over positive pairs (Kornblith et al. 2019)")
GAP_DIRECTION = Key("gap_direction", None, "where the gap vector points")
PC_SHARE = "pc_top{k}_share"
PC_CHANCE = "pc_top{k}_chance"
AXIS_COSINE = "axis_cosine_{m}"
SIMILARITY = Key("similarity", None, "positive vs negative cosines")
POSITIVE_MEAN = Key("positive_mean", None, "mean cosine of the positive pairs")
NEGATIVE_MEAN = Key("negative_mean", None, "mean cosine of the negatives used")
POSITIVE_QUANTILE = "positive_{q}"
NEGATIVE_QUANTILE = "negative_{q}"
OVERLAP = Key("overlap", LOWER, "overlap coefficient of the two histograms")
NEGATIVES_ABOVE = Key(
    "negatives_above_median_positive", LOWER, "negatives above the median positive cosine"
)
AUC = Key("auc", HIGHER, "chance a positive pair outscores a negative one")
N_POSITIVE = Key("n_positive", None, "positive pairs")
N_NEGATIVE = Key("n_negative", None, "negative pairs used")
NEGATIVES_SAMPLED = Key("negatives_sampled", None, "whether the negatives are a sample")
GRAM_VOLUME_MEAN = Key("gram_volume_mean", LOWER, "mean GRAM volume (Cicchetti et al. 2025)")
GRAM_VOLUME_MEDIAN = Key("gram_volume_median", LOWER, "median GRAM volume")
GRAM_VOLUME_STD = Key("gram_volume_std", None, "standard deviation of the volumes")
GRAM_VOLUME_SE = Key("gram_volume_se", None, "standard error of the mean volume")
N_TUPLES = Key("n_tuples", None, "tuples the groups form")
N_EVALUATED = Key("n_evaluated", None, "tuples evaluated")

# ------------------------------------------------------------------ zero-shot
ZEROSHOT = Key("zeroshot", None, "zero-shot classification against the class prompts")
CLASSIFIED = Key("classified", None, "the modality whose labelled rows were classified")
TOP1_ACCURACY = Key("top1_accuracy", HIGHER, "share of rows whose class scores highest")
TOP5_ACCURACY = Key("top5_accuracy", HIGHER, "share of rows with their class in the top 5")
BALANCED_ACCURACY = Key("balanced_accuracy", HIGHER, "mean over classes of top-1 recall")
N_CLASSES = Key("n_classes", None, "classes of the class prompts")
N_CLASSES_PRESENT = Key("n_classes_present", None, "classes with labelled rows")

# ------------------------------------------------------------------ what-ifs
WHATIF = Key("whatif", None, "the gap-closing what-ifs, by scenario")
ORIGINAL = "original"
CENTERED = "centered"
SHIFT = "shift_{f!r}"
WHATIF_GAP_BEFORE = Key("gap_before_renormalization", None, "||mean x' - mean y'|| as moved")

# ------------------------------------------------------------------ the document
SCHEMA_FIELD = "schema"
VERSION_FIELD = "gapscope_version"
INPUT_SECTION = "input"
PARAMS_SECTION = "params"
MODALITIES_SECTION = "modalities"
PAIRS_SECTION = "pairs"
TUPLES_SECTION = "tuples"
NOTES_SECTION = "notes"
DIRECTIONS_SECTION = "directions"
RUN_SECTION = "run"
#: The top-level keys of a report, and its three sections of metrics.
SECTIONS = (
    SCHEMA_FIELD,
    VERSION_FIELD,
    INPUT_SECTION,
    PARAMS_SECTION,
    MODALITIES_SECTION,
    PAIRS_SECTION,
    TUPLES_SECTION,
    NOTES_SECTION,
    DIRECTIONS_SECTION,
    RUN_SECTION,
)
METRIC_SECTIONS = (MODALITIES_SECTION, PAIRS_SECTION, TUPLES_SECTION)

# ------------------------------------------------------------------ input
SOURCE = "source"
FINGERPRINT = "fingerprint"
MODEL = "model"
ROWS = "n"
DIM = "dim"
DTYPE = "dtype"
RAW_NORM_MEAN = "raw_norm_mean"
NORMALIZED_BY_ENCODER = "normalized_by_encoder"
HAS_LABELS = "has_labels"
#: ``input.model.random_weights``: the encoder's weights were drawn at random, not trained.
RANDOM_WEIGHTS = "random_weights"
#: The keys of ``input`` and of each ``input.modalities.<m>``.
INPUT = (
    SOURCE,
    FINGERPRINT,
    MODEL,
    RANDOM_WEIGHTS,
    ROWS,
    DIM,
    DTYPE,
    RAW_NORM_MEAN,
    NORMALIZED_BY_ENCODER,
    HAS_LABELS,
)

# ------------------------------------------------------------------ params
P_METRICS = "metrics"
P_K = "k"
P_SEED = "seed"
P_SAMPLE = "sample"
P_UNIFORMITY_T = "uniformity_t"
P_ALIGNMENT_ALPHA = "alignment_alpha"
P_DEVICE = "device"
P_PRECISION = "precision"
P_BOOTSTRAP = "bootstrap"
P_CONFIDENCE = "confidence"
P_INTERVAL = "interval"
P_BLOCK_SIZE = "block_size"
#: The keys of ``params``: what shaped the numbers.
PARAMS = (
    P_METRICS,
    P_K,
    P_SEED,
    P_SAMPLE,
    P_UNIFORMITY_T,
    P_ALIGNMENT_ALPHA,
    P_DEVICE,
    P_PRECISION,
    P_BOOTSTRAP,
    P_CONFIDENCE,
    P_INTERVAL,
    P_BLOCK_SIZE,
)

# ------------------------------------------------------------------ run
# The run a report belongs to: which training step, which checkpoint, which labels. In flat
# outputs (``--format flat``, CSV) the run fields are the keys without a ``/``: ``step``,
# ``checkpoint`` and ``tag.<key>`` a tag.
STEP = "step"
TAGS = "tags"
CHECKPOINT = "checkpoint"
TAG_PREFIX = "tag."
#: The keys of ``run``.
RUN = (STEP, TAGS, CHECKPOINT)

#: Every key, in report order.
KEYS: tuple[Key, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Key))

#: The good direction of every leaf name that has one (the ``directions`` of a report).
DIRECTIONS: dict[str, str] = {k.name: k.direction for k in KEYS if k.direction is not None}


def recall_key(k: int) -> str:
    """The recall@K key.

    >>> recall_key(5)
    'R@5'
    """
    return f"R@{int(k)}"


def ci_key(key: Key | str) -> str:
    """The bootstrap-interval key beside ``key``.

    >>> ci_key(GAP), ci_key("R@1")
    ('gap_ci', 'R@1_ci')
    """
    return f"{key}_ci"


def se_key(key: Key | str) -> str:
    """The standard-error key beside ``key`` (sampled estimates).

    >>> se_key(UNIFORMITY)
    'uniformity_se'
    """
    return f"{key}_se"


def scenario_key(fraction: float | None) -> str:
    """The key of a what-if scenario: ``None`` for mean-centring, else a shift by ``fraction``.

    >>> scenario_key(None), scenario_key(0.5), scenario_key(1)
    ('centered', 'shift_0.5', 'shift_1.0')
    """
    return CENTERED if fraction is None else SHIFT.format(f=float(fraction))


def direction_key(query: str, key: str) -> str:
    """The retrieval direction key.

    >>> direction_key("image", "text")
    'image->text'
    """
    return f"{query}->{key}"


def metric_leaf(flat_key: str) -> str:
    """The metric name of a flat key: its last component, what :func:`direction_of` takes.

    >>> metric_leaf("image-text/recall/text->image/R@5")
    'R@5'
    """
    return flat_key.rsplit("/", 1)[-1]


def tracker_key(flat_key: str) -> str:
    """The spelling of a flat report key that every experiment tracker takes.

    MLflow refuses metric names with characters other than letters, digits, ``_``, ``-``,
    ``.``, ``/`` and space (``image-text/recall/image->text/R@5`` is an invalid name), so the
    flat outputs (``Report.to_flat()``, ``--format flat``, CSV) and the trackers use this
    spelling, while the JSON report keeps its own key paths. Two characters of the report's
    vocabulary are out: a retrieval direction's ``->`` becomes ``_to_`` and the ``@`` of
    ``R@K`` is dropped; any other character outside ``A-Z a-z 0-9 _ - . /`` (none in this
    version's keys) becomes ``_``. Pair and tuple names keep their ``-``: modality names hold
    no ``-``, so ``image-text`` still names its two modalities whatever they are called
    (``depth_map-text``), and the mapping is one to one over the keys a report writes (the two
    directions under a pair differ, and no other key is ``R`` and digits).

    >>> tracker_key("image-text/recall/image->text/R@5")
    'image-text/recall/image_to_text/R5'
    >>> tracker_key("image/recall/image->image/R-precision_ci/low")
    'image/recall/image_to_image/R-precision_ci/low'
    >>> tracker_key("image-text/whatif/shift_0.5/gap")
    'image-text/whatif/shift_0.5/gap'
    """
    spelled = flat_key.replace("->", "_to_").replace("@", "")
    return _NOT_TRACKER_SAFE.sub("_", spelled)


_NOT_TRACKER_SAFE = re.compile(r"[^A-Za-z0-9_./-]")


def check_direction_spellings(modalities: Sequence[str]) -> None:
    """Refuse two modality names whose retrieval directions spell alike in the flat keys
    (:func:`tracker_key`): ``a->b`` and ``b->a`` become ``a_to_b`` and ``b_to_a``, which are
    one string when, say, ``a`` is ``x`` and ``b`` is ``x_to_x``. The only keys that can
    collide are those two, under their pair.

    >>> check_direction_spellings(["x", "x_to_x"])
    Traceback (most recent call last):
    ...
    gapscope.errors.GapscopeError: modality names 'x' and 'x_to_x': their retrieval \
directions x->x_to_x and x_to_x->x are both spelled 'x_to_x_to_x' in the flat keys; rename one
    """
    names = list(modalities)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if f"{a}_to_{b}" == f"{b}_to_{a}":
                raise GapscopeError(
                    f"modality names {a!r} and {b!r}: their retrieval directions {a}->{b} and "
                    f"{b}->{a} are both spelled {f'{a}_to_{b}'!r} in the flat keys; rename one"
                )


def direction_of(leaf: str, directions: dict[str, str] | None = None) -> str | None:
    """The good direction of a leaf key ('lower' or 'higher'), or None when it has none.

    ``directions`` is a report's own map (its ``directions`` section); by default this
    version's.

    >>> direction_of("R@5"), direction_of("gap"), direction_of("n_queries")
    ('higher', 'lower', None)
    """
    table = DIRECTIONS if directions is None else directions
    if leaf.startswith("R@") and not leaf.endswith(("_ci", "_se")):
        return table.get(RECALL_AT.name)
    return table.get(leaf)


def is_detail_key(flat_key: str) -> bool:
    """Whether a flat key is a number *about* a metric (an interval bound, a standard error)
    or a hypothetical what-if rather than a metric of the checkpoint.

    >>> is_detail_key("image-text/gap_ci/low"), is_detail_key("image/uniformity_se")
    (True, True)
    >>> is_detail_key("image-text/gap"), is_detail_key("image-text/whatif/centered/gap")
    (False, True)
    """
    parts = flat_key.split("/")
    # What-if values describe a hypothetical fix, not the checkpoint: never gate on them.
    if WHATIF.name in parts:
        return True
    ci, se = ci_key(""), se_key("")
    return (len(parts) >= 2 and parts[-2].endswith(ci)) or parts[-1].endswith((ci, se))
