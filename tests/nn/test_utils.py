"""nn.utils.clip_grad_norm_ / clip_grad_value_ against torch.nn.utils."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
import gradflow.nn as nn
from tests.nn.compare import torch


def _params_with_grads(seed, dtype=np.float64, scale=1.0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    ours, theirs = [], []
    for shape in shapes:
        value, grad = rng.standard_normal(shape).astype(dtype), (rng.standard_normal(shape) * scale).astype(dtype)
        p = nn.Parameter(gf.tensor(value))
        p.grad = gf.tensor(grad)
        t = torch.nn.Parameter(torch.tensor(value))
        t.grad = torch.tensor(grad)
        ours.append(p)
        theirs.append(t)
    ours.append(nn.Parameter(gf.ones(2, dtype=dtype)))   # no grad: skipped
    theirs.append(torch.nn.Parameter(torch.ones(2, dtype=getattr(torch, np.dtype(dtype).name))))
    return ours, theirs


@given(st.sampled_from([2.0, 1, 3.5, math.inf, "inf", 0.5]), st.sampled_from([0.1, 1.0, 100.0]),
       st.integers(0, 1000), st.sampled_from([np.float64, np.float32]))
def test_clip_grad_norm_matches_torch(norm_type, max_norm, seed, dtype):
    ours, theirs = _params_with_grads(seed, dtype)
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert total.dtype == np.dtype(dtype) and total.shape == ()
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=rtol)
    for p, t in zip(ours, theirs):
        if t.grad is None:
            assert p.grad is None
        else:
            np.testing.assert_allclose(p.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=1e-7)


def test_clip_grad_norm_accepts_a_single_tensor_and_a_generator():
    p = nn.Parameter(gf.ones(4))
    p.grad = gf.full((4,), 3.0)
    assert nn.utils.clip_grad_norm_(p, 1.0).item() == pytest.approx(6.0)
    np.testing.assert_allclose(p.grad.numpy(), 3.0 / (6.0 + 1e-6))
    model = nn.Linear(2, 2)
    model(gf.ones(1, 2)).sum().backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e9)
    assert norm.item() == pytest.approx(math.sqrt(2 * 1 + 2 * 1 + 2))   # weight grads 1 (4 of them), bias 1


def test_clip_grad_norm_without_grads_returns_zero_and_warns_on_empty_generator():
    assert nn.utils.clip_grad_norm_([nn.Parameter(gf.ones(2))], 1.0).item() == 0.0
    with pytest.warns(UserWarning, match="empty generator"):
        nn.utils.clip_grad_norm_((p for p in []), 1.0)


def test_clip_grad_norm_nonfinite():
    p = nn.Parameter(gf.ones(2))
    p.grad = gf.tensor([1.0, float("nan")])
    with pytest.raises(RuntimeError, match="The total norm of order 2.0 for gradients from `parameters` is non-finite"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert math.isnan(nn.utils.clip_grad_norm_([p], 1.0).item())


def test_clip_grad_value_matches_torch():
    ours, theirs = _params_with_grads(3, scale=2.0)
    nn.utils.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, t in zip(ours, theirs):
        if t.grad is not None:
            np.testing.assert_array_equal(p.grad.numpy(), t.grad.numpy())
