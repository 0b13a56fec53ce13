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


def alignment(x, y, gx, gy, alpha: float = 2.0) -> float:
    xu, yu = unit(x), unit(y)
    i, j = np.nonzero(positives(gx, gy))
    return float((np.linalg.norm(xu[i] - yu[j], axis=1) ** alpha).mean())


def mir(x_raw, y_raw) -> float:
    """MIR with scipy's general matrix square root (valid for full-rank covariances)."""
    x = np.asarray(x_raw, np.float64)
    y = np.asarray(y_raw, np.float64)
    s = 1.0 / np.linalg.norm(y, axis=1).mean()
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
