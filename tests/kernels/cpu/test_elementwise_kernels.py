"""The parallel ReLU and add kernels give NumPy's bits (NaN, -0.0, inf included); they are
called directly here, as the ops only use them with more than one thread."""
import numpy as np
import pytest

from gradflow.kernels.cpu import elementwise

SPECIAL = [np.nan, -0.0, 0.0, np.inf, -np.inf, -1.0, 1.0, 1e-45, -1e-45]


@pytest.fixture(params=[np.float32, np.float64])
def arrays(request):
    rng = np.random.default_rng(0)
    size = 3 * elementwise.BLOCK + 17          # several blocks and a partial one
    a, b, g = (rng.standard_normal(size).astype(request.param) for _ in range(3))
    a[:len(SPECIAL)] = SPECIAL
    b[len(SPECIAL):2 * len(SPECIAL)] = SPECIAL
    g[:len(SPECIAL)] = SPECIAL[::-1]
    return a, b, g


def test_relu_matches_numpy_bits(arrays):
    a, _, g = arrays
    out = np.empty_like(a)
    elementwise._relu(a, out)
    assert out.tobytes() == np.maximum(a, 0).tobytes()
    grad_x = np.empty_like(g)
    elementwise._relu_backward(g, out, grad_x)
    assert grad_x.tobytes() == (g * (out > 0)).tobytes()


def test_add_matches_numpy_bits(arrays):
    a, b, _ = arrays
    out = np.empty_like(a)
    elementwise._add(a, b, out)
    assert out.tobytes() == (a + b).tobytes()


def test_host_functions_fall_back_for_small_or_mixed_inputs():
    a = np.arange(6, dtype=np.float32) - 3
    assert elementwise.relu(a).tobytes() == np.maximum(a, 0).tobytes()
    assert (elementwise.add(a, 2.0) == a + 2.0).all()
    big = np.ones(elementwise.PARALLEL_SIZE, dtype=np.float32)
    assert (elementwise.add(big, np.ones((1,), dtype=np.float32)) == 2).all()   # broadcasting: NumPy's
