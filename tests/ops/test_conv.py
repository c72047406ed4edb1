"""conv2d and conv_transpose2d: gradchecks and PyTorch comparisons over the argument
space (through the op table), fixed cases for every kernel path, errors, dtypes."""
import numpy as np
import pytest
from hypothesis import strategies as st

import gradflow as gf
from gradflow.kernels.cpu import conv as cpu_conv
from gradflow.ops.conv import conv2d, conv_transpose2d
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, check_against_torch, op_tests

try:
    import torch
    import torch.nn.functional as torch_F
except ImportError:      # gradchecks and error tests still run without torch
    torch = torch_F = None


# ---- samples ------------------------------------------------------------------------

def _dilation_for(draw, kernel):
    """Dilation 1-3, but a dilated kernel spans at most 7 pixels (gradcheck is O(numel))."""
    return draw(st.integers(1, max(1, min(3, 6 // max(1, kernel - 1)))))


def _grad_subset(draw, has_bias):
    """Differentiate all inputs, or only some (backward must skip the others)."""
    choices = [None, (0,), (1,), (0, 1)] + ([(2,), (0, 2)] if has_bias else [])
    return draw(st.sampled_from(choices))


@st.composite
def conv2d_general(draw, kernels=st.integers(1, 5), strides=st.integers(1, 3), max_channels=2, dilations=None):
    groups = draw(st.integers(1, 2))
    per_group_in = draw(st.integers(1, max_channels))
    per_group_out = draw(st.integers(1, max_channels))
    kernel = (draw(kernels), draw(kernels))
    dilation = tuple(_dilation_for(draw, k) if dilations is None else draw(dilations) for k in kernel)
    kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    stride = (1, 1) if kind == "same" else (draw(strides), draw(strides))
    if kind == "int":
        padding = draw(st.integers(0, 2))
        pads = (padding, padding)
    elif kind == "pair":
        padding = pads = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    else:
        padding, pads = kind, (0, 0)
    size = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 3))
                 for k, d, p in zip(kernel, dilation, pads))
    if kind == "same":
        size = tuple(draw(st.integers(1, 4)) for _ in size)
    n = draw(st.integers(1, 2))
    x = draw(arrays((n, groups * per_group_in) + size))
    weight = draw(arrays((groups * per_group_out, per_group_in) + kernel))
    bias = draw(arrays((groups * per_group_out,))) if draw(st.booleans()) else None
    kwargs = dict(stride=_maybe_int(draw, stride), padding=padding,
                  dilation=_maybe_int(draw, dilation), groups=groups)
    return Sample((x, weight, bias), kwargs, grad=_grad_subset(draw, bias is not None))


def _maybe_int(draw, pair):
    return pair[0] if pair[0] == pair[1] and draw(st.booleans()) else pair


@st.composite
def conv2d_3x3(draw):
    """3x3 stride 1: small outputs take the GEMM path, wider ones (one or two rows of more
    than GEMM_PIXELS) the direct kernels, incl. blocks of 4 output channels plus a tail."""
    groups = draw(st.integers(1, 2))
    per_group_in, per_group_out = draw(st.integers(1, 2)), draw(st.integers(1, 6))
    padding = draw(st.sampled_from([0, 1, 2, (0, 2), (2, 1), "same"]))
    pads = {"same": (1, 1)}.get(padding, padding if isinstance(padding, tuple) else (padding, padding))
    size = [max(1, 3 - 2 * p) + draw(st.integers(0, 3)) for p in pads]
    n = draw(st.integers(1, 2))
    if draw(st.booleans()):     # the direct kernels
        size = [max(1, 3 - 2 * pads[0]) + draw(st.integers(0, 1)),
                cpu_conv.GEMM_PIXELS + 3 - 2 * pads[1] + draw(st.integers(0, 2))]
        n = 1
    x = draw(arrays((n, groups * per_group_in) + tuple(size)))
    weight = draw(arrays((groups * per_group_out, per_group_in, 3, 3)))
    bias = draw(arrays((groups * per_group_out,))) if draw(st.booleans()) else None
    return Sample((x, weight, bias), dict(padding=padding, groups=groups), grad=_grad_subset(draw, bias is not None))


@st.composite
def conv2d_pointwise(draw):
    """1x1 without padding: the matmul path, strided or not."""
    groups = draw(st.integers(1, 2))
    x = draw(arrays((draw(st.integers(1, 2)), groups * draw(st.integers(1, 3)),
                     draw(st.integers(1, 5)), draw(st.integers(1, 5)))))
    weight = draw(arrays((groups * draw(st.integers(1, 3)), x.shape[1] // groups, 1, 1)))
    bias = draw(arrays((weight.shape[0],))) if draw(st.booleans()) else None
    kwargs = dict(stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), groups=groups,
                  dilation=draw(st.integers(1, 2)))
    return Sample((x, weight, bias), kwargs, grad=_grad_subset(draw, bias is not None))


@st.composite
def conv_transpose2d_general(draw, kernels=st.integers(1, 5), strides=st.integers(1, 3), paddings=st.integers(0, 2)):
    groups = draw(st.integers(1, 2))
    per_group_in, per_group_out = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = (draw(kernels), draw(kernels))
    dilation = tuple(_dilation_for(draw, k) for k in kernel)
    stride = (draw(strides), draw(strides))
    padding = (draw(paddings), draw(paddings))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = []
    for k, d, s, p, op in zip(kernel, dilation, stride, padding, output_padding):
        h = draw(st.integers(1, 3))
        while (h - 1) * s - 2 * p + d * (k - 1) + op + 1 < 1:   # output must be at least 1 pixel
            h += 1
        size.append(h)
    x = draw(arrays((draw(st.integers(1, 2)), groups * per_group_in) + tuple(size)))
    weight = draw(arrays((groups * per_group_in, per_group_out) + kernel))
    bias = draw(arrays((groups * per_group_out,))) if draw(st.booleans()) else None
    kwargs = dict(stride=_maybe_int(draw, stride), padding=_maybe_int(draw, padding),
                  output_padding=output_padding, groups=groups, dilation=_maybe_int(draw, dilation))
    return Sample((x, weight, bias), kwargs, grad=_grad_subset(draw, bias is not None))


CONV2D_SAMPLES = st.one_of(
    conv2d_general(), conv2d_3x3(), conv2d_pointwise(),
    conv2d_general(kernels=st.sampled_from([3, 4]), strides=st.just(2), dilations=st.just(1), max_channels=5),
)                                                   # the last: the stride-2 space-to-depth paths
CONV_TRANSPOSE2D_SAMPLES = st.one_of(
    conv_transpose2d_general(),
    conv_transpose2d_general(kernels=st.just(3), strides=st.just(1)),                    # direct path
    conv_transpose2d_general(kernels=st.just(4), strides=st.just(2), paddings=st.just(1)),  # FCN upsampling
    conv_transpose2d_general(kernels=st.just(1)),                                        # matmul path
)


# ---- errors -------------------------------------------------------------------------

def _z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


def _t32(*shape):
    return gf.zeros(*shape, dtype=gf.float32)


X, W = _z(1, 4, 5, 5), _z(2, 4, 3, 3)
CONV2D_ERRORS = (
    ErrorInput(Sample((_z(4, 5), W)), RuntimeError, r"3D \(unbatched\) or 4D \(batched\) input, got 2D"),
    ErrorInput(Sample((_z(1, 1, 4, 5, 5), W)), RuntimeError, r"got 5D"),
    ErrorInput(Sample((X, _z(2, 4, 3))), RuntimeError, r"expected a 4D weight"),
    ErrorInput(Sample((_z(1, 3, 5, 5), W)), RuntimeError, r"input has 3 channels.*expects 4 x 1 = 4"),
    ErrorInput(Sample((X, _z(3, 2, 3, 3)), dict(groups=2)), RuntimeError, r"groups=2 does not divide the 3 output"),
    ErrorInput(Sample((_z(1, 3, 5, 5), _z(2, 1, 3, 3)), dict(groups=2)), RuntimeError,
               r"groups=2 does not divide the 3 input"),
    ErrorInput(Sample((X, W), dict(groups=0)), ValueError, r"groups must be positive, got 0"),
    ErrorInput(Sample((X, W), dict(groups=1.5)), TypeError, r"groups must be an int"),
    ErrorInput(Sample((X, W), dict(stride=0)), ValueError, r"stride must be positive"),
    ErrorInput(Sample((X, W), dict(stride=(1, 0))), ValueError, r"stride must be positive"),
    ErrorInput(Sample((X, W), dict(stride=1.5)), TypeError, r"stride must be an int or a pair"),
    ErrorInput(Sample((X, W), dict(stride=(1, 2, 3))), ValueError, r"stride must be an int or a pair"),
    ErrorInput(Sample((X, W), dict(dilation=0)), ValueError, r"dilation must be positive"),
    ErrorInput(Sample((X, W), dict(padding=-1)), ValueError, r"padding must be non-negative"),
    ErrorInput(Sample((X, W), dict(padding="full")), ValueError, r"invalid padding string 'full'"),
    ErrorInput(Sample((X, W), dict(padding="same", stride=2)), ValueError, r"'same' is not supported for strided"),
    ErrorInput(Sample((_z(1, 4, 2, 5), W)), RuntimeError, r"\(2 x 5\) is smaller than the dilated kernel \(3 x 3\)"),
    ErrorInput(Sample((X, W), dict(dilation=3)), RuntimeError, r"\(5 x 5\) is smaller than the dilated kernel \(7 x 7\)"),
    ErrorInput(Sample((X, W, _z(3))), RuntimeError, r"bias must have shape \(2,\).*got \(3,\)"),
    ErrorInput(Sample((X, _z(0, 4, 3, 3))), RuntimeError, r"zero-size dimension"),
    ErrorInput(Sample((X, _z(2, 4, 0, 3))), RuntimeError, r"zero-size dimension"),
    ErrorInput(Sample((_z(1, 4, 0, 5), W)), RuntimeError, r"zero-size channel or spatial"),
    ErrorInput(Sample((np.zeros((1, 4, 5, 5), dtype=np.int64), W)), TypeError, r"floating point input.*int64"),
    ErrorInput(Sample((_t32(1, 4, 5, 5), gf.zeros(2, 4, 3, 3, dtype=gf.float64))), TypeError,
               r"input dtype \(float32\) and weight dtype \(float64\) should be the same"),
    ErrorInput(Sample((_t32(1, 4, 5, 5), _t32(2, 4, 3, 3), gf.zeros(2, dtype=gf.float64))), TypeError,
               r"bias dtype \(float64\)"),
    ErrorInput(Sample((gf.zeros(1, 4, 5, 5, dtype=gf.float16), W)), TypeError, r"float32 or float64\), got float16"),
    ErrorInput(Sample((X.tolist(), W)), TypeError, r"input must be a Tensor, got list"),
)

XT, WT = _z(1, 4, 3, 3), _z(4, 2, 3, 3)
CONV_TRANSPOSE2D_ERRORS = (
    ErrorInput(Sample((XT, WT), dict(stride=2, output_padding=2)), ValueError,
               r"output_padding \(2, 2\) must be smaller than either stride \(2, 2\) or dilation \(1, 1\)"),
    ErrorInput(Sample((XT, WT), dict(output_padding=1)), ValueError, r"output_padding \(1, 1\) must be smaller"),
    ErrorInput(Sample((XT, WT), dict(stride=2, dilation=3, output_padding=(2, 3))), ValueError,
               r"output_padding \(2, 3\) must be smaller"),
    ErrorInput(Sample((XT, WT), dict(output_padding=-1)), ValueError, r"output_padding must be non-negative"),
    ErrorInput(Sample((_z(1, 3, 3, 3), WT)), RuntimeError, r"input has 3 channels.*expects 4"),
    ErrorInput(Sample((_z(1, 3, 3, 3), _z(3, 1, 3, 3)), dict(groups=2)), RuntimeError,
               r"groups=2 does not divide the 3 input"),
    ErrorInput(Sample((XT, WT), dict(groups=-1)), ValueError, r"groups must be positive"),
    ErrorInput(Sample((XT, WT), dict(stride=0)), ValueError, r"stride must be positive"),
    ErrorInput(Sample((XT, WT), dict(dilation=(0, 1))), ValueError, r"dilation must be positive"),
    ErrorInput(Sample((XT, WT), dict(padding="same")), TypeError, r"padding must be an int or a pair"),
    ErrorInput(Sample((XT, WT), dict(padding=-2)), ValueError, r"padding must be non-negative"),
    ErrorInput(Sample((_z(1, 4, 1, 1), _z(4, 2, 1, 1)), dict(padding=1)), RuntimeError,
               r"output of size \(-1 x -1\), which is too small"),
    ErrorInput(Sample((XT, WT, _z(4))), RuntimeError, r"bias must have shape \(2,\)"),
    ErrorInput(Sample((_z(4, 3, 3, 3, 1), WT)), RuntimeError, r"3D \(unbatched\) or 4D"),
    ErrorInput(Sample((XT, _z(4, 2, 3))), RuntimeError, r"4D weight"),
    ErrorInput(Sample((XT, _z(4, 0, 3, 3))), RuntimeError, r"zero-size dimension"),
    ErrorInput(Sample((np.zeros((1, 4, 3, 3), dtype=np.int32), WT)), TypeError, r"floating point input.*int32"),
    ErrorInput(Sample((_t32(1, 4, 3, 3), gf.zeros(4, 2, 3, 3, dtype=gf.float64))), TypeError,
               r"should be the same"),
)

OPS = [
    OpInfo("conv2d", conv2d, samples=CONV2D_SAMPLES,
           torch_op=torch_F.conv2d if torch_F else None, errors=CONV2D_ERRORS),
    OpInfo("conv_transpose2d", conv_transpose2d, samples=CONV_TRANSPOSE2D_SAMPLES,
           torch_op=torch_F.conv_transpose2d if torch_F else None, errors=CONV_TRANSPOSE2D_ERRORS),
]

test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


# ---- fixed cases: every kernel path, against PyTorch ------------------------------------

def _sample(x_shape, w_shape, bias=True, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    x, w = rng.uniform(-2, 2, x_shape), rng.uniform(-2, 2, w_shape)
    transposed = kwargs.pop("transposed", False)
    channels = w_shape[1] * kwargs.get("groups", 1) if transposed else w_shape[0]
    b = rng.uniform(-2, 2, channels) if bias else None
    return Sample((x, w, b), kwargs)


CONV2D_CASES = {
    "direct 3x3 pad 1": _sample((2, 5, 9, 8), (7, 5, 3, 3), padding=1),
    "direct 3x3 pad 0 groups": _sample((2, 4, 6, 7), (6, 2, 3, 3), groups=2),
    "direct 3x3 pad (2, 0) no bias": _sample((1, 3, 4, 6), (5, 3, 3, 3), bias=False, padding=(2, 0)),
    "direct 3x3 depthwise": _sample((2, 4, 5, 5), (4, 1, 3, 3), padding=1, groups=4),
    "direct 3x3 1 channel": _sample((1, 1, 4, 4), (1, 1, 3, 3), padding="same"),
    "3x3 pad 3 (im2col)": _sample((1, 2, 4, 4), (3, 2, 3, 3), padding=3),
    "3x3 stride 2": _sample((2, 3, 9, 8), (4, 3, 3, 3), stride=2, padding=1),
    "3x3 dilation 2 'same'": _sample((1, 2, 7, 6), (3, 2, 3, 3), dilation=2, padding="same"),
    "even kernel 'same' (asymmetric)": _sample((1, 2, 5, 6), (3, 2, 4, 2), padding="same"),
    "dilated even kernel 'same'": _sample((1, 2, 7, 6), (3, 2, 2, 4), padding="same", dilation=(3, 1)),
    "5x5 'valid'": _sample((2, 2, 6, 7), (2, 2, 5, 5), padding="valid"),
    "1x3 stride (1, 2) dilation (1, 2)": _sample((2, 2, 5, 9), (3, 2, 1, 3), stride=(1, 2), dilation=(1, 2)),
    "1x1": _sample((2, 6, 4, 5), (5, 6, 1, 1)),
    "1x1 stride 2 groups 3": _sample((2, 6, 5, 5), (3, 2, 1, 1), stride=2, groups=3),
    "1x1 pad 1 (im2col)": _sample((1, 2, 3, 3), (2, 2, 1, 1), padding=1),
}
CONV_TRANSPOSE2D_CASES = {
    "k4 s2 p1 (FCN upsampling)": _sample((2, 5, 4, 4), (5, 5, 4, 4), transposed=True, stride=2, padding=1),
    "direct 3x3 s1 p1": _sample((2, 6, 5, 4), (6, 5, 3, 3), transposed=True, padding=1),
    "direct 3x3 s1 p2 groups": _sample((1, 4, 5, 5), (4, 3, 3, 3), transposed=True, padding=2, groups=2),
    "3x3 s2 output_padding 1": _sample((1, 2, 3, 4), (2, 3, 3, 3), transposed=True, stride=2, padding=1,
                                       output_padding=1),
    "dilation 2 output_padding (1, 0)": _sample((1, 2, 3, 3), (2, 2, 3, 2), transposed=True, dilation=2,
                                                output_padding=(1, 0), bias=False),
    "1x1 stride 2 output_padding 1": _sample((2, 3, 3, 3), (3, 4, 1, 1), transposed=True, stride=2,
                                             output_padding=1),
    "1x1": _sample((2, 3, 3, 3), (3, 4, 1, 1), transposed=True),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CONV2D_CASES))
def test_conv2d_case_matches_torch(name, dtype):
    check_against_torch(OPS[0], CONV2D_CASES[name], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CONV_TRANSPOSE2D_CASES))
def test_conv_transpose2d_case_matches_torch(name, dtype):
    check_against_torch(OPS[1], CONV_TRANSPOSE2D_CASES[name], dtype)


@pytest.mark.parametrize("name", ["direct 3x3 pad 1", "3x3 stride 2", "1x1 stride 2 groups 3"])
def test_conv2d_case_gradcheck(name):
    sample = CONV2D_CASES[name]
    args = [gf.tensor(a, requires_grad=True) if isinstance(a, np.ndarray) else a for a in sample.args]
    gf.gradcheck(lambda *a: conv2d(*a, **sample.kwargs), args)


# ---- semantics beyond the table -------------------------------------------------------

def test_float32_in_float32_out_and_grads():
    x = gf.randn(2, 3, 6, 6, requires_grad=True)
    w = gf.randn(4, 3, 3, 3, requires_grad=True)
    b = gf.randn(4, requires_grad=True)
    y = conv2d(x, w, b, padding=1)
    z = conv_transpose2d(y, gf.randn(4, 2, 4, 4, requires_grad=True), stride=2, padding=1)
    z.sum().backward()
    assert y.dtype == z.dtype == gf.float32
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == gf.float32


def test_unbatched_input_is_one_image():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 5, 6)), rng.standard_normal((2, 3, 3, 3))
    single = conv2d(gf.tensor(x), gf.tensor(w), padding=1)
    batched = conv2d(gf.tensor(x[None]), gf.tensor(w), padding=1)
    assert single.shape == (2, 5, 6)
    np.testing.assert_array_equal(single.numpy(), batched.numpy()[0])
    wt = rng.standard_normal((3, 2, 4, 4))
    up = conv_transpose2d(gf.tensor(x), gf.tensor(wt), stride=2, padding=1)
    assert up.shape == (2, 10, 12)


@pytest.mark.parametrize("op, weight_shape", [(conv2d, (2, 3, 3, 3)), (conv_transpose2d, (3, 2, 3, 3))])
def test_empty_batch(op, weight_shape):
    x = gf.zeros(0, 3, 5, 5, dtype=gf.float64, requires_grad=True)
    w = gf.ones(*weight_shape, dtype=gf.float64, requires_grad=True)
    y = op(x, w, padding=1)
    assert y.shape == (0, 2, 5, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
    assert not w.grad.numpy().any()


@pytest.mark.parametrize("frozen, kernel", [("weight", "conv2d_weight_grad"), ("input", "conv_transpose2d")])
def test_conv2d_backward_skips_gradients_nobody_needs(monkeypatch, frozen, kernel):
    def forbidden(*args):
        raise AssertionError(f"{kernel} was called although its gradient is not needed")
    monkeypatch.setattr(cpu_conv, kernel, forbidden)
    x = gf.randn(1, 2, 5, 5, requires_grad=frozen != "input")
    w = gf.randn(3, 2, 3, 3, requires_grad=frozen != "weight")
    conv2d(x, w, padding=1).sum().backward()
    assert (x.grad is None) == (frozen == "input") and (w.grad is None) == (frozen == "weight")


@pytest.mark.parametrize("frozen, kernel", [("weight", "conv2d_weight_grad"), ("input", "conv2d")])
def test_conv_transpose2d_backward_skips_gradients_nobody_needs(monkeypatch, frozen, kernel):
    def forbidden(*args):
        raise AssertionError(f"{kernel} was called although its gradient is not needed")
    x = gf.randn(1, 2, 4, 4, requires_grad=frozen != "input")
    w = gf.randn(2, 3, 4, 4, requires_grad=frozen != "weight")
    y = conv_transpose2d(x, w, stride=2, padding=1)
    monkeypatch.setattr(cpu_conv, kernel, forbidden)
    y.sum().backward()
    assert (x.grad is None) == (frozen == "input") and (w.grad is None) == (frozen == "weight")


def test_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 7, 3)).transpose(0, 3, 1, 2)       # (2, 3, 6, 7), not C-contiguous
    w = rng.standard_normal((3, 3, 4, 3)).transpose(0, 1, 3, 2)       # (3, 3, 3, 4), not C-contiguous
    y = conv2d(gf.tensor(x), gf.tensor(w), padding=1)
    expected = conv2d(gf.tensor(np.ascontiguousarray(x)), gf.tensor(np.ascontiguousarray(w)), padding=1)
    np.testing.assert_array_equal(y.numpy(), expected.numpy())


def test_function_api_names_the_ops():
    import gradflow.functional as F
    assert F.conv2d is conv2d and F.conv_transpose2d is conv_transpose2d
