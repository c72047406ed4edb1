"""Run by tests/threads/test_determinism.py in a subprocess whose NUMBA_NUM_THREADS /
OMP_NUM_THREADS choose the thread count: computes every parallel CPU kernel's outputs
(forward and gradients, through the ops) and a few FCN training steps, and saves them
with the thread count actually used, so runs at different counts can be compared bit
for bit.

    python tests/threads/probe.py OUT.npz
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numba  # noqa: E402

import gradflow as gf  # noqa: E402
import gradflow.functional as F  # noqa: E402
from gradflow.ops.norm import batch_norm_relu, group_norm_relu  # noqa: E402


def _tensor(rng, shape, dtype=np.float32):
    return gf.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)


def _record(results, name, out, inputs, rng):
    """The forward output and the gradient of every input for a random upstream gradient."""
    upstream = gf.tensor(rng.standard_normal(out.shape).astype(out.dtype))
    (out * upstream).sum().backward()
    results[f"{name}/out"] = out.detach().numpy()
    for label, t in inputs.items():
        results[f"{name}/grad_{label}"] = t.grad.numpy()


def conv_cases(results, rng):
    """Every conv path: 3x3 stride 1 (4x4 bands with rows and channels left over, the
    flattened kernel, and small images as GEMMs in 3 chunks of images), grouped, stride 2
    phases, 4x4 stride-2 and 16x16 stride-8 transposed, im2col (5x5 dilated), 1x1, and
    float64."""
    cases = {   # name: (x shape, weight shape, dtype, conv2d kwargs)
        "conv3x3_bands": ((3, 5, 18, 16), (6, 5, 3, 3), np.float32, dict(padding=1)),
        "conv3x3_flat": ((3, 5, 9, 10), (7, 5, 3, 3), np.float32, dict(padding=1)),
        "conv3x3_groups": ((2, 4, 9, 10), (6, 2, 3, 3), np.float32, dict(padding=1, groups=2)),
        "conv3x3_small_batch": ((9, 3, 6, 6), (5, 3, 3, 3), np.float32, dict(padding=1)),
        "conv3x3_gemm_chunks": ((40, 32, 8, 8), (6, 32, 3, 3), np.float32, dict(padding=1)),
        "conv3x3_stride2": ((3, 5, 17, 20), (6, 5, 3, 3), np.float32, dict(padding=1, stride=2)),
        "conv5x5_columns": ((2, 3, 12, 12), (4, 3, 5, 5), np.float32, dict(padding=2, dilation=2)),
        "conv1x1": ((2, 6, 8, 8), (4, 6, 1, 1), np.float32, {}),
        "conv3x3_float64": ((2, 3, 9, 8), (5, 3, 3, 3), np.float64, dict(padding=1)),
    }
    for name, (x_shape, w_shape, dtype, kwargs) in cases.items():
        x, w = _tensor(rng, x_shape, dtype), _tensor(rng, w_shape, dtype)
        b = _tensor(rng, (w_shape[0],), dtype)
        _record(results, name, F.conv2d(x, w, b, **kwargs), {"x": x, "w": w, "b": b}, rng)
    # BLAS: a linear layer of a shape where OpenBLAS's bits depend on its thread count
    x, w, b = _tensor(rng, (128, 784)), _tensor(rng, (10, 784)), _tensor(rng, (10,))
    _record(results, "linear", F.linear(x, w, b), {"x": x, "w": w, "b": b}, rng)
    x, w = _tensor(rng, (2, 5, 8, 8)), _tensor(rng, (5, 3, 4, 4))
    _record(results, "conv_transpose4x4_stride2", F.conv_transpose2d(x, w, stride=2, padding=1),
            {"x": x, "w": w}, rng)
    x, w = _tensor(rng, (3, 4, 8, 8)), _tensor(rng, (4, 4, 16, 16))
    _record(results, "conv_transpose16x16_stride8", F.conv_transpose2d(x, w, stride=8, padding=4),
            {"x": x, "w": w}, rng)
    x, w = _tensor(rng, (2, 4, 7, 7)), _tensor(rng, (4, 3, 3, 3))
    _record(results, "conv_transpose3x3_stride2", F.conv_transpose2d(x, w, stride=2, padding=1,
                                                                      output_padding=1), {"x": x, "w": w}, rng)


def pool_norm_cases(results, rng):
    x = _tensor(rng, (3, 5, 17, 17))
    _record(results, "max_pool", F.max_pool2d(x, 3, stride=2, padding=1), {"x": x}, rng)
    x = _tensor(rng, (3, 5, 16, 18))
    _record(results, "max_pool_2x2", F.max_pool2d(x, 2), {"x": x}, rng)
    x = _tensor(rng, (3, 5, 17, 17))
    _record(results, "avg_pool", F.avg_pool2d(x, 3, stride=2, padding=1), {"x": x}, rng)
    for name, relu in (("batch_norm", F.batch_norm), ("batch_norm_relu", batch_norm_relu)):
        x, w, b = _tensor(rng, (4, 6, 9, 7)), _tensor(rng, (6,)), _tensor(rng, (6,))
        _record(results, name, relu(x, None, None, w, b, training=True), {"x": x, "w": w, "b": b}, rng)
    for name, function in (("group_norm", F.group_norm), ("group_norm_relu", group_norm_relu)):
        x, w, b = _tensor(rng, (5, 6, 9, 7)), _tensor(rng, (6,)), _tensor(rng, (6,))
        _record(results, name, function(x, 3, w, b), {"x": x, "w": w, "b": b}, rng)
    # large enough for the parallel group-norm kernels
    from gradflow.kernels.cpu.norm import GROUP_PARALLEL_SIZE
    for name, function in (("group_norm_large", F.group_norm), ("group_norm_relu_large", group_norm_relu)):
        x, w, b = _tensor(rng, (4, 8, 96, 96)), _tensor(rng, (8,)), _tensor(rng, (8,))
        assert x.numel() >= GROUP_PARALLEL_SIZE
        _record(results, name, function(x, 4, w, b), {"x": x, "w": w, "b": b}, rng)
    x = _tensor(rng, (4, 5, 9, 9))
    target = gf.tensor(rng.integers(0, 5, size=(4, 9, 9)))
    loss = F.cross_entropy(x, target)
    loss.backward()
    results["cross_entropy/out"], results["cross_entropy/grad_x"] = loss.detach().numpy(), x.grad.numpy()
    a, b = _tensor(rng, (4, 5, 9, 9)), _tensor(rng, (4, 5, 9, 9))
    _record(results, "relu_add", F.relu(a) + b, {"a": a, "b": b}, rng)
    # large enough for the parallel ReLU and add (at 1 thread NumPy's), with the special values
    big = rng.standard_normal((3, 60000)).astype(np.float32)
    big[0, :6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, -1.0]
    a, b = gf.tensor(big, requires_grad=True), _tensor(rng, (3, 60000))
    _record(results, "relu_add_large", F.relu(a) + b, {"a": a, "b": b}, rng)


def large_cross_entropy_cases(results, rng):
    """cross_entropy on inputs large enough for its pixel-block kernels (several blocks per
    sample and a partial one), with ignore_index, class weights and label smoothing."""
    from gradflow.kernels.cpu import cross_entropy as kernels
    shape = (4, 5, 320, 330)
    assert np.prod(shape) >= kernels.PARALLEL_SIZE and 320 * 330 % kernels.PIXELS
    target = rng.integers(0, 5, size=(4, 320, 330))
    target[rng.random(target.shape) < 0.05] = 255
    weight = gf.tensor(rng.random(5).astype(np.float32) + 0.5)
    for name, kwargs in (("cross_entropy_large", dict(ignore_index=255)),
                         ("cross_entropy_large_weighted_smoothed", dict(ignore_index=255, weight=weight,
                                                                        label_smoothing=0.1, reduction="none"))):
        x = _tensor(rng, shape)
        _record(results, name, F.cross_entropy(x, gf.tensor(target), **kwargs), {"x": x}, rng)


def optimizer_steps(results, rng):
    """SGD and Adam/AdamW steps on parameters large enough for the parallel update kernels,
    next to small ones: the parameters and every state buffer after three steps."""
    from gradflow.optim import fused
    shapes = [(fused.PARALLEL_SIZE + fused.BLOCK + 7,), (3, 40, 5), (fused.PARALLEL_SIZE // 3, 3)]
    cases = {"sgd": (gf.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)),
             "adam": (gf.optim.Adam, dict(lr=1e-3, weight_decay=1e-2)),
             "adamw_amsgrad": (gf.optim.AdamW, dict(lr=1e-3, amsgrad=True, maximize=True))}
    for name, (cls, kwargs) in cases.items():
        params = [gf.nn.Parameter(gf.tensor(rng.standard_normal(s).astype(np.float32))) for s in shapes]
        opt = cls(params, **kwargs)
        for _ in range(3):
            for p in params:
                p.grad = gf.tensor(rng.standard_normal(p.shape).astype(np.float32))
            opt.step()
        for i, p in enumerate(params):
            results[f"optim_{name}/param{i}"] = p.detach().numpy()
            for key, value in opt.state[p].items():
                results[f"optim_{name}/param{i}_{key}"] = np.asarray(value)


def fcn_steps(results, norm, steps=3):
    """A few SGD steps of the FCN-bench network: the loss of each and the final weights."""
    from bench.workloads.fcn_net import batch_arrays, make_fcn_bench
    gf.manual_seed(0)
    net = make_fcn_bench(gf.nn, norm)
    opt = gf.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for step in range(steps):
        x, y = batch_arrays(4, size=32, seed=step)
        opt.zero_grad()
        loss = F.cross_entropy(net(gf.tensor(x)), gf.tensor(y))
        loss.backward()
        opt.step()
        results[f"fcn_{norm}/loss_{step}"] = loss.detach().numpy()
    for name, p in net.named_parameters():
        results[f"fcn_{norm}/{name}"] = p.detach().numpy()


def main(path):
    rng = np.random.default_rng(0)
    results = {}
    conv_cases(results, rng)
    pool_norm_cases(results, rng)
    large_cross_entropy_cases(results, rng)
    optimizer_steps(results, rng)
    fcn_steps(results, "gn")
    fcn_steps(results, "bn")
    results["threads/gradflow"] = np.array(gf.get_num_threads())
    results["threads/numba"] = np.array(numba.get_num_threads())
    np.savez(path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
