"""The CUDA batch/group norm kernels against the CPU ones, on tiny shapes.

Runs in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, numpy arrays) or on a real GPU
(cupy arrays); see conftest.py. The simulator runs each GPU thread as a Python thread,
so these draw few examples."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gradflow import backend
from gradflow.kernels.cpu import norm as cpu
from gradflow.kernels.cuda import norm as cuda

ON_GPU = backend.cuda_available()


def device(array):
    return None if array is None else backend.to_device(array, "cuda") if ON_GPU else array


def host(array):
    return backend.to_numpy(array)


@st.composite
def norm_cases(draw):
    groups = draw(st.integers(1, 2))
    shape = (draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)), draw(st.integers(2, 5)))
    return dict(shape=shape, groups=groups, relu=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
                dtype=draw(st.sampled_from([np.float32, np.float64])))


def _inputs(case):
    rng = np.random.default_rng(case["seed"])
    dtype, channels = case["dtype"], case["shape"][1]
    x = (rng.standard_normal(case["shape"]) * 2 + 1).astype(dtype)
    weight = rng.uniform(-1.5, 1.5, channels).astype(dtype)
    bias = rng.uniform(-1, 1, channels).astype(dtype)
    grad = rng.standard_normal(case["shape"]).astype(dtype)
    return x, weight, bias, grad


def _close(got, expected, dtype):
    tol = 1e-12 if dtype == np.float64 else 2e-5   # the CPU kernels do element math in float32
    for g, e in zip(got, expected):
        assert host(g).dtype == e.dtype
        np.testing.assert_allclose(host(g), e, rtol=tol, atol=tol)


@pytest.mark.cudasim
@settings(max_examples=4)
@given(case=norm_cases(), training=st.booleans())
def test_batch_norm_matches_cpu(case, training):
    x, weight, bias, grad = _inputs(case)
    relu, dtype = case["relu"], case["dtype"]
    if training:
        expected = cpu.batch_norm_train_forward(x, weight, bias, 1e-5, relu)
        _close(cuda.batch_norm_train_forward(device(x), device(weight), device(bias), 1e-5, relu), expected, dtype)
        y, mean, _, invstd = expected
    else:
        mean = np.random.default_rng(1).uniform(-1, 1, x.shape[1])
        invstd = np.random.default_rng(2).uniform(0.5, 2, x.shape[1])
        y = cpu.batch_norm_eval_forward(x, mean, invstd, weight, bias, relu)
        _close([cuda.batch_norm_eval_forward(device(x), device(mean), device(invstd), device(weight),
                                             device(bias), relu)], [y], dtype)
    relu_output = y if relu else None
    expected = cpu.batch_norm_backward(grad, x, mean, invstd, weight, training, relu_output)
    got = cuda.batch_norm_backward(device(grad), device(x), device(mean), device(invstd), device(weight), training,
                                   device(relu_output))
    _close(got, expected, dtype)


@pytest.mark.cudasim
@settings(max_examples=4)
@given(case=norm_cases())
def test_group_norm_matches_cpu(case):
    x, weight, bias, grad = _inputs(case)
    relu, dtype, groups = case["relu"], case["dtype"], case["groups"]
    expected = cpu.group_norm_forward(x, groups, weight, bias, 1e-5, relu)
    _close(cuda.group_norm_forward(device(x), groups, device(weight), device(bias), 1e-5, relu), expected, dtype)
    y, mean, invstd = expected
    relu_output = y if relu else None
    expected = cpu.group_norm_backward(grad, x, groups, mean, invstd, weight, relu_output)
    got = cuda.group_norm_backward(device(grad), device(x), groups, device(mean), device(invstd), device(weight),
                                   device(relu_output))
    _close(got, expected, dtype)
