"""The report's geometry as differentiable losses: alignment, uniformity and the gap.

Each function computes, with torch autograd, the quantity of the same name in the report on
the same batch (``gapscope.metrics``: :func:`~gapscope.metrics.alignment`,
:func:`~gapscope.metrics.uniformity`, :func:`~gapscope.metrics.modality_gap`), so a term
added to a training loss is the number that ``analyze`` reports for that batch. The
contrastive-gap paper (Fahim et al. 2024, "It's Not a Modality Gap: Characterizing and
Addressing the Contrastive Gap") adds alignment and uniformity to the CLIP loss this way::

    import gapscope.losses as L

    image, text = model(images, captions)            # raw embeddings, (batch, d) each
    loss = clip_loss(image, text)
    loss = loss + L.alignment_loss(image, text) + 0.5 * (
        L.uniformity_loss(image) + L.uniformity_loss(text)
    )
    loss.backward()

Rows need not be normalised (each function L2-normalises them, differentiably). Inputs of
float16 or bfloat16 are computed in float32 and float64 stays float64 (for
``torch.autograd.gradcheck``); the result is a 0-d tensor on the inputs' device. A row of
zeros has no direction: its normalised value is 0 and its gradient meaningless.
"""

from __future__ import annotations

import math
import numbers

import torch

from gapscope.errors import EmbeddingError, GapscopeError

__all__ = ["alignment_loss", "gap_loss", "uniformity_loss"]


def _unit(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = getattr(x, "shape", None)
        raise EmbeddingError(f"{name}: expected a 2-D torch tensor (rows, dim), got {shape}")
    if not x.dtype.is_floating_point:
        raise EmbeddingError(f"{name}: expected floating-point rows, got {x.dtype}")
    if x.shape[0] == 0:
        raise EmbeddingError(f"{name}: no rows")
    if x.dtype != torch.float64:
        x = x.float()
    return torch.nn.functional.normalize(x, dim=1)


def _positive(value: float, name: str) -> float:
    # bool and strings are refused, as the metrics refuse them.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GapscopeError(f"{name}: must be finite and > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise GapscopeError(f"{name}: must be finite and > 0, got {value}")
    return float(value)


def alignment_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    alpha: float = 2.0,
    groups_x: torch.Tensor | None = None,
    groups_y: torch.Tensor | None = None,
) -> torch.Tensor:
    """Alignment of positive pairs (Wang & Isola 2020), as in the report:

        alignment = (1 / |P|) sum_{(i,j) in P} ||x_i - y_j||_2 ^ alpha

    over the L2-normalised rows, P the positive pairs: row i with row i, or with
    ``groups_x``/``groups_y`` (integer tensors) every pair with equal codes (five captions an
    image). Lower is better; in ``[0, 2^alpha]``.

    Args:
        x: ``(n, d)``; y: ``(m, d)`` (``m == n`` without groups).
        alpha: exponent, > 0. For ``alpha < 2`` the gradient at a pair of identical rows is
            undefined (``||.||^alpha`` has no derivative at 0).
        groups_x, groups_y: both or neither.

    Raises:
        EmbeddingError: shapes that do not pair, or no positive pair.
        GapscopeError: a bad ``alpha`` or one of the groups alone.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> y = torch.tensor([[0.0, 3.0], [0.0, 1.0]])
        >>> float(alignment_loss(x, y))
        1.0
    """
    alpha = _positive(alpha, "alpha")
    ux, uy = _unit(x, "x"), _unit(y, "y")
    if ux.shape[1] != uy.shape[1]:
        raise EmbeddingError(f"x has dim {ux.shape[1]}, y has dim {uy.shape[1]}")
    if (groups_x is None) != (groups_y is None):
        raise GapscopeError("give groups_x and groups_y together, or neither")
    if groups_x is None or groups_y is None:
        if ux.shape[0] != uy.shape[0]:
            raise EmbeddingError(
                f"x has {ux.shape[0]} rows, y has {uy.shape[0]}: without groups row i pairs "
                "with row i"
            )
        i = j = torch.arange(ux.shape[0], device=ux.device)
    else:
        gx = torch.as_tensor(groups_x, device=ux.device).reshape(-1)
        gy = torch.as_tensor(groups_y, device=ux.device).reshape(-1)
        if gx.numel() != ux.shape[0] or gy.numel() != uy.shape[0]:
            raise EmbeddingError("groups: one code a row of each modality")
        for codes in (gx, gy):
            # Integer codes only, as the metrics take them: floats compare by rounding.
            if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
                raise EmbeddingError(f"groups: expected integer codes, got dtype {codes.dtype}")
        i, j = torch.nonzero(gx[:, None] == gy[None, :], as_tuple=True)
    if i.numel() == 0:
        raise EmbeddingError("no positive pair: no row of x shares a group with a row of y")
    diff = ux[i] - uy[j]
    squared = (diff * diff).sum(dim=1)
    powered = squared if alpha == 2.0 else squared.pow(alpha / 2.0)
    return powered.mean()


def uniformity_loss(x: torch.Tensor, *, t: float = 2.0) -> torch.Tensor:
    """Uniformity (Wang & Isola 2020), as in the report:

        uniformity = log( (1 / (n (n - 1))) sum_{i != j} exp(-t ||x_i - x_j||^2) )

    over the L2-normalised rows, with ``||x_i - x_j||^2 = 2 - 2 x_i . x_j``, by one
    log-sum-exp: finite for any batch of two rows or more and any ``t`` (where the paper's
    ``pdist().pow(2).mul(-t).exp().mean().log()`` underflows to ``-inf`` for large ``t``).
    Lower is more uniform; in ``[-4t, 0]``.

    Raises:
        EmbeddingError: fewer than 2 rows.
        GapscopeError: a bad ``t``.

    Example:
        >>> round(float(uniformity_loss(torch.eye(3))), 4)
        -4.0
    """
    t = _positive(t, "t")
    u = _unit(x, "x")
    n = u.shape[0]
    if n < 2:
        raise EmbeddingError(f"x: uniformity needs at least 2 rows, got {n}")
    logits = (2.0 * t) * (u @ u.T - 1.0)
    self_pairs = torch.eye(n, dtype=torch.bool, device=u.device)
    logits = logits.masked_fill(self_pairs, -math.inf)
    return torch.logsumexp(logits.reshape(-1), dim=0) - math.log(n * (n - 1))


def gap_loss(x: torch.Tensor, y: torch.Tensor, *, squared: bool = False) -> torch.Tensor:
    """The modality gap (Liang et al. 2022, "Mind the Gap"), as in the report:

        gap = || (1/n) sum_i x_i - (1/m) sum_j y_j ||_2

    over the L2-normalised rows (each modality's mean over its own rows, so ``n`` and ``m``
    may differ). ``squared=True`` returns ``gap ** 2``, whose gradient exists at a gap of 0
    too (the norm's does not).

    Example:
        >>> x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
        >>> round(float(gap_loss(x, y, squared=True)), 6)
        2.0
    """
    ux, uy = _unit(x, "x"), _unit(y, "y")
    if ux.shape[1] != uy.shape[1]:
        raise EmbeddingError(f"x has dim {ux.shape[1]}, y has dim {uy.shape[1]}")
    if ux.dtype != uy.dtype:
        ux, uy = ux.double(), uy.double()
    g = ux.mean(dim=0) - uy.mean(dim=0)
    squared_gap = (g * g).sum()
    return squared_gap if squared else squared_gap.sqrt()
