"""Every metric family of the registry, run through the same checks.

* The public metric functions of ``gapscope.metrics`` return what ``analyze`` reports for the
  same input (one engine: the functions are thin over the passes the analysis runs), on
  ordinary data and on tie-heavy data where the ranks depend on how ties are broken.
* Invariances: a consistent permutation of the rows, a positive factor on each raw row
  (where the family is scale-free: everything but MIR), and the input dtype.

A family added to the registry without a public counterpart here fails the first test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from gapscope import analyze
from gapscope.analysis.families import FAMILIES, MAX_CKA_PAIRS, MAX_NEGATIVES, QUANTILES, TOP
from gapscope.data.class_prompts import ClassPrompts
from gapscope.data.embedding_set import EmbeddingSet
from gapscope.metrics import (
    alignment,
    cone_effect,
    cross_modal_retrieval,
    cross_modal_uniformity,
    intra_modal_retrieval,
    mmd2,
    modality_gap,
    modality_integration_rate,
    paired_cosine,
    uniformity,
)
from gapscope.metrics.cka import linear_cka
from gapscope.metrics.effective_rank import dimensional_collapse
from gapscope.metrics.gap_direction import gap_direction
from gapscope.metrics.gram_volume import gram_volume
from gapscope.metrics.separability import modality_separability
from gapscope.metrics.similarity_stats import similarity_stats

NAMES = ("image", "text", "audio")
KS = (1, 5, 10)


def make_set(n: int = 48, d: int = 12, seed: int = 0, *, ties: bool = False) -> EmbeddingSet:
    """Three modalities with a gap, two captions an image, labels; with ``ties``, small integer
    entries and repeated rows, so that scores tie exactly and often."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    if ties:
        content = rng.integers(-2, 3, size=(n, d)).astype(np.float64)
        content[::5] = content[0]
        content[content.sum(1) == 0, 0] += 1.0
        image = content + 1.0
        text = np.repeat(content, 2, axis=0) + rng.integers(-1, 2, size=(2 * n, d))
        text[(text == 0).all(1), 0] = 1.0
        audio = content - 1.0
    else:
        content = rng.normal(size=(n, d)) + 2.0 * rng.normal(size=(4, d))[labels]
        image = content + 1.5 * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))
        text = np.repeat(content, 2, axis=0) + 1.5 * rng.normal(size=d)
        text = text + 0.5 * rng.normal(size=text.shape)
        audio = content - 1.5 * rng.normal(size=d) + 0.5 * rng.normal(size=(n, d))
        image *= rng.uniform(1, 3, size=(n, 1))
    groups = np.arange(n)
    # Class prompts on the text side (zero-shot): the mean text row of each label.
    prompts = np.stack([text[np.repeat(labels, 2) == c].mean(0) for c in range(4)])
    label_sets = {"image": labels, "text": np.repeat(labels, 2), "audio": labels}
    return EmbeddingSet(
        embeddings={
            "image": image.astype(np.float32),
            "text": text.astype(np.float32),
            "audio": audio.astype(np.float32),
        },
        groups={"image": groups, "text": np.repeat(groups, 2), "audio": groups},
        labels=label_sets,
        label_values=label_sets,
    ).with_classes(ClassPrompts(prompts))


def _pairs():
    return [("image", "text"), ("image", "audio"), ("text", "audio")]


# ----------------------------------------------------------------- the public counterparts
# Each returns {(section, name): entry} as the family writes it, from gapscope.metrics alone.

Entries = dict[tuple[str, str], dict[str, Any]]


def _gap(data: EmbeddingSet) -> Entries:
    out = {}
    for a, b in _pairs():
        g = modality_gap(data.embeddings[a], data.embeddings[b])
        out["pairs", f"{a}-{b}"] = {
            "gap": g.gap,
            "centroid_cosine": g.centroid_cosine,
            "centroid_norms": {a: g.centroid_norm_x, b: g.centroid_norm_y},
            "gap_concentration": {"top1": g.top1_share, "top10": g.top10_share},
        }
    return out


def _cosine(data: EmbeddingSet) -> Entries:
    out = {}
    for a, b in _pairs():
        c = paired_cosine(data.embeddings[a], data.embeddings[b], data.groups[a], data.groups[b])
        out["pairs", f"{a}-{b}"] = {
            "paired_cosine": c.paired,
            "unpaired_cosine": c.unpaired,
            "n_pairs": c.n_pairs,
        }
    return out


def _alignment(data: EmbeddingSet) -> Entries:
    return {
        ("pairs", f"{a}-{b}"): {
            "alignment": alignment(
                data.embeddings[a], data.embeddings[b], data.groups[a], data.groups[b]
            )
        }
        for a, b in _pairs()
    }


def _cone(data: EmbeddingSet) -> Entries:
    return {("modalities", m): {"cone": cone_effect(data.embeddings[m])} for m in NAMES}


def _uniformity(data: EmbeddingSet) -> Entries:
    u = {m: uniformity(data.embeddings[m]) for m in NAMES}
    out: Entries = {("modalities", m): {"uniformity": u[m]} for m in NAMES}
    out.update({("pairs", f"{a}-{b}"): {"uniformity": (u[a] + u[b]) / 2} for a, b in _pairs()})
    return out


def _mmd(data: EmbeddingSet) -> Entries:
    out = {}
    for a, b in _pairs():
        x, y = data.embeddings[a], data.embeddings[b]
        out["pairs", f"{a}-{b}"] = {
            "cross_uniformity": cross_modal_uniformity(x, y),
            "mmd2": mmd2(x, y),
        }
    return out


def _mir(data: EmbeddingSet) -> Entries:
    out = {}
    for a, b in _pairs():
        # Scaled by text when the pair has it, else by the pair's first modality.
        y = "text" if "text" in (a, b) else a
        x = b if y == a else a
        r = modality_integration_rate(data.embeddings[x], data.embeddings[y])
        out["pairs", f"{a}-{b}"] = {
            "mir": r.mir,
            "mir_detail": {
                "fd": r.fd,
                "scale": r.scale,
                "scale_from": y,
                "outliers": {x: r.outliers_x, y: r.outliers_y},
                "outlier_step_skipped": {x: r.outlier_step_skipped_x, y: r.outlier_step_skipped_y},
                "full_rank": r.full_rank,
            },
        }
    return out


def _recall_entry(result, relevance: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {f"R@{k}": v for k, v in result.recall.items()}
    entry.update(n_queries=result.n_queries, n_skipped=result.n_skipped)
    if relevance is not None:
        entry.update(
            {
                "mAP": result.mean_average_precision,
                "R-precision": result.r_precision,
                "relevance": relevance,
            }
        )
    return entry


def _retrieval(data: EmbeddingSet) -> Entries:
    out: Entries = {}
    for m in NAMES:
        r = intra_modal_retrieval(data.embeddings[m], data.labels[m], k=KS)
        out["modalities", m] = {"recall": {f"{m}->{m}": _recall_entry(r, "labels")}}
    for a, b in _pairs():
        ea, eb, ga, gb = data.embeddings[a], data.embeddings[b], data.groups[a], data.groups[b]
        out["pairs", f"{a}-{b}"] = {
            "recall": {
                f"{a}->{b}": _recall_entry(cross_modal_retrieval(ea, eb, ga, gb, k=KS)),
                f"{b}->{a}": _recall_entry(cross_modal_retrieval(eb, ea, gb, ga, k=KS)),
            }
        }
    return out


def _effective_rank(data: EmbeddingSet) -> Entries:
    out = {}
    for m in NAMES:
        c = dimensional_collapse(data.embeddings[m], TOP)
        d = data.embeddings[m].shape[1]
        out["modalities", m] = {
            "effective_rank": c.effective_rank,
            "effective_rank_ratio": c.effective_rank / d,
            "variance_top1": c.variance_share[1],
            "variance_top10": c.variance_share[10],
        }
    return out


def _separability(data: EmbeddingSet) -> Entries:
    out = {}
    for a, b in _pairs():
        s = modality_separability(
            data.embeddings[a], data.embeddings[b], folds=5, max_rows=5000, seed=0
        )
        out["pairs", f"{a}-{b}"] = {
            "separability": s.accuracy,
            "separability_se": s.accuracy_se,
            "separability_rows": s.n_per_modality,
        }
    return out


def _cka(data: EmbeddingSet) -> Entries:
    return {
        ("pairs", f"{a}-{b}"): {
            "cka": linear_cka(
                data.embeddings[a],
                data.embeddings[b],
                data.groups[a],
                data.groups[b],
                max_pairs=MAX_CKA_PAIRS,
                seed=0,
            ).cka
        }
        for a, b in _pairs()
    }


def _quantile(level: float) -> str:
    return f"q{round(100 * level):02d}"


def _similarity(data: EmbeddingSet) -> Entries:
    out = {}
    for a, b in _pairs():
        st = similarity_stats(
            data.embeddings[a],
            data.embeddings[b],
            data.groups[a],
            data.groups[b],
            max_negatives=MAX_NEGATIVES,
            seed=0,
            quantiles=QUANTILES,
        )
        sim = {
            "positive_mean": st.positive_mean,
            "negative_mean": st.negative_mean,
            "overlap": st.overlap,
            "auc": st.auc,
            "n_positive": st.n_positive,
            "n_negative": st.n_negative,
            "negatives_sampled": st.negatives_sampled,
            "negatives_above_median_positive": st.negatives_above_median_positive,
        }
        sim.update({f"positive_{_quantile(q)}": v for q, v in st.positive_quantiles.items()})
        sim.update({f"negative_{_quantile(q)}": v for q, v in st.negative_quantiles.items()})
        out["pairs", f"{a}-{b}"] = {"similarity": sim}
    return out


def _gap_direction(data: EmbeddingSet) -> Entries:
    out = {}
    for a, b in _pairs():
        g = gap_direction(data.embeddings[a], data.embeddings[b], TOP)
        entry = {f"pc_top{t}_share": g.pc_share[t] for t in TOP}
        entry.update({f"pc_top{t}_chance": g.pc_share_chance[t] for t in TOP})
        entry.update({f"axis_cosine_{a}": g.axis_cosine_x, f"axis_cosine_{b}": g.axis_cosine_y})
        out["pairs", f"{a}-{b}"] = {"gap_direction": entry}
    return out


def _gram_volume(data: EmbeddingSet) -> Entries:
    g = gram_volume(
        [data.embeddings[m] for m in NAMES],
        [data.groups[m] for m in NAMES],
        max_tuples=100_000,
        seed=0,
    )
    return {
        ("tuples", "image-text-audio"): {
            "gram_volume_mean": g.mean,
            "gram_volume_median": g.median,
            "gram_volume_std": g.std,
            "gram_volume_se": g.se,
            "n_tuples": g.n_tuples,
            "n_evaluated": g.n_evaluated,
        }
    }


def _classes_of(data: EmbeddingSet, a: str, b: str) -> dict[str, Any]:
    """The what-if's class prompts for the pair ``(a, b)``: only ``image-text``, where the
    text side holds them and the classified image comes first."""
    if data.classes is None or (a, b) != ("image", "text"):
        return {}
    return {"classes": data.classes.embeddings, "class_labels": data.class_labels[a]}


def _whatif(data: EmbeddingSet) -> Entries:
    from gapscope.analysis.whatif import gap_closing_whatif

    out = {}
    for a, b in _pairs():
        scenarios = gap_closing_whatif(
            data.embeddings[a],
            data.embeddings[b],
            data.groups[a],
            data.groups[b],
            relevance_x=data.labels[a],
            relevance_y=data.labels[b],
            names=(a, b),
            k=KS,
            **_classes_of(data, a, b),
        )
        entry = {}
        for s in scenarios:
            name = (
                "centered"
                if s.centered
                else ("original" if s.fraction is None else f"shift_{s.fraction!r}")
            )
            recall = {}
            for (q, key), r in s.recall.items():
                e: dict[str, Any] = {f"R@{k}": v for k, v in r.recall.items()}
                if q == key:
                    e["mAP"] = r.mean_average_precision
                recall[f"{q}->{key}"] = e
            entry[name] = {
                "gap": s.gap,
                "gap_before_renormalization": s.gap_before_renormalization,
                "recall": recall,
                "uniformity": s.uniformity,
            }
            if s.zeroshot is not None:
                entry[name]["zeroshot"] = {
                    "top1_accuracy": s.zeroshot.accuracy[1],
                    "top5_accuracy": s.zeroshot.accuracy[5],
                    "balanced_accuracy": s.zeroshot.balanced_accuracy,
                }
        out["pairs", f"{a}-{b}"] = {"whatif": entry}
    return out


def _zeroshot(data: EmbeddingSet) -> Entries:
    from gapscope.metrics.zeroshot import zero_shot_classification

    assert data.classes is not None
    out = {}
    for a, b in (("image", "text"), ("text", "audio")):
        m = b if a == "text" else a
        r = zero_shot_classification(
            data.embeddings[m], data.classes.embeddings, data.class_labels[m]
        )
        out["pairs", f"{a}-{b}"] = {
            "zeroshot": {
                "classified": m,
                "top1_accuracy": r.accuracy[1],
                "top5_accuracy": r.accuracy[5],
                "balanced_accuracy": r.balanced_accuracy,
                "n_queries": r.n_queries,
                "n_classes": r.n_classes,
                "n_classes_present": r.n_classes_present,
            }
        }
    return out


PUBLIC: dict[str, Callable[[EmbeddingSet], Entries]] = {
    "gap": _gap,
    "cosine": _cosine,
    "alignment": _alignment,
    "cone": _cone,
    "uniformity": _uniformity,
    "mir": _mir,
    "mmd": _mmd,
    "retrieval": _retrieval,
    "effective_rank": _effective_rank,
    "separability": _separability,
    "cka": _cka,
    "similarity": _similarity,
    "gap_direction": _gap_direction,
    "gram_volume": _gram_volume,
    "zeroshot": _zeroshot,
    "whatif": _whatif,
}


def assert_same(got: Any, want: Any, path: str = "") -> None:
    """Equal numbers (floats to 1e-12 relative: the public function and the analysis run the
    same code, a float may only differ in how a shared value reached it), equal everything
    else, key by key."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) >= set(want), (path, sorted(want))
        for key, value in want.items():
            assert_same(got[key], value, f"{path}/{key}")
    elif isinstance(want, float) and not (got is None and math.isnan(want)):
        if math.isnan(want):
            assert got is None or math.isnan(got), path
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-15), path
    else:
        assert got == want, path


@pytest.mark.parametrize("ties", [False, True], ids=["ordinary", "tie-heavy"])
@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_public_function_equals_the_report(family, ties):
    assert set(PUBLIC) == {f.name for f in FAMILIES}, "a family lacks its public counterpart"
    data = make_set(ties=ties)
    report = analyze(data, metrics=family.selector, device="cpu")
    sections = {"modalities": report.modalities, "pairs": report.pairs, "tuples": report.tuples}
    for (section, name), entry in PUBLIC[family.name](data).items():
        assert_same(sections[section][name], entry, f"{section}/{name}")


def test_tie_heavy_retrieval_agrees_whichever_way_it_is_asked():
    # The case: the public cross_modal_retrieval and analyze on the same tie-heavy
    # input, in either argument order, at the default and at an explicit block size.
    data = make_set(n=120, d=8, seed=3, ties=True)
    t, i = data.embeddings["text"], data.embeddings["image"]
    gt, gi = data.groups["text"], data.groups["image"]
    for block_size in (None, 7):
        report = analyze(data, metrics="retrieval", device="cpu", block_size=block_size)
        recall = report.pairs["image-text"]["recall"]
        for q, k, gq, gk, direction in (
            (t, i, gt, gi, "text->image"),
            (i, t, gi, gt, "image->text"),
        ):
            public = cross_modal_retrieval(q, k, gq, gk, k=KS, block_size=block_size)
            assert {f"R@{c}": v for c, v in public.recall.items()} == {
                key: v for key, v in recall[direction].items() if key.startswith("R@")
            }


def _flat_numbers(report) -> dict[str, float]:
    return {k: v for k, v in report.to_flat().items() if isinstance(v, float)}


def _assert_close(a: dict[str, float], b: dict[str, float], rel: float, skip=()) -> None:
    assert set(a) == set(b)
    for key, value in a.items():
        if any(s in key for s in skip):
            continue
        assert b[key] == pytest.approx(value, rel=rel, abs=rel), key


def _permuted(data: EmbeddingSet, seed: int) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    out = EmbeddingSet({}, {}, {})
    for m in data.modalities:
        order = rng.permutation(data.embeddings[m].shape[0])
        out.embeddings[m] = data.embeddings[m][order]
        out.groups[m] = data.groups[m][order]
        out.labels[m] = data.labels[m][order]
        out.label_values[m] = data.label_values[m][order]
    return out.with_classes(data.classes)


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_invariances(family):
    data = make_set(seed=5)
    base = _flat_numbers(analyze(data, metrics=family.selector, device="cpu"))
    assert base, family.name
    # Row order: the same rows in another order (groups and labels with them).
    permuted = _flat_numbers(analyze(_permuted(data, 1), metrics=family.selector, device="cpu"))
    drawn = tuple(f"/{key.name}" for f in FAMILIES if not f.order_free for key in f.keys)
    _assert_close(base, permuted, 1e-5, skip=drawn)
    # Dtype: the same values as float64 and as torch tensors.
    wide = replace(data, embeddings={m: a.astype(np.float64) for m, a in data.embeddings.items()})
    _assert_close(base, _flat_numbers(analyze(wide, metrics=family.selector, device="cpu")), 1e-5)
    tensors = replace(data, embeddings={m: torch.from_numpy(a) for m, a in data.embeddings.items()})
    _assert_close(
        base, _flat_numbers(analyze(tensors, metrics=family.selector, device="cpu")), 1e-12
    )
    # Scale: a positive factor on each raw row changes nothing a unit row sees.
    if family.scale_free:
        rng = np.random.default_rng(2)
        scaled = replace(
            data,
            embeddings={
                m: (a * rng.uniform(0.2, 5.0, size=(a.shape[0], 1))).astype(np.float32)
                for m, a in data.embeddings.items()
            },
        )
        _assert_close(
            base, _flat_numbers(analyze(scaled, metrics=family.selector, device="cpu")), 1e-5
        )
