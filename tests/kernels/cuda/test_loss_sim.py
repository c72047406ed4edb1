"""The fused cross-entropy CUDA kernels against the CPU (numpy) path of the same op.

Runs in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, numpy arrays) or on a real GPU
(cupy arrays); see conftest.py."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
from gradflow import backend
from gradflow.kernels.cuda import loss as cuda
from gradflow.ops.loss import cross_entropy

ON_GPU = backend.cuda_available()


def device(array):
    return None if array is None else (backend.to_device(array, "cuda") if ON_GPU else array)


def host(array):
    return backend.to_numpy(array)


@st.composite
def cases(draw):
    n, c, spatial = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    return dict(n=n, c=c, spatial=spatial, seed=draw(st.integers(0, 2**16)),
                ignore_index=draw(st.sampled_from([-100, 0, 255])), weighted=draw(st.booleans()),
                smoothing=draw(st.sampled_from([0.0, 0.3, 1.0])), dtype=draw(st.sampled_from([np.float32, np.float64])))


@pytest.mark.cudasim
@given(case=cases())
def test_cuda_kernels_match_the_cpu_op(case):
    rng = np.random.default_rng(case["seed"])
    dtype, n, c, spatial = case["dtype"], case["n"], case["c"], case["spatial"]
    tol = 1e-12 if dtype == np.float64 else 1e-5
    x = (rng.standard_normal((n, c, spatial)) * 3).astype(dtype)
    target = rng.integers(0, c, (n, spatial))
    target[rng.random(target.shape) < 0.3] = case["ignore_index"]
    weight = rng.uniform(0.2, 2.0, c).astype(dtype) if case["weighted"] else None
    kwargs = dict(ignore_index=case["ignore_index"], label_smoothing=case["smoothing"])

    # CPU op, per position: loss and the gradient for a random cotangent
    xt = gf.tensor(x, requires_grad=True)
    loss_cpu = cross_entropy(xt, gf.tensor(target), None if weight is None else gf.tensor(weight),
                             reduction="none", **kwargs)
    cot = rng.standard_normal(target.shape).astype(dtype)
    loss_cpu.backward(gf.tensor(cot))

    stats, first_bad = cuda.cross_entropy_forward(
        device(x), device(target), device(weight), case["ignore_index"], case["smoothing"])
    np.testing.assert_allclose(host(stats[cuda.LOSS]), loss_cpu.detach().numpy(), rtol=tol, atol=tol)
    assert int(host(first_bad)[0]) == n * spatial
    expected_weight = np.where(target == case["ignore_index"], 0,
                               1 if weight is None else weight[np.where(target == case["ignore_index"], 0, target)])
    np.testing.assert_allclose(host(stats[cuda.TARGET_WEIGHT]), expected_weight, rtol=tol)

    grad = cuda.cross_entropy_backward(device(x), device(target), device(weight), case["ignore_index"],
                                       case["smoothing"], stats, device(cot), True)
    np.testing.assert_allclose(host(grad), xt.grad.numpy(), rtol=tol, atol=tol)

    # one shared upstream gradient (the "sum" reduction's)
    xt.grad = None
    cross_entropy(xt, gf.tensor(target), None if weight is None else gf.tensor(weight), reduction="sum",
                  **kwargs).backward()
    grad = cuda.cross_entropy_backward(device(x), device(target), device(weight), case["ignore_index"],
                                       case["smoothing"], stats, device(np.ones((), dtype)), False)
    np.testing.assert_allclose(host(grad), xt.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.cudasim
def test_forward_kernel_reports_the_first_out_of_range_position():
    x = np.zeros((2, 3, 4))
    target = np.array([[0, 1, 255, 2], [7, 0, -1, 3]])
    _, first_bad = cuda.cross_entropy_forward(device(x), device(target), None, 255, 0.0)
    assert int(host(first_bad)[0]) == 4   # (1, 0): value 7; -1 and 3 come later
    target[1, 0] = 1
    _, first_bad = cuda.cross_entropy_forward(device(x), device(target), None, 255, 0.0)
    assert int(host(first_bad)[0]) == 6
