"""nn.init against torch.nn.init: gains, fans, distributions' bounds and moments, determinism."""
import math

import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
from gradflow.nn import init
from tests.nn.compare import torch


@pytest.mark.parametrize("nonlinearity, param", [
    ("linear", None), ("conv2d", None), ("conv_transpose2d", None), ("sigmoid", None), ("tanh", None),
    ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 3), ("selu", None)])
def test_calculate_gain_matches_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == torch.nn.init.calculate_gain(nonlinearity, param)


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="Unsupported nonlinearity gelu"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="negative_slope True not a valid number"):
        init.calculate_gain("leaky_relu", True)


@pytest.mark.parametrize("shape", [(4, 3), (8, 3, 3, 3), (6, 2, 1, 5), (3, 4, 2)])
def test_fans_match_torch(shape):
    assert init._calculate_fan_in_and_fan_out(gf.zeros(*shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))


def test_fans_need_two_dims_and_valid_mode():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(gf.zeros(5))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(gf.zeros(3, 3), mode="fan_avg")


SHAPE = (64, 32, 3, 3)   # fan_in 288, fan_out 576


def _std_bound(name, **kwargs):
    """(std, bound or None) PyTorch documents for each initialiser on SHAPE."""
    fan_in, fan_out = 32 * 9, 64 * 9
    if name == "kaiming_uniform_":
        mode = kwargs.get("mode", "fan_in")
        gain = torch.nn.init.calculate_gain(kwargs.get("nonlinearity", "leaky_relu"), kwargs.get("a", 0))
        std = gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)
        return std, math.sqrt(3) * std
    if name == "kaiming_normal_":
        mode = kwargs.get("mode", "fan_in")
        gain = torch.nn.init.calculate_gain(kwargs.get("nonlinearity", "leaky_relu"), kwargs.get("a", 0))
        return gain / math.sqrt(fan_in if mode == "fan_in" else fan_out), None
    if name == "xavier_uniform_":
        std = kwargs.get("gain", 1.0) * math.sqrt(2 / (fan_in + fan_out))
        return std, math.sqrt(3) * std
    if name == "xavier_normal_":
        return kwargs.get("gain", 1.0) * math.sqrt(2 / (fan_in + fan_out)), None
    raise KeyError(name)


@pytest.mark.parametrize("name, kwargs", [
    ("kaiming_uniform_", {}), ("kaiming_uniform_", dict(a=math.sqrt(5))),
    ("kaiming_uniform_", dict(mode="fan_out", nonlinearity="relu")),
    ("kaiming_normal_", dict(nonlinearity="relu")), ("kaiming_normal_", dict(mode="fan_out", nonlinearity="relu")),
    ("xavier_uniform_", {}), ("xavier_uniform_", dict(gain=2.0)), ("xavier_normal_", dict(gain=0.5)),
])
def test_random_initialisers_have_pytorch_moments_and_bounds(name, kwargs):
    gf.manual_seed(0)
    t = getattr(init, name)(gf.zeros(*SHAPE), **kwargs)
    values = t.numpy()
    std, bound = _std_bound(name, **kwargs)
    # 18432 samples: the sample std is within ~1% of the true one
    assert abs(values.std() / std - 1) < 0.03
    assert abs(values.mean()) < 0.05 * std
    if bound is not None:
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.99 * bound
    # torch's own draw has the same moments (the formula above is torch's)
    theirs = getattr(torch.nn.init, name)(torch.zeros(SHAPE), **kwargs).numpy()
    assert abs(theirs.std() / std - 1) < 0.03


def test_uniform_normal_constant_and_dtype_preserved():
    gf.manual_seed(1)
    t = init.uniform_(gf.zeros(1000, dtype=gf.float64), -2.0, 3.0)
    assert t.dtype == gf.float64 and t.numpy().min() >= -2 and t.numpy().max() < 3
    assert abs(t.numpy().mean() - 0.5) < 0.15
    n = init.normal_(gf.zeros(4000), mean=1.0, std=0.5)
    assert n.dtype == gf.float32 and abs(n.numpy().mean() - 1) < 0.03 and abs(n.numpy().std() - 0.5) < 0.03
    assert (init.constant_(gf.zeros(3), 2.5).numpy() == 2.5).all()
    assert (init.ones_(gf.zeros(2, 2)).numpy() == 1).all() and (init.zeros_(gf.ones(2)).numpy() == 0).all()


def test_initialisers_work_on_parameters_and_are_seeded():
    p = nn.Parameter(gf.zeros(5, 4))
    gf.manual_seed(3)
    first = init.kaiming_normal_(p).detach().numpy().copy()
    assert p.requires_grad
    gf.manual_seed(3)
    np.testing.assert_array_equal(init.kaiming_normal_(p).detach().numpy(), first)
    own = np.random.default_rng(9)
    a = init.xavier_uniform_(gf.zeros(3, 3), generator=own).numpy()
    b = init.xavier_uniform_(gf.zeros(3, 3), generator=np.random.default_rng(9)).numpy()
    np.testing.assert_array_equal(a, b)


def test_zero_element_tensor_warns_and_is_left_alone():
    with pytest.warns(UserWarning, match="zero-element tensors is a no-op"):
        init.kaiming_uniform_(gf.zeros(0, 3))


def test_bilinear_kernel_is_the_fcn_kernel():
    np.testing.assert_allclose(init.bilinear_kernel(4, 4)[0], [0.0625, 0.1875, 0.1875, 0.0625])
    np.testing.assert_allclose(init.bilinear_kernel(3, 3), np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))
    np.testing.assert_allclose(init.bilinear_kernel(4, 4).sum(), 4.0)   # stride 2: each output gets weight 1


def test_bilinear_upsampling_puts_the_kernel_on_the_channel_diagonal():
    layer = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, bias=False)
    init.bilinear_upsampling_(layer.weight)
    w = layer.weight.detach().numpy()
    for i in range(3):
        for j in range(3):
            expected = init.bilinear_kernel(4, 4) if i == j else np.zeros((4, 4))
            np.testing.assert_allclose(w[i, j], expected)
    depthwise = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, groups=3, bias=False)
    init.bilinear_upsampling_(depthwise.weight, groups=3)
    np.testing.assert_allclose(depthwise.weight.detach().numpy()[:, 0], np.stack([init.bilinear_kernel(4, 4)] * 3))


@pytest.mark.parametrize("factor", [2, 4])
def test_bilinear_upsampling_layer_equals_bilinear_interpolation_inside(factor):
    # kernel 2f, stride f, padding f/2: a transposed conv with the FCN kernel is bilinear interpolation
    # (align_corners=False) away from the border.
    layer = nn.ConvTranspose2d(2, 2, 2 * factor, stride=factor, padding=factor // 2, bias=False).double()
    init.bilinear_upsampling_(layer.weight)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6))
    ours = layer(gf.tensor(x)).detach().numpy()
    expected = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=factor, mode="bilinear",
                                               align_corners=False).numpy()
    assert ours.shape == expected.shape
    inner = slice(factor, -factor)
    np.testing.assert_allclose(ours[..., inner, inner], expected[..., inner, inner], rtol=1e-10, atol=1e-12)


def test_bilinear_upsampling_rejects_non_4d_weights():
    with pytest.raises(ValueError, match="expects a 4-d ConvTranspose2d weight, got shape \\(3, 3\\)"):
        init.bilinear_upsampling_(gf.zeros(3, 3))
