"""CPU convolution kernels: im2col/col2im against a direct definition, and every fast
path (direct 3x3, GEMM of small images, 1x1 matmul) against the general im2col path it replaces."""
import re

import numba
import numpy as np
import pytest
from hypothesis import given, strategies as st

from gradflow.kernels.cpu import conv, conv_direct, conv_gemm
from gradflow.kernels.cpu import im2col as columns


def naive_im2col(x, kernel, stride, pads, dilation, out_hw):
    n, c, h, w = x.shape
    cols = np.zeros((n, c * kernel[0] * kernel[1], out_hw[0] * out_hw[1]), dtype=x.dtype)
    for ch in range(c):
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                for oy in range(out_hw[0]):
                    for ox in range(out_hw[1]):
                        y = oy * stride[0] - pads[0] + i * dilation[0]
                        xx = ox * stride[1] - pads[1] + j * dilation[1]
                        if 0 <= y < h and 0 <= xx < w:
                            cols[:, (ch * kernel[0] + i) * kernel[1] + j, oy * out_hw[1] + ox] = x[:, ch, y, xx]
    return cols


@st.composite
def geometries(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    size = tuple(max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4)) for k, d, p in zip(kernel, dilation, pads))
    out_hw = tuple(conv.output_size(s, k, st_, (p, p), d) for s, k, st_, p, d in zip(size, kernel, stride, pads, dilation))
    return kernel, stride, pads, dilation, size, out_hw, draw(st.integers(0, 2**16))


@given(geometries())
def test_im2col_matches_definition(geometry):
    kernel, stride, pads, dilation, size, out_hw, seed = geometry
    x = np.random.default_rng(seed).standard_normal((2, 3) + size)
    cols = np.full((2, 3 * kernel[0] * kernel[1], out_hw[0] * out_hw[1]), np.nan)   # every entry must be written
    columns.im2col(x, *kernel, *stride, *pads, *dilation, *out_hw, cols)
    np.testing.assert_array_equal(cols, naive_im2col(x, kernel, stride, pads, dilation, out_hw))


@given(geometries())
def test_col2im_is_the_adjoint_of_im2col(geometry):
    kernel, stride, pads, dilation, size, out_hw, seed = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3) + size)
    c = rng.standard_normal((2, 3 * kernel[0] * kernel[1], out_hw[0] * out_hw[1]))
    back = np.full(x.shape, np.nan)
    columns.col2im(c, *kernel, *stride, *pads, *dilation, *out_hw, back)
    lhs = float((naive_im2col(x, kernel, stride, pads, dilation, out_hw) * c).sum())
    assert np.isclose(lhs, float((x * back).sum()), rtol=1e-10, atol=1e-10)


def run_all(x, weight, bias, stride, padding, dilation, groups):
    """conv2d, its input gradient (conv_transpose2d) and weight gradient, through the public kernels."""
    y = conv.conv2d(x, weight, bias, stride, padding, dilation, groups)
    grad = np.random.default_rng(7).standard_normal(y.shape).astype(x.dtype)
    gx = conv.conv_transpose2d(grad, weight, None, stride, padding, dilation, groups, x.shape[2:])
    gw = conv.conv2d_weight_grad(x, grad, weight.shape[2:], stride, padding, dilation, groups)
    return y, gx, gw


def general_path_only(monkeypatch):
    monkeypatch.setattr(conv, "_path", lambda *args: "columns")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, out_channels, groups, padding, path", [
    ((2, 5, 9, 8), 9, 1, ((1, 1), (1, 1)), "direct"),       # 2 blocks of 4 channels + a tail of 1
    ((1, 2, 3, 2046), 4, 1, ((1, 1), (1, 1)), "direct"),    # the widest direct case: one row per chunk
    ((1, 2, 40, 30), 5, 1, ((1, 1), (1, 1)), "direct"),     # several row chunks
    ((2, 8, 9, 16), 10, 2, ((1, 1), (1, 1)), "direct"),     # 4x4 bands (width a vector multiple) + row and channel tails
    ((1, 4, 70, 32), 8, 2, ((1, 1), (1, 1)), "direct"),     # bands over two chunks, the second partial, + 2 tail rows
    ((3, 4, 32, 32), 4, 1, ((1, 1), (1, 1)), "direct"),     # 2 whole images per chunk of bands, then 1
    ((1, 4, 6, 7), 6, 2, ((0, 0), (2, 2)), "gemm"),         # small images: groups, 3 channels each
    ((2, 3, 5, 4), 8, 1, ((2, 0), (0, 1)), "gemm"),         # asymmetric padding ('same' with even kernels)
    ((1, 6, 4, 4), 6, 6, ((1, 1), (1, 1)), "gemm"),         # depthwise
    ((5, 6, 8, 8), 7, 1, ((1, 1), (1, 1)), "gemm"),         # the largest GEMM_PIXELS output
])
@pytest.mark.parametrize("chunk_bytes", [None, 1])           # 1: one image per chunk, chunks across threads
@pytest.mark.parametrize("bands", [True, False])             # the 4x4 bands of 512-bit code, or flattened only
def test_3x3_stride1_paths_match_general_path(monkeypatch, shape, out_channels, groups, padding, path, dtype,
                                              chunk_bytes, bands):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal((out_channels, shape[1] // groups, 3, 3)).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype)
    args = ((1, 1), padding, (1, 1), groups)
    out_hw = (shape[2] + sum(padding[0]) - 2, shape[3] + sum(padding[1]) - 2)
    assert conv._path((3, 3), (1, 1), padding, (1, 1), out_hw) == path    # the path under test is taken
    if chunk_bytes:
        monkeypatch.setattr(conv_gemm, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(conv_direct, "BANDS", bands)
    fast = run_all(x, weight, bias, *args)
    general_path_only(monkeypatch)
    reference = run_all(x, weight, bias, *args)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got, expected in zip(fast, reference):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, out_channels, groups", [((5, 6, 8, 8), 7, 1), ((3, 6, 4, 5), 9, 3)])
def test_gemm_chunks_through_numpy_when_kernels_cannot_call_blas(monkeypatch, shape, out_channels, groups, dtype):
    """Where gradflow.kernels.cpu.blas finds no BLAS to call from a kernel, the chunks run on
    Python threads around NumPy's matmul, with the same results."""
    from gradflow.kernels.cpu import blas
    assert blas.GEMM_ADDRESSES, "NumPy's bundled OpenBLAS was not found: the in-kernel GEMMs go untested"
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal((out_channels, shape[1] // groups, 3, 3)).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype)
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1), groups)
    assert conv._path((3, 3), (1, 1), args[1], (1, 1), shape[2:]) == "gemm"
    monkeypatch.setattr(conv_gemm, "CHUNK_BYTES", 1)              # one image per chunk
    in_kernels = run_all(x, weight, bias, *args)
    monkeypatch.setattr(blas, "GEMM_ADDRESSES", {})
    through_numpy = run_all(x, weight, bias, *args)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got, expected in zip(through_numpy, in_kernels):
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max())


def test_gemm_chunks_cover_the_batch_evenly():
    assert conv_gemm.chunks(16, conv_gemm.CHUNK_BYTES // 3) == [(0, 3), (3, 3), (6, 3), (9, 3), (12, 2), (14, 2)]
    assert conv_gemm.chunks(7, conv_gemm.CHUNK_BYTES // 3) == [(0, 3), (3, 2), (5, 2)]
    assert conv_gemm.chunks(5, 10 * conv_gemm.CHUNK_BYTES) == [(n, 1) for n in range(5)]
    assert conv_gemm.chunks(4, 1) == [(0, 4)]
    assert conv_gemm.chunks(0, 1) == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel, path", [(4, "phases"), (3, "stride2")])
@pytest.mark.parametrize("shape, out_channels, groups, padding, out_hw", [
    ((2, 5, 8, 8), 16, 1, ((1, 1), (1, 1)), None),      # the FCN upsampler's adjoint (k4 s2 p1)
    ((1, 4, 7, 9), 10, 2, ((0, 2), (1, 0)), None),      # groups, odd sizes and counts, asymmetric padding
    ((2, 3, 5, 6), 5, 1, ((2, 2), (0, 0)), (6, 7)),     # an input gradient with output_padding rows
])
def test_stride2_paths_match_general_path(monkeypatch, shape, out_channels, groups, padding, out_hw, kernel,
                                          path, dtype):
    """Stride-2 kernels on the input's space-to-depth phases: 4x4 as a 2x2 stride-1 conv,
    3x3 by its own kernels (conv_stride2)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal((out_channels, shape[1] // groups, kernel, kernel)).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype)
    args = ((2, 2), padding, (1, 1), groups)
    y_hw = tuple(conv.output_size(s, kernel, 2, p, 1) for s, p in zip(shape[2:], padding))
    assert conv._path((kernel, kernel), (2, 2), padding, (1, 1), y_hw) == path
    fast = list(run_all(x, weight, bias, *args))
    grad = rng.standard_normal((shape[0], out_channels) + y_hw).astype(dtype)
    image_hw = out_hw or shape[2:]
    fast.append(conv.conv_transpose2d(grad, weight, None, *args, image_hw))
    general_path_only(monkeypatch)
    reference = list(run_all(x, weight, bias, *args))
    reference.append(conv.conv_transpose2d(grad, weight, None, *args, image_hw))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got, expected in zip(fast, reference):
        assert got.dtype == dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max())


@st.composite
def phase_geometries(draw):
    """A 2s x 2s kernel with stride s (any padding, groups, odd sizes), and an image size for
    the transposed convolution that may carry output_padding rows and columns."""
    factor = draw(st.sampled_from([2, 3, 4, 8]))
    kernel = 2 * factor
    groups = draw(st.integers(1, 2))
    channels, out_channels = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 5))
    padding = tuple((draw(st.integers(0, kernel - 1)), draw(st.integers(0, kernel - 1))) for _ in range(2))
    size = tuple(max(1, kernel - sum(p)) + draw(st.integers(0, 2 * factor + 3)) for p in padding)
    y_hw = tuple(conv.output_size(d, kernel, factor, p, 1) for d, p in zip(size, padding))
    image_hw = tuple(d + draw(st.integers(0, factor - 1)) for d in size)
    image_hw = tuple(i if conv.output_size(i, kernel, factor, p, 1) == y else d
                     for i, d, p, y in zip(image_hw, size, padding, y_hw))
    shape = (draw(st.integers(1, 2)), channels) + size
    return factor, shape, out_channels, groups, padding, y_hw, image_hw, draw(st.integers(0, 2**16))


@given(phase_geometries())
def test_phase_path_matches_general_path_at_any_stride(geometry):
    """conv2d, conv_transpose2d and the weight gradient of 2s x 2s kernels at stride s (FCN's
    upsamplers: k4 s2, k16 s8) on the s * s phases, against im2col + BLAS."""
    factor, shape, out_channels, groups, padding, y_hw, image_hw, seed = geometry
    rng = np.random.default_rng(seed)
    kernel = 2 * factor
    x = rng.standard_normal(shape)
    weight = rng.standard_normal((out_channels, shape[1] // groups, kernel, kernel))
    bias, image_bias = rng.standard_normal(out_channels), rng.standard_normal(shape[1])
    grad = rng.standard_normal((shape[0], out_channels) + y_hw)
    args = ((factor, factor), padding, (1, 1), groups)
    assert conv._path((kernel, kernel), (factor, factor), padding, (1, 1), y_hw) == "phases"

    def all_three():
        return (conv.conv2d(x, weight, bias, *args), conv.conv_transpose2d(grad, weight, image_bias, *args, image_hw),
                conv.conv2d_weight_grad(x, grad, (kernel, kernel), *args))
    fast = all_three()
    with pytest.MonkeyPatch.context() as patch:
        general_path_only(patch)
        reference = all_three()
    for got, expected in zip(fast, reference):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("kernel, stride, shape", [
    (3, 1, (3, 5, 40, 44)),       # 3x3: 3 images side by side, spans across their borders
    (4, 2, (2, 5, 100, 90)),      # 2x2 on the phases of k4 s2: 50 rows of pitch 46
    (3, 2, (2, 5, 130, 100)),     # 3x3 stride 2 on its phases: 65 rows of pitch 51
])
def test_weight_gradient_in_spans_matches_general_path(kernel, stride, shape):
    """Planes longer than WEIGHT_SPAN are summed span by span (the last one partial)."""
    rng = np.random.default_rng(2)
    padding = ((1, 1), (1, 1))
    y_hw = tuple(conv.output_size(d, kernel, stride, (1, 1), 1) for d in shape[2:])
    path = conv._path((kernel, kernel), (stride, stride), padding, (1, 1), y_hw)
    one_image = y_hw[0] * (y_hw[1] + (2 if stride == 1 else 1))      # positions summed per plane
    assert path == {1: "direct", 2: "stride2" if kernel == 3 else "phases"}[stride]
    assert one_image > conv_direct.WEIGHT_SPAN
    x = rng.standard_normal(shape)
    grad = rng.standard_normal((shape[0], 7) + y_hw)
    args = ((stride, stride), padding, (1, 1), 1)
    fast = conv.conv2d_weight_grad(x, grad, (kernel, kernel), *args)
    with pytest.MonkeyPatch.context() as patch:
        general_path_only(patch)
        reference = conv.conv2d_weight_grad(x, grad, (kernel, kernel), *args)
    np.testing.assert_allclose(fast, reference, rtol=1e-12, atol=1e-12 * np.abs(reference).max())


@pytest.mark.parametrize("stride, groups", [((1, 1), 1), ((2, 3), 2)])
def test_pointwise_matches_general_path_and_never_uses_im2col(monkeypatch, stride, groups):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 7, 8))
    weight = rng.standard_normal((6, 4 // groups, 1, 1))
    args = (stride, ((0, 0), (0, 0)), (1, 1), groups)
    reference = None
    with monkeypatch.context() as patch:
        general_path_only(patch)
        reference = run_all(x, weight, None, *args)

    def forbidden(*a):
        raise AssertionError("a 1x1 convolution went through im2col/col2im")
    monkeypatch.setattr(columns, "im2col", forbidden)
    monkeypatch.setattr(columns, "col2im", forbidden)
    for got, expected in zip(run_all(x, weight, None, *args), reference):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_reused_buffers_stay_zero_padded():
    """Padded planes are reused per geometry; only their interior is rewritten. Convolving
    different images (and geometries sharing shapes) in turn must equal fresh results."""
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((4, 3, 3, 3))
    images = [rng.standard_normal((2, 3, 6, 5)) * 100 for _ in range(3)]
    paddings = [((1, 1), (1, 1)), ((2, 0), (0, 2)), ((0, 2), (2, 0))]
    results = {}
    for _ in range(2):
        for k, x in enumerate(images):
            for padding in paddings:
                y = conv.conv2d(x, weight, None, (1, 1), padding, (1, 1), 1)
                key = (k, padding)
                if key in results:
                    np.testing.assert_array_equal(y, results[key])
                results[key] = y
    # and against the general path
    for (k, padding), y in results.items():
        cols = naive_im2col(images[k], (3, 3), (1, 1), (padding[0][0], padding[1][0]), (1, 1),
                            y.shape[2:])
        expected = np.matmul(weight.reshape(4, -1), cols).reshape(y.shape)
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-9)


def test_buffers_of_many_layers_are_all_kept_within_the_byte_budget():
    """A network's layers each have their own geometry: with more of them than any fixed
    count, every buffer must still be reused (not zeroed afresh) step after step."""
    conv.forget_buffers()
    keys = [(("test", k), (k + 1, 8)) for k in range(80)]
    first = [conv._scratch(key, shape, np.float32) for key, shape in keys]
    again = [conv._scratch(key, shape, np.float32) for key, shape in keys]
    assert all(a is b for a, b in zip(first, again))
    conv.forget_buffers()


def test_buffers_beyond_the_byte_budget_drop_the_least_recently_used(monkeypatch):
    monkeypatch.setattr(conv, "SCRATCH_BYTES", 3 * 4096)
    conv.forget_buffers()
    a, b, c = (conv._scratch(("test", k), (1024,), np.float32) for k in "abc")
    assert conv._scratch(("test", "a"), (1024,), np.float32) is a       # a is now the most recent
    source = np.ones(1024, np.float32)
    conv._fill_once(b, source, lambda: None, reuse=False)
    conv._scratch(("test", "d"), (1024,), np.float32)                  # over budget: b goes
    assert conv._scratch(("test", "a"), (1024,), np.float32) is a
    assert conv._scratch(("test", "c"), (1024,), np.float32) is c
    assert (b.ctypes.data, b.shape) not in conv._fill_records()        # its fill record with it
    assert conv._scratch(("test", "b"), (1024,), np.float32) is not b
    huge = conv._scratch(("test", "huge"), (8192,), np.float32)        # larger than the budget alone
    assert conv._scratch(("test", "huge"), (8192,), np.float32) is huge
    conv.forget_buffers()


@pytest.mark.parametrize("stride, size", [((1, 1), 64), ((2, 2), 12)])
def test_weight_gradient_reuses_the_forward_planes_only_for_the_same_input(stride, size):
    """The weight gradient skips re-padding its input when the forward just padded that
    very array into the same buffer; any other array (another input of the same shape in
    between, a new array after the old one died) is copied in again."""
    rng = np.random.default_rng(11)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    args = (stride, ((1, 1), (1, 1)), (1, 1), 1)

    def fresh_weight_grad(x, grad):
        conv.forget_buffers()
        return conv.conv2d_weight_grad(x, grad, (3, 3), *args)

    x1, x2 = (rng.standard_normal((2, 3, size, size)).astype(np.float32) for _ in range(2))
    y = conv.conv2d(x1, weight, None, *args)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    expected1, expected2 = fresh_weight_grad(x1, grad), fresh_weight_grad(x2, grad)
    conv.conv2d(x1, weight, None, *args)
    np.testing.assert_array_equal(conv.conv2d_weight_grad(x1, grad, (3, 3), *args), expected1)
    conv.conv2d(x1, weight, None, *args)
    conv.conv2d(x2, weight, None, *args)               # refills the buffer from x2
    np.testing.assert_array_equal(conv.conv2d_weight_grad(x1, grad, (3, 3), *args), expected1)
    np.testing.assert_array_equal(conv.conv2d_weight_grad(x2, grad, (3, 3), *args), expected2)
    conv.conv2d(x2, weight, None, *args)
    del x2
    x3 = x1 * 3                                        # a new array, possibly at the dead one's id
    np.testing.assert_array_equal(conv.conv2d_weight_grad(x3, grad, (3, 3), *args), fresh_weight_grad(x3, grad))


def test_direct_kernel_is_vectorised():
    """An unvectorised direct kernel raises no error, it only makes convolutions 5-7x slower.
    (A fresh, uncached compile: cached functions have no assembly to inspect.)"""
    taps4 = numba.njit(fastmath=conv_direct.FASTMATH)(conv_direct._taps4.py_func)
    plane = np.zeros(64, dtype=np.float32)
    acc = np.zeros(4 * conv_direct.CHUNK, dtype=np.float32)
    taps4(plane, np.ones((4, 1, 3, 3), dtype=np.float32), 0, 0, 0, 10, 40, acc)
    assert acc[:40].sum() == 0
    asm = "".join(taps4.inspect_asm().values())
    assert re.search(r"vfmadd\d+ps\s+[^\n]*%[yz]mm", asm), "no packed FMA in the direct 3x3 kernel"
    taps4x4 = numba.njit(fastmath=conv_direct.FASTMATH)(conv_direct._taps4x4.py_func)
    acc = np.zeros(16 * conv_direct.SLAB, dtype=np.float32)
    taps4x4(np.zeros((1, 1, 8 * 18 + 2), dtype=np.float32), 0, np.ones((4, 1, 3, 3), dtype=np.float32), 0, 0,
            0, 1, 0, 18, 16, 1, acc)
    assert acc.sum() == 0
    asm = "".join(taps4x4.inspect_asm().values())
    assert re.search(r"vfmadd\d+ps\s+[^\n]*%[yz]mm", asm), "no packed FMA in the banded 3x3 kernel"
