"""max/avg/adaptive pooling against finite differences and PyTorch (the op table),
plus what the table cannot express: ties, NaNs, indices, cached window tables."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
from gradflow.kernels.cpu import pool as cpu_pool
from gradflow.ops import pool
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, op_tests

torch = pytest.importorskip("torch")
torch_F = torch.nn.functional


def distinct_values(shape, seed):
    """Well-separated values (gaps of 0.1), so no finite-difference step crosses a tie."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) - np.prod(shape) / 2) * 0.1


def _every_window_sees_the_input(size, kernel, stride, padding, dilation, ceil_mode):
    # a dilated window can step over a tiny input entirely (max -inf, no argmax): PyTorch
    # leaves that undefined, so the table never draws it
    return bool((pool.sliding_windows(size, kernel, stride, padding, dilation, ceil_mode).count > 0).all())


@st.composite
def sliding_samples(draw, max_pool):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if max_pool else (1, 1)
    ceil_mode = draw(st.booleans())
    size = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 3))
                 for k, p, d in zip(kernel, padding, dilation))
    s = stride or kernel
    if max_pool and not all(_every_window_sees_the_input(*a, ceil_mode)
                            for a in zip(size, kernel, s, padding, dilation)):
        size = tuple(max(n, d * (k - 1) + 1) for n, k, d in zip(size, kernel, dilation))
    lead = draw(st.sampled_from([(1, 1), (2, 1), (1, 2), (2,)]))   # (2,) = a 3-D (C, H, W) input
    shape = lead + size
    # ints and pairs, as PyTorch takes either
    as_arg = (lambda v: v[0] if v[0] == v[1] and draw(st.booleans()) else v)
    kwargs = dict(kernel_size=as_arg(kernel), stride=None if stride is None else as_arg(stride),
                  padding=as_arg(padding), ceil_mode=ceil_mode)
    if max_pool:
        kwargs["dilation"] = as_arg(dilation)
        x = distinct_values(shape, draw(st.integers(0, 2**32 - 1)))
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 5)))
        x = draw(arrays(shape))
    return Sample((x,), kwargs)


@st.composite
def adaptive_samples(draw, max_pool):
    size = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    out = draw(st.one_of(st.integers(1, 5), st.tuples(st.one_of(st.none(), st.integers(1, 5)),
                                                       st.one_of(st.none(), st.integers(1, 5)))))
    shape = draw(st.sampled_from([(1, 1), (2, 1), (1, 2), (2,)])) + size
    seed = draw(st.integers(0, 2**32 - 1))
    x = distinct_values(shape, seed) if max_pool else np.random.default_rng(seed).uniform(-2, 2, shape)
    return Sample((x,), dict(output_size=out))


def _x(*shape):
    return np.arange(np.prod(shape), dtype=np.float64).reshape(shape)


POOL_ERRORS = (
    ErrorInput(Sample((_x(1, 1, 5, 5),), dict(kernel_size=2, padding=2)), ValueError, "at most half of kernel_size"),
    ErrorInput(Sample((_x(1, 1, 5, 5),), dict(kernel_size=2, stride=0)), ValueError, "stride must be positive"),
    ErrorInput(Sample((_x(1, 1, 5, 5),), dict(kernel_size=0)), ValueError, "kernel_size must be positive"),
    ErrorInput(Sample((_x(1, 1, 5, 5),), dict(kernel_size=6)), ValueError, r"too small .* output would be \(0, 0\)"),
    ErrorInput(Sample((_x(1, 1, 5, 5),), dict(kernel_size=(2, 2, 2))), ValueError, "pair of ints"),
    ErrorInput(Sample((_x(1, 1, 5, 5),), dict(kernel_size=2.0)), TypeError, "kernel_size must be an int"),
    ErrorInput(Sample((_x(5, 5),), dict(kernel_size=2)), ValueError, r"3-D \(C, H, W\) or 4-D"),
    ErrorInput(Sample((_x(1, 1, 5, 5),), dict(kernel_size=2, padding=-1)), ValueError, "non-negative"),
)

OPS = [
    OpInfo("max_pool2d", pool.max_pool2d, sliding_samples(max_pool=True), torch_op=torch_F.max_pool2d,
           errors=POOL_ERRORS + (
               ErrorInput(Sample((_x(1, 1, 5, 5),), dict(kernel_size=2, dilation=0)), ValueError, "dilation"),)),
    # the indices: PyTorch's flat h*W+w per plane, compared exactly
    OpInfo("max_pool2d_indices", lambda x, **kw: pool.max_pool2d(x, return_indices=True, **kw)[1],
           sliding_samples(max_pool=True), gradcheck=False,
           torch_op=lambda x, **kw: torch_F.max_pool2d(x, return_indices=True, **kw)[1]),
    OpInfo("max_pool2d_return_indices", lambda x, **kw: pool.max_pool2d(x, return_indices=True, **kw),
           sliding_samples(max_pool=True), output_index=0,
           torch_op=lambda x, **kw: torch_F.max_pool2d(x, return_indices=True, **kw)),
    OpInfo("avg_pool2d", pool.avg_pool2d, sliding_samples(max_pool=False), torch_op=torch_F.avg_pool2d,
           errors=POOL_ERRORS + (
               ErrorInput(Sample((_x(1, 1, 5, 5),), dict(kernel_size=2, divisor_override=0)), ValueError,
                          "divisor_override must not be zero"),)),
    OpInfo("adaptive_avg_pool2d", pool.adaptive_avg_pool2d, adaptive_samples(max_pool=False),
           torch_op=torch_F.adaptive_avg_pool2d,
           errors=(ErrorInput(Sample((_x(1, 1, 5, 5),), dict(output_size=-1)), ValueError, "non-negative"),
                   ErrorInput(Sample((_x(1, 1, 5, 5),), dict(output_size=(1, 2, 3))), ValueError, "pair"),
                   ErrorInput(Sample((_x(1, 1, 5, 5),), dict(output_size=1.5)), TypeError, "output_size"))),
    OpInfo("adaptive_max_pool2d", pool.adaptive_max_pool2d, adaptive_samples(max_pool=True),
           torch_op=torch_F.adaptive_max_pool2d),
    OpInfo("adaptive_max_pool2d_indices", lambda x, **kw: pool.adaptive_max_pool2d(x, return_indices=True, **kw)[1],
           adaptive_samples(max_pool=True), gradcheck=False,
           torch_op=lambda x, **kw: torch_F.adaptive_max_pool2d(x, return_indices=True, **kw)[1]),
]
test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


def _both(a, fn, torch_fn, **kw):
    """Forward outputs and input gradients (for a fixed cotangent) of gradflow and torch."""
    x, t = gf.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    out, ref = fn(x, **kw), torch_fn(t, **kw)
    out, ref = (out if isinstance(out, tuple) else (out,)), (ref if isinstance(ref, tuple) else (ref,))
    cotangent = np.random.default_rng(0).standard_normal(ref[0].shape)
    out[0].backward(gf.tensor(cotangent))
    ref[0].backward(torch.tensor(cotangent))
    return [o.detach().numpy() for o in out], [r.detach().numpy() for r in ref], x.grad.numpy(), t.grad.numpy()


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),
                                dict(kernel_size=2, stride=1, dilation=2, ceil_mode=True)])
def test_max_pool_ties_pick_the_first_maximum_like_torch(kw):
    a = np.zeros((1, 2, 5, 5))
    a[0, 1, 1:4, 1:4] = 1.0          # plateaus of ties, and windows of all-equal zeros
    outs, refs, grad, ref_grad = _both(a, pool.max_pool2d, torch_F.max_pool2d, return_indices=True, **kw)
    np.testing.assert_array_equal(outs[1], refs[1])
    np.testing.assert_array_equal(outs[0], refs[0])
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_max_pool_nan_wins_its_window_like_torch():
    a = distinct_values((1, 1, 4, 4), 0)
    a[0, 0, 0, 1] = np.nan
    a[0, 0, 3, 3] = np.nan
    outs, refs, grad, ref_grad = _both(a, pool.max_pool2d, torch_F.max_pool2d, kernel_size=2, return_indices=True)
    np.testing.assert_array_equal(outs[1], refs[1])
    np.testing.assert_array_equal(np.isnan(outs[0]), np.isnan(refs[0]))
    np.testing.assert_allclose(grad, ref_grad)


@given(st.integers(2, 9), st.integers(2, 9), st.booleans(), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2**32 - 1))
def test_max_pool_2x2_stride_2_matches_torch_on_ties_nans_and_infinities(height, width, ceil_mode, dtype, seed):
    """Kernel 2, stride 2 without padding runs a branch-free kernel of its own: values,
    argmax indices and the gradient against PyTorch, with ties, NaNs and infinities in
    the windows and odd sizes (with ceil_mode, their clipped last window)."""
    values = np.array([-np.inf, -1.0, 0.0, 0.0, 1.0, 1.0, np.inf, np.nan])
    a = np.random.default_rng(seed).choice(values, size=(2, 3, height, width)).astype(dtype)
    outs, refs, grad, ref_grad = _both(a, pool.max_pool2d, torch_F.max_pool2d, kernel_size=2,
                                       return_indices=True, ceil_mode=ceil_mode)
    np.testing.assert_array_equal(outs[1], refs[1])
    np.testing.assert_array_equal(outs[0], refs[0])        # NaNs compare equal here
    np.testing.assert_array_equal(grad, ref_grad)


def test_only_unpadded_2x2_stride_2_windows_take_the_pairs_kernel():
    pairs = cpu_pool._adjacent_pairs
    assert pairs(pool.sliding_windows(8, 2, 2, 0)) and pairs(pool.sliding_windows(9, 2, 2, 0))
    assert pairs(pool.sliding_windows(8, 2, 2, 0, 1, True))          # ceil_mode, nothing clipped
    assert not pairs(pool.sliding_windows(9, 2, 2, 0, 1, True))      # a clipped last window
    assert not pairs(pool.sliding_windows(8, 2, 2, 1))               # padding
    assert not pairs(pool.sliding_windows(8, 2, 1, 0))               # stride 1
    assert not pairs(pool.sliding_windows(8, 2, 2, 0, 2))            # dilation
    assert not pairs(pool.sliding_windows(9, 3, 2, 0))               # kernel 3


def test_max_pool_padding_is_minus_infinity():
    a = -np.ones((1, 1, 2, 2)) - distinct_values((1, 1, 2, 2), 1) ** 2   # all negative: a zero pad would win
    outs, refs, _, _ = _both(a, pool.max_pool2d, torch_F.max_pool2d, kernel_size=3, stride=1, padding=1)
    np.testing.assert_array_equal(outs[0], refs[0])
    assert (outs[0] < 0).all()


def test_indices_are_int64_and_do_not_require_grad():
    x = gf.tensor(distinct_values((2, 3, 4, 4), 2), requires_grad=True)
    out, indices = pool.max_pool2d(x, 2, return_indices=True)
    assert indices.dtype == gf.int64 and not indices.requires_grad and out.requires_grad
    out, indices = pool.adaptive_max_pool2d(x, 3, return_indices=True)
    assert indices.dtype == gf.int64 and not indices.requires_grad


def test_float32_in_float32_out_close_to_float64():
    a = np.random.default_rng(3).standard_normal((2, 3, 9, 8))
    for fn, kw in [(pool.max_pool2d, dict(kernel_size=3, stride=2, padding=1)),
                   (pool.avg_pool2d, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
                   (pool.adaptive_avg_pool2d, dict(output_size=(4, 3)))]:
        out32 = fn(gf.tensor(a.astype(np.float32)), **kw)
        assert out32.dtype == gf.float32
        np.testing.assert_allclose(out32.numpy(), fn(gf.tensor(a), **kw).numpy(), rtol=1e-6, atol=1e-6)


def test_non_contiguous_input_and_gradient():
    a = distinct_values((2, 3, 6, 6), 4)
    x = gf.tensor(a, requires_grad=True)
    xt = x.permute(0, 1, 3, 2)                       # a transposed (non-contiguous) view
    out = pool.max_pool2d(xt, 2)
    out.permute(0, 1, 3, 2).sum().backward()         # and a non-contiguous gradient
    t = torch.tensor(a, requires_grad=True)
    ref = torch_F.max_pool2d(t.permute(0, 1, 3, 2), 2)
    ref.permute(0, 1, 3, 2).sum().backward()
    np.testing.assert_array_equal(out.detach().numpy(), ref.detach().numpy())
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())


def test_adaptive_output_size_zero_gives_an_empty_result_like_torch():
    a = np.ones((1, 2, 3, 3))
    ref = torch_F.adaptive_avg_pool2d(torch.tensor(a), (0, 2))
    x = gf.tensor(a, requires_grad=True)
    out = pool.adaptive_avg_pool2d(x, (0, 2))
    assert out.shape == tuple(ref.shape) == (1, 2, 0, 2)
    out.sum().backward()           # PyTorch refuses this backward; nothing flows back
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(a.shape))


def test_window_tables_are_cached_per_geometry():
    assert pool.sliding_windows(9, 3, 2, 1) is pool.sliding_windows(9, 3, 2, 1)
    rows = pool.sliding_windows(9, 3, 2, 1, 1, True, False)
    # covers: input i lies in the windows that list it as a tap, in increasing order
    for i in range(9):
        windows = rows.covers[rows.cover_start[i]:rows.cover_start[i + 1]]
        taps = [o for o in range(len(rows.first)) if rows.first[o] <= i < rows.first[o] + rows.count[o]]
        assert list(windows) == taps
