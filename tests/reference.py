"""Straightforward full-matrix reference implementations, written from the papers' definitions.

They build every n x m matrix in memory and loop where that is clearest: slow, obviously
right, and independent of gapscope's blocked code. Used by the integration tests.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gap(x, y) -> float:
    return float(np.linalg.norm(unit(x).mean(0) - unit(y).mean(0)))


def positives(gx, gy) -> np.ndarray:
    return np.asarray(gx)[:, None] == np.asarray(gy)[None, :]


def paired_unpaired_cosine(x, y, gx, gy) -> tuple[float, float]:
    s = unit(x) @ unit(y).T
    p = positives(gx, gy)
    return float(s[p].mean()), float(s[~p].mean())


def cone(x) -> float:
    s = unit(x) @ unit(x).T
    n = s.shape[0]
    return float((s.sum() - np.trace(s)) / (n * (n - 1)))


def uniformity(x, t: float = 2.0) -> float:
    # Wang & Isola's own code: torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()
    xt = torch.from_numpy(unit(x))
    return float(torch.pdist(xt, p=2).pow(2).mul(-t).exp().mean().log())


def cross_uniformity(x, y, t: float = 2.0) -> float:
    # The full matrix of squared distances between every x row and every y row.
    d2 = torch.cdist(torch.from_numpy(unit(x)), torch.from_numpy(unit(y))).pow(2)
    return float(d2.mul(-t).exp().mean().log())


def mmd2_unbiased(x, y, t: float = 2.0) -> float:
    """Gretton et al. 2012's MMD^2_u with k(u, v) = exp(-t ||u - v||^2), full matrices, the
    diagonals of the within-sample terms left out."""

    def kernel(a, b):
        return np.exp(-t * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    xu, yu = unit(x), unit(y)
    kxx, kyy, kxy = kernel(xu, xu), kernel(yu, yu), kernel(xu, yu)
    n, m = xu.shape[0], yu.shape[0]
    own_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    own_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(own_x + own_y - 2 * kxy.mean())


def alignment(x, y, gx, gy, alpha: float = 2.0) -> float:
    xu, yu = unit(x), unit(y)
    i, j = np.nonzero(positives(gx, gy))
    return float((np.linalg.norm(xu[i] - yu[j], axis=1) ** alpha).mean())


def mir(x_raw, y_raw, scale: float | None = None) -> float:
    """MIR with scipy's general matrix square root (valid for full-rank covariances);
    ``scale`` replaces the paper's ``1 / mean ||y_j||``."""
    x = np.asarray(x_raw, np.float64)
    y = np.asarray(y_raw, np.float64)
    s = 1.0 / np.linalg.norm(y, axis=1).mean() if scale is None else scale
    x, y = x * s, y * s
    out = []
    for z in (x, y):
        norms = np.linalg.norm(z, axis=1)
        sd = norms.std(ddof=1)
        z = z.copy()
        if sd > 1e-4 * np.median(norms):
            bad = np.abs(norms - np.median(norms)) > 3 * sd
            z[bad] = np.median(z, axis=0)
        out.append(z)
    x, y = out
    mu_x, mu_y = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False, ddof=1), np.cov(y, rowvar=False, ddof=1)
    covmean = scipy.linalg.sqrtm(cx @ cy)
    fd = ((mu_x - mu_y) ** 2).sum() + np.trace(cx + cy - 2 * np.real(covmean))
    return float(np.log10(fd))


def _ranking(scores: np.ndarray) -> np.ndarray:
    # Descending by score, ties to the lower index: a stable sort on the negated scores.
    return np.argsort(-scores, kind="stable")


def cross_recall(q, keys, gq, gk, ks) -> dict[int, float]:
    s = unit(q) @ unit(keys).T
    rel = positives(gq, gk)
    hits = {k: [] for k in ks}
    for i in range(s.shape[0]):
        if not rel[i].any():
            continue
        order = _ranking(s[i])
        first = int(np.nonzero(rel[i][order])[0][0])
        for k in ks:
            hits[k].append(first < k)
    return {k: float(np.mean(v)) for k, v in hits.items()}


def intra_retrieval(x, codes, ks) -> dict[str, float] | None:
    s = unit(x) @ unit(x).T
    n = s.shape[0]
    codes = np.asarray(codes)
    hits = {k: [] for k in ks}
    aps, rps = [], []
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        rel = codes[others] == codes[i]
        if not rel.any():
            continue
        order = _ranking(s[i, others])
        rel_sorted = rel[order]
        positions = np.nonzero(rel_sorted)[0]
        for k in ks:
            hits[k].append(positions[0] < k)
        precisions = [(r + 1) / (pos + 1) for r, pos in enumerate(positions)]
        aps.append(np.mean(precisions))
        r_total = int(rel.sum())
        rps.append(rel_sorted[:r_total].sum() / r_total)
    if not aps:
        return None
    out = {f"R@{k}": float(np.mean(v)) for k, v in hits.items()}
    out["mAP"] = float(np.mean(aps))
    out["R-precision"] = float(np.mean(rps))
    return out


# --------------------------------------------------------------------------- zero-shot
# CLIP_benchmark (clip_benchmark/metrics/zeroshot_classification.py), its few lines on arrays
# instead of a model: zero_shot_classifier ensembles the prompts of each class, accuracy counts
# the target among the top-k logits, balanced accuracy is sklearn's on the argmax.


def clip_benchmark_classifier(prompt_embeddings) -> torch.Tensor:
    """``zero_shot_classifier``: per class, F.normalize(prompts).mean(0), then / its norm;
    stacked as columns ``(d, C)``."""
    weights = []
    for class_embeddings in prompt_embeddings:
        e = torch.nn.functional.normalize(
            torch.as_tensor(class_embeddings, dtype=torch.float64), dim=-1
        )
        e = e.mean(dim=0)
        e = e / e.norm()
        weights.append(e)
    return torch.stack(weights, dim=1)


def clip_benchmark_accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,), stable=False):
    """``accuracy(output, target, topk)``: ``output.topk(max(topk), 1, True, True)``; with
    ``stable`` the top-k come from a stable descending sort (equal logits: lower index first,
    gapscope's tie rule) instead of ``topk``, whose order among equal values is unspecified."""
    maxk = max(topk)
    if stable:
        pred = torch.sort(output, dim=1, descending=True, stable=True)[1][:, :maxk]
    else:
        pred = output.topk(maxk, 1, True, True)[1]
    pred = pred.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    # (their float(... .sum(0, keepdim=True).numpy()) of a one-element array, as .item())
    return [correct[:k].reshape(-1).float().sum().item() / n for k in topk]


def clip_benchmark_zeroshot(
    images, classifier: torch.Tensor, target, n_classes: int, stable=False, logits=None
):
    """``evaluate``'s metrics: acc1, acc5 (NaN with fewer than 5 classes) and
    ``mean_per_class_recall`` = ``balanced_accuracy_score(target, logits.argmax(axis=1))``.
    ``logits``, when given, are ranked instead of ``evaluate``'s ``100 * features @
    classifier`` (scores whose ties a float64 product may break, for tests about ties)."""
    from sklearn.metrics import balanced_accuracy_score

    if logits is None:
        features = torch.nn.functional.normalize(
            torch.as_tensor(images, dtype=torch.float64), dim=-1
        )
        logits = 100.0 * features @ classifier
    target = torch.as_tensor(target)
    if n_classes >= 5:
        acc1, acc5 = clip_benchmark_accuracy(logits, target, (1, 5), stable)
    else:
        (acc1,) = clip_benchmark_accuracy(logits, target, (1,), stable)
        acc5 = float("nan")
    if stable:
        pred = torch.sort(logits, dim=1, descending=True, stable=True)[1][:, 0]
    else:
        pred = logits.argmax(axis=1)
    return {
        "acc1": acc1,
        "acc5": acc5,
        "mean_per_class_recall": float(balanced_accuracy_score(target.numpy(), pred.numpy())),
    }
