"""nn.Conv2d and nn.ConvTranspose2d against torch.nn: every constructor argument, outputs and grads."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
import gradflow.nn as nn
from tests.nn.compare import assert_matches_torch, torch


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel = draw(st.sampled_from([1, 2, 3, (1, 3), (2, 3)]))
    dilation = draw(st.sampled_from([1, 2, (1, 2)]))
    padding = draw(st.sampled_from([0, 1, (1, 0), "same", "valid"]))
    stride = 1 if padding == "same" else draw(st.sampled_from([1, 2, (2, 1)]))
    bias = draw(st.booleans())
    size = draw(st.integers(5, 7))
    return dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel, stride=stride,
                padding=padding, dilation=dilation, groups=groups, bias=bias), size


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")   # torch's own note
@given(conv_configs(), st.integers(0, 2 ** 16))
def test_conv2d_matches_torch(config, seed):
    kwargs, size = config
    ours, theirs = nn.Conv2d(**kwargs), torch.nn.Conv2d(**kwargs)
    x = np.random.default_rng(seed).standard_normal((2, kwargs["in_channels"], size, size + 1))
    assert_matches_torch(ours, theirs, x, seed=seed)


@st.composite
def conv_transpose_configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel = draw(st.sampled_from([1, 2, 3, 4, (2, 3)]))
    stride = draw(st.sampled_from([1, 2, (2, 1)]))
    dilation = draw(st.sampled_from([1, 2]))
    padding = draw(st.sampled_from([0, 1, (1, 0)]))
    stride_pair = stride if isinstance(stride, tuple) else (stride, stride)
    # output_padding must be smaller than stride or dilation, per dimension
    output_padding = tuple(draw(st.integers(0, max(s, dilation) - 1)) for s in stride_pair)
    bias = draw(st.booleans())
    return dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel, stride=stride,
                padding=padding, output_padding=output_padding, groups=groups, bias=bias, dilation=dilation)


@given(conv_transpose_configs(), st.integers(0, 2 ** 16))
def test_conv_transpose2d_matches_torch(kwargs, seed):
    ours, theirs = nn.ConvTranspose2d(**kwargs), torch.nn.ConvTranspose2d(**kwargs)
    x = np.random.default_rng(seed).standard_normal((2, kwargs["in_channels"], 4, 3))
    assert_matches_torch(ours, theirs, x, seed=seed)


@pytest.mark.parametrize("output_size", [(9, 9), (10, 10), (2, 3, 10, 9)])
def test_conv_transpose2d_output_size_matches_torch(output_size):
    kwargs = dict(in_channels=3, out_channels=2, kernel_size=3, stride=2, padding=1)
    ours, theirs = nn.ConvTranspose2d(**kwargs), torch.nn.ConvTranspose2d(**kwargs)
    theirs.double()
    ours.double().load_state_dict(theirs.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    out = ours(gf.tensor(x), output_size=output_size)
    expected = theirs(torch.tensor(x), output_size=output_size)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_conv_transpose2d_output_size_out_of_range():
    layer = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    with pytest.raises(ValueError, match=r"requested an output size of \[12, 12\], "
                                         r"but valid sizes range from \[9, 9\] to \[10, 10\]"):
        layer(gf.zeros(1, 3, 5, 5), output_size=(12, 12))


@pytest.mark.parametrize("layer, expected_shape", [
    (lambda: nn.Conv2d(4, 6, 3, groups=2), (6, 2, 3, 3)),
    (lambda: nn.Conv2d(4, 6, (2, 5)), (6, 4, 2, 5)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, groups=2), (4, 3, 3, 3)),
])
def test_weight_layout(layer, expected_shape):
    assert layer().weight.shape == expected_shape
    assert layer().bias.shape == (6,)


@pytest.mark.parametrize("cls", [nn.Conv2d, nn.ConvTranspose2d])
def test_default_init_bounds_match_pytorch_formula(cls):
    # kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias uses the same bound.
    gf.manual_seed(0)
    layer = cls(16, 32, 3, groups=2)
    receptive = 9
    fan_in = (layer.weight.shape[1]) * receptive
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
    assert abs(w.mean()) < 0.05 * bound
    b = layer.bias.detach().numpy()
    assert np.abs(b).max() <= bound
    tlayer = getattr(torch.nn, cls.__name__)(16, 32, 3, groups=2)
    tbound = 1 / math.sqrt(torch.nn.init._calculate_fan_in_and_fan_out(tlayer.weight)[0])
    assert tbound == pytest.approx(bound)
    assert np.abs(tlayer.weight.detach().numpy()).max() <= tbound


def test_init_is_deterministic_under_manual_seed_and_float32_by_default():
    gf.manual_seed(5)
    a = nn.Conv2d(3, 4, 3)
    gf.manual_seed(5)
    b = nn.Conv2d(3, 4, 3)
    assert a.weight.dtype == gf.float32 and a.bias.dtype == gf.float32
    np.testing.assert_array_equal(a.weight.detach().numpy(), b.weight.detach().numpy())
    np.testing.assert_array_equal(a.bias.detach().numpy(), b.bias.detach().numpy())
    c = nn.Conv2d(3, 4, 3, dtype=gf.float64)
    assert c.weight.dtype == gf.float64


def test_repr_matches_torch():
    cases = [dict(in_channels=3, out_channels=8, kernel_size=3, padding=1),
             dict(in_channels=4, out_channels=8, kernel_size=(1, 3), stride=2, dilation=2, groups=2, bias=False),
             dict(in_channels=3, out_channels=3, kernel_size=4, padding="same"),
             dict(in_channels=3, out_channels=3, kernel_size=3, padding_mode="reflect")]
    for kwargs in cases:
        assert repr(nn.Conv2d(**kwargs)) == repr(torch.nn.Conv2d(**kwargs))
    kwargs = dict(in_channels=4, out_channels=2, kernel_size=4, stride=2, padding=1, output_padding=1)
    assert repr(nn.ConvTranspose2d(**kwargs)) == repr(torch.nn.ConvTranspose2d(**kwargs))


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), "in_channels must be divisible by groups"),
    (dict(in_channels=4, out_channels=3, kernel_size=3, groups=2), "out_channels must be divisible by groups"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, groups=0), "groups must be a positive integer"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding="full"), "Invalid padding string 'full'"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding="same"),
     "padding='same' is not supported for strided convolutions"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding_mode="mirror"), "padding_mode must be one of"),
])
def test_conv2d_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.Conv2d(**kwargs)


def test_conv_transpose2d_rejects_padding_modes():
    with pytest.raises(ValueError, match='Only "zeros" padding mode'):
        nn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_conv2d_padding_modes_match_torch(padding_mode):
    # Conv2d pads with F.pad(mode=padding_mode) first, as PyTorch
    kwargs = dict(in_channels=2, out_channels=3, kernel_size=3, padding=(1, 2), padding_mode=padding_mode)
    ours, theirs = nn.Conv2d(**kwargs), torch.nn.Conv2d(**kwargs)
    assert_matches_torch(ours, theirs, np.random.default_rng(0).standard_normal((2, 2, 5, 6)))
