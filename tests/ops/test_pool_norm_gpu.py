"""Pooling and normalisation on a real GPU: the CUDA path against the CPU path, forward
and every gradient (float64 to 1e-10 relative, float32 to 1e-4), running stats included.
Skipped without a usable GPU (tests/conftest.py)."""
import numpy as np
import pytest

import gradflow as gf
from gradflow.ops import norm, pool

pytestmark = pytest.mark.gpu

TOL = {np.float64: 1e-10, np.float32: 1e-4}


def _close(got, expected, dtype, what):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    assert np.array_equal(np.isnan(got), np.isnan(expected)), f"{what}: NaN pattern differs"
    err = float(np.nanmax(np.abs(got - expected))) if expected.size else 0.0
    assert err <= TOL[dtype] * scale, f"{what}: max abs error {err:.3g}"


def _run(fn, arrays, dtype, device, grad_of):
    """fn's outputs and the gradients of the arrays listed in grad_of, on `device`."""
    tensors = [gf.tensor(a.astype(dtype), requires_grad=i in grad_of, device=device) if isinstance(a, np.ndarray)
               else a for i, a in enumerate(arrays)]
    out = fn(*tensors)
    outs = out if isinstance(out, tuple) else (out,)
    cotangent = np.random.default_rng(7).standard_normal(outs[0].shape).astype(dtype)
    outs[0].backward(gf.tensor(cotangent, device=device))
    return ([o.detach().cpu().numpy() for o in outs],
            [tensors[i].grad.cpu().numpy() for i in grad_of])


def _compare(fn, arrays, grad_of=(0,)):
    for dtype in (np.float64, np.float32):
        outs_cpu, grads_cpu = _run(fn, arrays, dtype, "cpu", grad_of)
        outs_gpu, grads_gpu = _run(fn, arrays, dtype, "cuda", grad_of)
        for i, (g, c) in enumerate(zip(outs_gpu, outs_cpu)):
            _close(g, c, dtype, f"output {i} ({dtype.__name__})")
        for i, g, c in zip(grad_of, grads_gpu, grads_cpu):
            _close(g, c, dtype, f"grad of input {i} ({dtype.__name__})")


def _distinct(shape, seed=0):
    return np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.01


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=True)])
def test_max_pool2d(kw):
    _compare(lambda x: pool.max_pool2d(x, return_indices=True, **kw), [_distinct((2, 3, 9, 10))])


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                                dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, divisor_override=4)])
def test_avg_pool2d(kw):
    _compare(lambda x: pool.avg_pool2d(x, **kw), [np.random.default_rng(1).standard_normal((2, 3, 9, 10))])


@pytest.mark.parametrize("size", [1, (3, 4), (None, 2)])
def test_adaptive_pools(size):
    _compare(lambda x: pool.adaptive_avg_pool2d(x, size), [np.random.default_rng(2).standard_normal((2, 3, 7, 9))])
    _compare(lambda x: pool.adaptive_max_pool2d(x, size, return_indices=True), [_distinct((2, 3, 7, 9))])


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(training, relu):
    rng = np.random.default_rng(3)
    fn = norm.batch_norm_relu if relu else norm.batch_norm
    x = rng.standard_normal((4, 6, 5, 7)) * 2 + 1
    w, b = rng.uniform(0.5, 1.5, 6), rng.uniform(-1, 1, 6)
    for dtype in (np.float64, np.float32):
        results = {}
        for device in ("cpu", "cuda"):
            mean = gf.tensor(np.full(6, 0.25, dtype), device=device)
            var = gf.tensor(np.full(6, 1.5, dtype), device=device)
            outs, grads = _run(lambda x, w, b: fn(x, mean, var, w, b, training=training, momentum=0.3),
                               [x, w, b], dtype, device, (0, 1, 2))
            results[device] = outs + grads + [mean.cpu().numpy(), var.cpu().numpy()]
        for i, (got, expected) in enumerate(zip(results["cuda"], results["cpu"])):
            _close(got, expected, dtype, f"output/grad/running stat {i} ({dtype.__name__})")


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("groups", [1, 3, 6])
def test_group_norm(groups, relu):
    rng = np.random.default_rng(4)
    fn = norm.group_norm_relu if relu else norm.group_norm
    x = rng.standard_normal((3, 6, 5, 7)) * 2 + 1
    w, b = rng.uniform(0.5, 1.5, 6), rng.uniform(-1, 1, 6)
    _compare(lambda x, w, b: fn(x, groups, w, b), [x, w, b], (0, 1, 2))


def test_fcn_bench_shapes_run_on_gpu():
    """The benchmark shapes, float32, through every kernel once (catches launch-size bugs)."""
    rng = np.random.default_rng(5)
    for shape, groups in [((8, 16, 64, 64), 4), ((8, 32, 32, 32), 8), ((8, 64, 16, 16), 8)]:
        x = rng.standard_normal(shape).astype(np.float32)
        _compare(lambda x: pool.max_pool2d(x, 2), [x])
        _compare(lambda x: norm.group_norm(x, groups), [x])
        _compare(lambda x: norm.batch_norm(x, None, None, training=True), [x])
