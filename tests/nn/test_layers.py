"""Linear, activations, Identity, Flatten, Upsample and Dropout against torch.nn."""
import math

import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
from tests.nn.compare import assert_matches_torch, torch


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5)])
def test_linear_matches_torch(bias, shape):
    ours, theirs = nn.Linear(5, 3, bias=bias), torch.nn.Linear(5, 3, bias=bias)
    assert_matches_torch(ours, theirs, _x(*shape))
    assert repr(ours) == repr(theirs)


def test_linear_default_init_bounds():
    gf.manual_seed(0)
    layer = nn.Linear(64, 128)
    bound = 1 / math.sqrt(64)
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    assert 0.95 * bound < np.abs(w).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert np.abs(b).max() <= bound


@pytest.mark.parametrize("make", [
    lambda m: m.ReLU(), lambda m: m.Sigmoid(), lambda m: m.Tanh(),
    lambda m: m.Softmax(dim=1), lambda m: m.LogSoftmax(dim=-1), lambda m: m.Identity(3, unused=True),
    lambda m: m.Flatten(), lambda m: m.Flatten(0, 2),
    lambda m: m.Upsample(scale_factor=2), lambda m: m.Upsample(size=(5, 7), mode="bilinear"),
    lambda m: m.Upsample(scale_factor=(2, 1.5), mode="bilinear", align_corners=True),
    lambda m: m.Dropout(0.3), lambda m: m.Dropout2d(0.3),
])
def test_parameterless_layers_match_torch(make):
    ours, theirs = make(nn), make(torch.nn)
    ours.eval(), theirs.eval()   # dropout is the identity in eval mode
    assert_matches_torch(ours, theirs, _x(2, 3, 4, 4) + 0.01)
    assert repr(ours) == repr(theirs)


def test_inplace_flags_compute_the_same_values():
    # gradflow never modifies graph tensors in place: inplace=True is accepted and changes nothing
    x = gf.tensor(_x(2, 3), requires_grad=True)
    np.testing.assert_array_equal(nn.ReLU(inplace=True)(x).detach().numpy(), np.maximum(x.detach().numpy(), 0))
    assert repr(nn.ReLU(inplace=True)) == repr(torch.nn.ReLU(inplace=True)) == "ReLU(inplace=True)"
    assert repr(nn.Dropout(0.1, inplace=True)) == repr(torch.nn.Dropout(0.1, inplace=True))


@pytest.mark.parametrize("cls, p", [(nn.Dropout, 0.25), (nn.Dropout2d, 0.5)])
def test_dropout_training_zeroes_and_rescales(cls, p):
    gf.manual_seed(0)
    layer = cls(p)
    x = gf.ones(8, 64, 3, 3, requires_grad=True)
    out = layer(x).detach().numpy()
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / (1 - p))
    assert abs(1 - kept.mean() - p) < 0.08   # >= 512 independent draws: 3.5 standard deviations
    if cls is nn.Dropout2d:   # whole channels are kept or dropped together
        per_channel = kept.reshape(8, 64, -1)
        assert (per_channel.all(axis=2) | ~per_channel.any(axis=2)).all()
    gf.manual_seed(0)
    np.testing.assert_array_equal(cls(p)(x).detach().numpy(), out)   # seeded: the same mask


def test_dropout_rejects_bad_probability():
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        nn.Dropout(1.5)
