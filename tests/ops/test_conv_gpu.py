"""conv2d / conv_transpose2d on a real GPU (the Numba CUDA kernels + cuBLAS) against the
CPU path: forward and every gradient, float64 to 1e-10 and float32 to 1e-4 (relative to
the largest CPU value). Skipped unless gf.cuda.is_available()."""
import numpy as np
import pytest

import gradflow as gf
from gradflow.ops.conv import conv2d, conv_transpose2d
from tests.opinfo import assert_close

pytestmark = pytest.mark.gpu

CASES = {
    # name: (op, x shape, weight shape, kwargs); medium shapes: many blocks, partial blocks
    "3x3 pad 1": (conv2d, (4, 16, 33, 30), (24, 16, 3, 3), dict(padding=1)),
    "3x3 stride 2": (conv2d, (3, 8, 31, 32), (16, 8, 3, 3), dict(stride=2, padding=1)),
    "5x3 dilation 2 groups 2 'same'": (conv2d, (2, 6, 20, 17), (4, 3, 5, 3), dict(padding="same", dilation=2, groups=2)),
    "1x1 stride 2": (conv2d, (2, 12, 15, 16), (7, 12, 1, 1), dict(stride=2)),
    "depthwise 3x3": (conv2d, (2, 8, 19, 21), (8, 1, 3, 3), dict(padding=1, groups=8)),
    "transposed k4 s2 p1": (conv_transpose2d, (4, 16, 16, 15), (16, 8, 4, 4), dict(stride=2, padding=1)),
    "transposed 3x3 s2 output_padding 1": (conv_transpose2d, (2, 6, 9, 10), (6, 4, 3, 3),
                                           dict(stride=2, padding=1, output_padding=1)),
    "transposed 1x1 groups 2": (conv_transpose2d, (2, 8, 11, 9), (8, 3, 1, 1), dict(groups=2)),
}


def run(device, op, x, w, b, g, kwargs):
    tensors = [gf.tensor(a, device=device, requires_grad=True) for a in (x, w, b)]
    y = op(*tensors, **kwargs)
    assert y.device == device
    y.backward(gf.tensor(g, device=device))
    return [y.detach().numpy()] + [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_matches_cpu(name, dtype):
    op, x_shape, w_shape, kwargs = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal(w_shape) * 0.3).astype(dtype)
    out_channels = w_shape[0] if op is conv2d else w_shape[1] * kwargs.get("groups", 1)
    b = rng.standard_normal(out_channels).astype(dtype)
    with gf.no_grad():
        y_shape = op(gf.tensor(x), gf.tensor(w), gf.tensor(b), **kwargs).shape
    g = rng.standard_normal(y_shape).astype(dtype)
    expected = run("cpu", op, x, w, b, g, kwargs)
    got = run("cuda", op, x, w, b, g, kwargs)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for what, a, e in zip(("forward", "grad input", "grad weight", "grad bias"), got, expected):
        assert a.dtype == dtype, f"{what}: dtype {a.dtype}"
        assert_close(a, e, tol, f"{name} {what}")
