"""cross_entropy's pixel-block kernels (large CPU inputs) against its NumPy array ops (small
inputs) and PyTorch: the loss and the gradient, with ignore_index, class weights, label
smoothing and every reduction, over several blocks and a partial one; and the kernels' exp
against numpy.exp."""
import numpy as np
import pytest
import torch
from numba import njit

import gradflow as gf
import gradflow.functional as F
from gradflow import threads
from gradflow.kernels.cpu import cross_entropy as kernels
from gradflow.kernels.cpu.fast_exp import exp_nonpositive

SPATIAL = (3 * kernels.PIXELS + 45) // 45, 45     # 3 full blocks of pixels per sample and a partial one
OPTIONS = [dict(), dict(ignore_index=255), dict(label_smoothing=0.1), dict(weight=True),
           dict(weight=True, label_smoothing=0.2, ignore_index=255), dict(reduction="none", ignore_index=255),
           dict(reduction="sum", weight=True, label_smoothing=0.3)]


def _inputs(n_classes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, n_classes) + SPATIAL) * 3).astype(dtype)
    x[0, :3, 0, 0] = 1e4, 1e4 - 1, -1e4        # large scores: the max shift keeps them accurate
    target = rng.integers(0, n_classes, size=(3,) + SPATIAL)
    target[rng.random(target.shape) < 0.05] = 255
    weight = (rng.random(n_classes) + 0.5).astype(dtype)
    upstream = rng.standard_normal(target.shape).astype(dtype)
    return x, target, weight, upstream


def _run(x, target, weight, upstream, options, kernel_path, monkeypatch):
    options = dict(options)
    ignore_index = options.pop("ignore_index", -100)
    if ignore_index == -100:
        target = np.where(target == 255, 0, target)
    w = gf.tensor(weight) if options.pop("weight", False) else None
    monkeypatch.setattr(kernels, "worth_it", kernels.worth_it if kernel_path else (lambda x3: False))
    xt = gf.tensor(x, requires_grad=True)
    loss = F.cross_entropy(xt, gf.tensor(target), weight=w, ignore_index=ignore_index, **options)
    (loss * gf.tensor(upstream if loss.ndim else upstream[0, 0, 0])).sum().backward()
    return loss.detach().numpy(), xt.grad.numpy(), target, ignore_index


@pytest.mark.parametrize("n_classes", [4, 21])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_kernels_equal_array_ops_and_torch(options, n_classes, monkeypatch):
    x, target, weight, upstream = _inputs(n_classes, np.float64)
    assert kernels.worth_it(x.reshape(3, n_classes, -1))
    loss, grad, target, ignore_index = _run(x, target, weight, upstream, options, True, monkeypatch)
    loss_ops, grad_ops, _, _ = _run(x, target, weight, upstream, options, False, monkeypatch)
    # the same per-pixel arithmetic in class order, with an exp within an ulp of NumPy's
    np.testing.assert_allclose(loss, loss_ops, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(grad, grad_ops, rtol=1e-13, atol=1e-16)
    xt = torch.tensor(x, requires_grad=True)
    torch_loss = torch.nn.functional.cross_entropy(
        xt, torch.tensor(target), weight=torch.tensor(weight) if options.get("weight") else None,
        ignore_index=ignore_index, reduction=options.get("reduction", "mean"),
        label_smoothing=options.get("label_smoothing", 0.0))
    (torch_loss * torch.tensor(upstream if torch_loss.dim() else upstream[0, 0, 0])).sum().backward()
    np.testing.assert_allclose(loss, torch_loss.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_float32_kernels_equal_array_ops(monkeypatch):
    x, target, weight, upstream = _inputs(5, np.float32, seed=1)
    options = dict(ignore_index=255, label_smoothing=0.1)
    loss, grad, _, _ = _run(x, target, weight, upstream, options, True, monkeypatch)
    loss_ops, grad_ops, _, _ = _run(x, target, weight, upstream, options, False, monkeypatch)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(loss, loss_ops, rtol=1e-6)
    np.testing.assert_allclose(grad, grad_ops, rtol=1e-5, atol=1e-10)


def test_nan_scores_propagate_as_in_numpy_max(monkeypatch):
    x, target, weight, upstream = _inputs(4, np.float64, seed=2)
    x[1, 2, 3, 4] = np.nan
    loss, grad, _, _ = _run(x, target, weight, upstream, dict(reduction="none"), True, monkeypatch)
    loss_ops, grad_ops, _, _ = _run(x, target, weight, upstream, dict(reduction="none"), False, monkeypatch)
    assert np.isnan(loss[1, 3, 4]) and np.isnan(grad[1, :, 3, 4]).all()
    np.testing.assert_allclose(loss, loss_ops, rtol=1e-13)     # NaN where NumPy has NaN
    np.testing.assert_allclose(grad, grad_ops, rtol=1e-13, atol=1e-16)


def test_small_inputs_keep_the_array_ops():
    assert not kernels.worth_it(np.zeros((2, 4, 8, 8), np.float32))
    assert kernels.worth_it(np.zeros((1, 4, kernels.KERNEL_SIZE // 4), np.float32))
    assert not kernels.worth_it(np.zeros((1, 4, kernels.KERNEL_SIZE // 4), np.int64))


def test_parallel_kernels_on_large_scores_with_threads_give_the_serial_bits(monkeypatch):
    """With the parallel kernels chosen at any size, 2 threads run them; they give the
    serial ones' bits."""
    import gradflow as gf
    from numba import config
    if config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here (NUMBA_NUM_THREADS=1)")
    x, target, weight, upstream = _inputs(5, np.float32, seed=3)
    options = dict(weight=True, label_smoothing=0.1, ignore_index=255)
    ran = []

    def always_parallel(serial, parallel):
        def spy(*args):
            ran.append(parallel)
            return parallel(*args)
        return threads.by_size(serial, spy, 0)

    previous = gf.get_num_threads()
    try:
        gf.set_num_threads(1)
        serial = _run(x, target, weight, upstream, options, True, monkeypatch)
        assert not ran
        monkeypatch.setattr(kernels, "forward_kernel", always_parallel(kernels._forward_serial,
                                                                       kernels._forward_parallel))
        monkeypatch.setattr(kernels, "softmax_grad_kernel", always_parallel(kernels._softmax_grad_serial,
                                                                            kernels._softmax_grad_parallel))
        gf.set_num_threads(2)
        parallel = _run(x, target, weight, upstream, options, True, monkeypatch)
    finally:
        gf.set_num_threads(previous)
    assert ran == [kernels._forward_parallel, kernels._softmax_grad_parallel]
    assert serial[0].tobytes() == parallel[0].tobytes() and serial[1].tobytes() == parallel[1].tobytes()


@njit
def _exp_all(x, out):
    for j in range(x.size):
        out[j] = exp_nonpositive(x[j])


def _ulps(a, b):
    as_int = np.int32 if a.dtype == np.float32 else np.int64
    return np.abs(a.view(as_int).astype(np.int64) - b.view(as_int).astype(np.int64))


SPECIAL = [-np.inf, np.nan, -1e30, -1e4, -0.0, 0.0]


def test_float32_exp_within_3_ulp_of_numpy_down_to_underflow():
    """Every 61st float32 of [-104, 0] (every one of them measured: at most 3 ulp; -104 and
    below underflow to 0), subnormal results included, and the special values."""
    low = int(np.array(-104.5, np.float32).view(np.uint32))
    x = np.arange(0x80000000, low, 61, dtype=np.uint32).view(np.float32)
    x = np.concatenate([x, np.array(SPECIAL + [-103.97, -87.4, -1e-30], np.float32)])
    out = np.empty_like(x)
    _exp_all(x, out)
    ref = np.exp(x)
    assert out.dtype == np.float32 and np.array_equal(np.isnan(out), np.isnan(ref))
    finite = ~np.isnan(ref)
    assert _ulps(out[finite], ref[finite]).max() <= 3
    assert (out[x < -104] == 0).all()


def test_float64_exp_within_1_ulp_of_numpy_down_to_underflow():
    x = np.concatenate([np.linspace(-746, 0, 3_000_001), -np.logspace(-300, 2, 100_000),
                        np.array(SPECIAL + [-745.2, -745.1, -708.4])])
    out = np.empty_like(x)
    _exp_all(x, out)
    ref = np.exp(x)
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    finite = ~np.isnan(ref)
    assert _ulps(out[finite], ref[finite]).max() <= 1
