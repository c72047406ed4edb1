"""Parallel ReLU and add for large CPU arrays (Numba).

NumPy runs these on one thread. For arrays of at least PARALLEL_SIZE elements, when
more than one thread is allowed, these kernels split them into blocks of BLOCK
elements over the threads. Each element is computed exactly as NumPy computes it (no
sums across elements), so the results are the same bits as np.maximum(x, 0),
g * (out > 0) and a + b, whichever path runs, at any thread count.
"""
import numpy as np
from numba import njit, prange

from gradflow import threads

BLOCK = 16384            # elements per parallel block (64 KB of float32: a few L1-sized streams)
PARALLEL_SIZE = 1 << 17  # below this a launch costs more than the second thread saves


@njit(cache=True, parallel=True)
def _relu(x, out):
    for block in prange((x.size + BLOCK - 1) // BLOCK):
        zero = x.dtype.type(0)
        for i in range(block * BLOCK, min(x.size, (block + 1) * BLOCK)):
            v = x[i]
            out[i] = v if v > 0 or v != v else zero    # as np.maximum(v, 0): NaN stays, -0.0 -> +0.0


@njit(cache=True, parallel=True)
def _relu_backward(grad, out, grad_x):
    for block in prange((grad.size + BLOCK - 1) // BLOCK):
        one, zero = grad.dtype.type(1), grad.dtype.type(0)
        for i in range(block * BLOCK, min(grad.size, (block + 1) * BLOCK)):
            grad_x[i] = grad[i] * (one if out[i] > 0 else zero)    # as g * (out > 0): inf * 0 is NaN


@njit(cache=True, parallel=True)
def _add(a, b, out):
    for block in prange((a.size + BLOCK - 1) // BLOCK):
        for i in range(block * BLOCK, min(a.size, (block + 1) * BLOCK)):
            out[i] = a[i] + b[i]


def _parallel_worth_it(*arrays):
    first = arrays[0]
    return (first.size >= PARALLEL_SIZE and first.dtype.kind == "f" and threads.get_num_threads() > 1
            and all(type(a) is np.ndarray and a.shape == first.shape and a.dtype == first.dtype
                    and a.flags.c_contiguous for a in arrays))


_relu_threads = threads.parallel(_relu)
_relu_backward_threads = threads.parallel(_relu_backward)
_add_threads = threads.parallel(_add)


def relu(x):
    """np.maximum(x, 0), in parallel for a large float array."""
    if not _parallel_worth_it(x):
        return np.maximum(x, 0)
    out = np.empty_like(x)
    _relu_threads(x.reshape(-1), out.reshape(-1))
    return out


def relu_backward(grad, out):
    """grad * (out > 0), in parallel for large float arrays of one shape."""
    if not _parallel_worth_it(grad, out):
        return grad * (out > 0)
    grad_x = np.empty_like(grad)
    _relu_backward_threads(grad.reshape(-1), out.reshape(-1), grad_x.reshape(-1))
    return grad_x


def add(a, b):
    """a + b, in parallel when both are large float arrays of one shape and dtype."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and _parallel_worth_it(a, b)):
        return a + b
    out = np.empty_like(a)
    _add_threads(a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out
