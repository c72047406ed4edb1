"""nn.MaxPool2d, nn.AvgPool2d and nn.AdaptiveAvgPool2d against torch.nn."""
import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
from tests.nn.compare import assert_close, assert_matches_torch, torch


def _distinct(shape, seed):
    # well-separated values: no ties for max pooling
    values = np.random.default_rng(seed).permutation(int(np.prod(shape))).astype(np.float64)
    return values.reshape(shape) * 0.1


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2)),
    dict(kernel_size=2, dilation=2),
    dict(kernel_size=3, stride=2, ceil_mode=True),
])
def test_max_pool_matches_torch(kwargs):
    ours, theirs = nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs)
    assert_matches_torch(ours, theirs, _distinct((2, 3, 7, 6), 0))
    assert repr(ours) == repr(theirs)


def test_max_pool_return_indices_matches_torch():
    ours, theirs = nn.MaxPool2d(2, return_indices=True), torch.nn.MaxPool2d(2, return_indices=True)
    x = _distinct((1, 2, 4, 6), 1)
    (out, indices), (tout, tindices) = ours(gf.tensor(x)), theirs(torch.tensor(x))
    assert_close(out, tout, "values")
    np.testing.assert_array_equal(indices.numpy(), tindices.numpy())


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2, divisor_override=3),
])
def test_avg_pool_matches_torch(kwargs):
    ours, theirs = nn.AvgPool2d(**kwargs), torch.nn.AvgPool2d(**kwargs)
    assert_matches_torch(ours, theirs, np.random.default_rng(2).standard_normal((2, 3, 7, 6)))
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("output_size", [1, (3, 2), (None, 2), (7, 6)])
def test_adaptive_avg_pool_matches_torch(output_size):
    ours, theirs = nn.AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size)
    assert_matches_torch(ours, theirs, np.random.default_rng(3).standard_normal((2, 3, 7, 6)))
    assert repr(ours) == repr(theirs)
