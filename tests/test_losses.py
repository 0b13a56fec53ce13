"""gapscope.losses: each loss equals the report's metric on the same batch, and its gradient
is checked by finite differences in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
import torch

from gapscope.errors import EmbeddingError, GapscopeError
from gapscope.losses import alignment_loss, gap_loss, uniformity_loss
from gapscope.metrics import alignment, modality_gap, uniformity


def _batch(n: int = 12, m: int | None = None, d: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m or n, d, generator=g, dtype=torch.float64) + 0.5
    return x, y


@pytest.mark.parametrize("t", [2.0, 0.5, 40.0])
def test_uniformity_equals_the_metric_and_the_reference(t):
    x, _ = _batch()
    value = float(uniformity_loss(x, t=t))
    assert value == pytest.approx(uniformity(x.numpy(), t), rel=1e-6, abs=1e-9)
    if t <= 2.0:  # the paper's pdist formula underflows for large t
        assert value == pytest.approx(ref.uniformity(x.numpy(), t), rel=1e-9)


@pytest.mark.parametrize("alpha", [2.0, 1.0, 3.0])
def test_alignment_equals_the_metric_row_paired_and_grouped(alpha):
    x, y = _batch()
    assert float(alignment_loss(x, y, alpha=alpha)) == pytest.approx(
        alignment(x.numpy(), y.numpy(), alpha=alpha), rel=1e-9
    )
    x, y = _batch(6, 18)
    gx, gy = torch.arange(6), torch.arange(18) // 3
    value = float(alignment_loss(x, y, alpha=alpha, groups_x=gx, groups_y=gy))
    want = alignment(x.numpy(), y.numpy(), gx.numpy(), gy.numpy(), alpha)
    assert value == pytest.approx(want, rel=1e-9)


def test_gap_equals_the_metric_with_different_row_counts():
    x, y = _batch(5, 15)
    assert float(gap_loss(x, y)) == pytest.approx(modality_gap(x.numpy(), y.numpy()).gap)
    assert float(gap_loss(x, y, squared=True)) == pytest.approx(
        modality_gap(x.numpy(), y.numpy()).gap ** 2
    )


def test_gradients_by_finite_differences():
    x, y = _batch(7, 7, 4, seed=3)
    x.requires_grad_(True)
    y.requires_grad_(True)
    gx, gy = torch.tensor([0, 0, 1, 2, 3, 4, 5]), torch.tensor([0, 1, 1, 2, 3, 5, 5])
    checks = [
        lambda a, b: uniformity_loss(a, t=2.0),
        lambda a, b: uniformity_loss(b, t=0.7),
        lambda a, b: alignment_loss(a, b),
        lambda a, b: alignment_loss(a, b, alpha=1.0),
        lambda a, b: alignment_loss(a, b, groups_x=gx, groups_y=gy),
        lambda a, b: gap_loss(a, b),
        lambda a, b: gap_loss(a, b, squared=True),
    ]
    for f in checks:
        assert torch.autograd.gradcheck(f, (x, y), eps=1e-6, atol=1e-6)


def test_a_few_steps_on_the_losses_move_the_metrics_the_right_way():
    torch.manual_seed(0)
    x = torch.nn.Parameter(torch.randn(32, 8) + 2.0)
    y = torch.nn.Parameter(torch.randn(32, 8) - 2.0)
    before = (
        modality_gap(x.detach().numpy(), y.detach().numpy()).gap,
        uniformity(x.detach().numpy()),
    )
    opt = torch.optim.SGD([x, y], lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        loss = alignment_loss(x, y) + uniformity_loss(x) + uniformity_loss(y)
        loss.backward()
        opt.step()
    after = (
        modality_gap(x.detach().numpy(), y.detach().numpy()).gap,
        uniformity(x.detach().numpy()),
    )
    assert after[0] < before[0] and after[1] < before[1]


def test_low_precision_inputs_are_computed_in_float32():
    x, y = _batch()
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        a, b = x.to(dtype), y.to(dtype)
        value = uniformity_loss(a)
        assert value.dtype == torch.float32
        assert float(value) == pytest.approx(uniformity(a.float().numpy()), abs=1e-5)
        assert float(alignment_loss(a, b)) == pytest.approx(
            alignment(a.float().numpy(), b.float().numpy()), abs=1e-5
        )


def test_two_rows_and_large_temperatures_stay_finite():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert float(uniformity_loss(x, t=2.0)) == pytest.approx(-8.0)
    assert math.isfinite(float(uniformity_loss(x, t=1e4)))


def _grouped(groups_x, groups_y):
    """The alignment loss of two rows a side, paired by these groups."""
    ones = torch.ones(2, 2)
    return lambda: alignment_loss(ones, ones, groups_x=groups_x, groups_y=groups_y)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: uniformity_loss(torch.ones(1, 3)), EmbeddingError, "at least 2 rows"),
        (lambda: uniformity_loss(torch.ones(3)), EmbeddingError, "2-D"),
        (lambda: uniformity_loss(np.ones((3, 3))), EmbeddingError, "torch tensor"),
        (lambda: uniformity_loss(torch.ones(3, 3), t=0), GapscopeError, "t: must be"),
        (lambda: alignment_loss(torch.ones(3, 2), torch.ones(4, 2)), EmbeddingError, "row i"),
        (lambda: alignment_loss(torch.ones(3, 2), torch.ones(3, 3)), EmbeddingError, "dim"),
        (
            lambda: alignment_loss(torch.ones(2, 2), torch.ones(2, 2), groups_x=torch.zeros(2)),
            GapscopeError,
            "together",
        ),
        (_grouped(torch.tensor([0, 1]), torch.tensor([2, 3])), EmbeddingError, "no positive pair"),
        (
            lambda: gap_loss(torch.ones(2, 2, dtype=torch.int64), torch.ones(2, 2)),
            EmbeddingError,
            "floating",
        ),
        (lambda: gap_loss(torch.empty(0, 4), torch.ones(2, 4)), EmbeddingError, "x: no rows"),
        (lambda: uniformity_loss(torch.ones(3, 3), t="2"), GapscopeError, "t: must be"),
        (
            lambda: alignment_loss(torch.ones(2, 2), torch.ones(2, 2), alpha=True),
            GapscopeError,
            "alpha: must be",
        ),
        (_grouped(torch.tensor([0.0, 1.0]), torch.tensor([0, 1])), EmbeddingError, "integer codes"),
    ],
)
def test_bad_input_is_one_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
