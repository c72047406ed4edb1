"""The CUDA convolution kernels against the CPU ones, on tiny shapes.

Runs in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, numpy arrays) or on a real GPU
(cupy arrays); see conftest.py."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from gradflow import backend
from gradflow.kernels.cpu import conv as cpu
from gradflow.kernels.cuda import conv as cuda

ON_GPU = backend.cuda_available()


def device(array):
    return backend.to_device(array, "cuda") if ON_GPU else array


def host(array):
    return backend.to_numpy(array)


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 2))
    per_group_in, per_group_out = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    size = []
    for k, d, (p0, p1) in zip(kernel, dilation, padding):
        span = d * (k - 1) + 1
        size.append(max(1, span - p0 - p1) + draw(st.integers(0, 2)))
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**16))
    return dict(groups=groups, n=n, channels=groups * per_group_in, out_channels=groups * per_group_out,
                kernel=kernel, stride=stride, dilation=dilation, padding=padding, size=tuple(size), seed=seed)


@pytest.mark.cudasim
@given(case=conv_cases(), dtype=st.sampled_from([np.float32, np.float64]))
def test_cuda_matches_cpu(case, dtype):
    rng = np.random.default_rng(case["seed"])
    g, s, p, d = case["groups"], case["stride"], case["padding"], case["dilation"]
    x = rng.standard_normal((case["n"], case["channels"]) + case["size"]).astype(dtype)
    weight = rng.standard_normal((case["out_channels"], case["channels"] // g) + case["kernel"]).astype(dtype)
    bias = rng.standard_normal(case["out_channels"]).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5

    y_cpu = cpu.conv2d(x, weight, bias, s, p, d, g)
    y_gpu = host(cuda.conv2d(device(x), device(weight), device(bias), s, p, d, g))
    assert y_gpu.dtype == dtype
    np.testing.assert_allclose(y_gpu, y_cpu, rtol=tol, atol=tol)

    grad = rng.standard_normal(y_cpu.shape).astype(dtype)
    gx_cpu = cpu.conv_transpose2d(grad, weight, None, s, p, d, g, x.shape[2:])
    gx_gpu = host(cuda.conv_transpose2d(device(grad), device(weight), None, s, p, d, g, x.shape[2:]))
    np.testing.assert_allclose(gx_gpu, gx_cpu, rtol=tol, atol=tol)

    gw_cpu = cpu.conv2d_weight_grad(x, grad, weight.shape[2:], s, p, d, g)
    gw_gpu = host(cuda.conv2d_weight_grad(device(x), device(grad), weight.shape[2:], s, p, d, g))
    np.testing.assert_allclose(gw_gpu, gw_cpu, rtol=tol, atol=tol)


@pytest.mark.cudasim
def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for a strided, dilated, padded case."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6))
    kernel, stride, padding, dilation = (3, 2), (2, 1), ((1, 0), (2, 1)), (1, 2)
    out_hw = tuple(cuda.output_size(n, k, s, p, dl) for n, k, s, p, dl in zip(x.shape[2:], kernel, stride, padding, dilation))
    cols = device(np.empty((2, 3 * 6, out_hw[0] * out_hw[1])))
    cuda.im2col(device(x), kernel, stride, padding, dilation, out_hw, cols)
    c = rng.standard_normal(cols.shape)
    back = device(np.empty(x.shape))
    cuda.col2im(device(c), kernel, stride, padding, dilation, out_hw, back)
    np.testing.assert_allclose(float((host(cols) * c).sum()), float((x * host(back)).sum()), rtol=1e-12)
