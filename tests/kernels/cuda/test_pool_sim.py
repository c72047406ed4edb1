"""The CUDA pooling kernels against the CPU ones, on tiny shapes.

Runs in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, numpy arrays) or on a real GPU
(cupy arrays); see conftest.py."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from gradflow import backend
from gradflow.kernels.cpu import pool as cpu
from gradflow.kernels.cuda import pool as cuda
from gradflow.ops import pool

ON_GPU = backend.cuda_available()
DEVICE = "cuda" if ON_GPU else "cpu"     # where the window tables live for the CUDA kernels


def device(array):
    return backend.to_device(array, "cuda") if ON_GPU else array


def host(array):
    return backend.to_numpy(array)


@st.composite
def pool_cases(draw, dilated):
    """Window tables for the CPU kernels and the same ones on the CUDA kernels' device."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilated else (1, 1)
    ceil_mode = draw(st.booleans())
    include_pad = draw(st.booleans())
    divisor = draw(st.one_of(st.none(), st.integers(1, 4)))
    size = tuple(d * (k - 1) + 1 + draw(st.integers(0, 3)) for k, d in zip(kernel, dilation))
    if draw(st.booleans()):   # adaptive windows: overlapping, of varying widths
        out = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        tables = [(pool.adaptive_windows(n, o), pool.adaptive_windows(n, o, DEVICE)) for n, o in zip(size, out)]
    else:
        tables = [tuple(pool.sliding_windows(n, k, s, p, d, ceil_mode, include_pad, divisor, where)
                        for where in ("cpu", DEVICE))
                  for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)]
    return dict(size=size, tables=tables, seed=draw(st.integers(0, 2**16)))


def _dtype_tol(dtype):
    return 1e-12 if dtype == np.float64 else 1e-5


@pytest.mark.cudasim
@given(case=pool_cases(dilated=True), dtype=st.sampled_from([np.float32, np.float64]))
def test_max_pool_matches_cpu(case, dtype):
    rng = np.random.default_rng(case["seed"])
    (rows, rows_dev), (cols, cols_dev) = case["tables"]
    shape = (2, 2) + case["size"]
    x = (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1).astype(dtype)
    out, indices = cpu.max_pool2d_forward(x, rows, cols)
    out_dev, indices_dev = cuda.max_pool2d_forward(device(x), rows_dev, cols_dev)
    assert host(out_dev).dtype == dtype and host(indices_dev).dtype == np.int64
    np.testing.assert_array_equal(host(out_dev), out)
    np.testing.assert_array_equal(host(indices_dev), indices)
    grad = rng.standard_normal(out.shape).astype(dtype)
    tol = _dtype_tol(dtype)
    np.testing.assert_allclose(host(cuda.max_pool2d_backward(device(grad), device(indices), rows_dev, cols_dev)),
                               cpu.max_pool2d_backward(grad, indices, rows, cols), rtol=tol, atol=tol)


@pytest.mark.cudasim
@given(case=pool_cases(dilated=False), dtype=st.sampled_from([np.float32, np.float64]))
def test_avg_pool_matches_cpu(case, dtype):
    rng = np.random.default_rng(case["seed"])
    (rows, rows_dev), (cols, cols_dev) = case["tables"]
    x = rng.standard_normal((2, 2) + case["size"]).astype(dtype)
    tol = _dtype_tol(dtype)
    out = cpu.avg_pool2d_forward(x, rows, cols)
    np.testing.assert_allclose(host(cuda.avg_pool2d_forward(device(x), rows_dev, cols_dev)), out, rtol=tol, atol=tol)
    grad = rng.standard_normal(out.shape).astype(dtype)
    np.testing.assert_allclose(host(cuda.avg_pool2d_backward(device(grad), rows_dev, cols_dev)),
                               cpu.avg_pool2d_backward(grad, rows, cols), rtol=tol, atol=tol)


@pytest.mark.cudasim
def test_max_pool_ties_and_nan_match_cpu():
    """Ties go to the first maximum, a NaN wins its window, on both kernels."""
    rows = pool.sliding_windows(4, 2, 1, 1)
    rows_dev = pool.sliding_windows(4, 2, 1, 1, device=DEVICE)
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2, 1] = np.nan
    out, indices = cpu.max_pool2d_forward(x, rows, rows)
    out_dev, indices_dev = cuda.max_pool2d_forward(device(x), rows_dev, rows_dev)
    np.testing.assert_array_equal(host(indices_dev), indices)
    np.testing.assert_array_equal(host(out_dev), out)     # NaNs in the same places
    assert np.isnan(out).sum() == 4
