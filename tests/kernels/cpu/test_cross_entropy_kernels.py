"""cross_entropy's pixel-block kernels (large CPU inputs) against its NumPy array ops (small
inputs) and PyTorch: the loss and the gradient, with ignore_index, class weights, label
smoothing and every reduction, over several blocks and a partial one."""
import numpy as np
import pytest
import torch

import gradflow as gf
import gradflow.functional as F
from gradflow.kernels.cpu import cross_entropy as kernels

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
    # the same per-pixel arithmetic in class order: NumPy's bits (BLAS sums the weighted
    # smoothing term in its own order, so that case agrees to rounding only)
    exact = not (options.get("weight") and options.get("label_smoothing"))
    if exact:
        assert loss.tobytes() == loss_ops.tobytes() and grad.tobytes() == grad_ops.tobytes()
    np.testing.assert_allclose(loss, loss_ops, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, grad_ops, rtol=1e-12, atol=1e-15)
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
    assert loss.tobytes() == loss_ops.tobytes() and grad.tobytes() == grad_ops.tobytes()


def test_nan_scores_propagate_as_in_numpy_max(monkeypatch):
    x, target, weight, upstream = _inputs(4, np.float64, seed=2)
    x[1, 2, 3, 4] = np.nan
    loss, grad, _, _ = _run(x, target, weight, upstream, dict(reduction="none"), True, monkeypatch)
    loss_ops, grad_ops, _, _ = _run(x, target, weight, upstream, dict(reduction="none"), False, monkeypatch)
    assert np.isnan(loss[1, 3, 4]) and np.isnan(grad[1, :, 3, 4]).all()
    np.testing.assert_array_equal(loss, loss_ops)
    np.testing.assert_array_equal(grad, grad_ops)


def test_small_inputs_keep_the_array_ops():
    assert not kernels.worth_it(np.zeros((2, 4, 8, 8), np.float32))
    assert kernels.worth_it(np.zeros((1, 4, kernels.KERNEL_SIZE // 4), np.float32))
    assert not kernels.worth_it(np.zeros((1, 4, kernels.KERNEL_SIZE // 4), np.int64))


def test_parallel_kernels_on_large_scores_with_threads_give_the_serial_bits(monkeypatch):
    """With the parallel threshold lowered to the test size, 2 threads run the parallel
    compilations; they give the serial ones' bits."""
    import gradflow as gf
    from numba import config
    if config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here (NUMBA_NUM_THREADS=1)")
    x, target, weight, upstream = _inputs(5, np.float32, seed=3)
    options = dict(weight=True, label_smoothing=0.1, ignore_index=255)
    previous = gf.get_num_threads()
    try:
        gf.set_num_threads(1)
        serial = _run(x, target, weight, upstream, options, True, monkeypatch)
        monkeypatch.setattr(kernels, "PARALLEL_SIZE", kernels.KERNEL_SIZE)
        gf.set_num_threads(2)
        parallel = _run(x, target, weight, upstream, options, True, monkeypatch)
    finally:
        gf.set_num_threads(previous)
    assert serial[0].tobytes() == parallel[0].tobytes() and serial[1].tobytes() == parallel[1].tobytes()
