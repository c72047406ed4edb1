"""Cross-entropy over class scores (N, C, S) on the CPU: the per-pixel passes, in parallel
over fixed blocks of PIXELS pixels of one sample (Numba).

gradflow.ops.loss.CrossEntropy calls these for inputs of at least KERNEL_SIZE values,
whatever the thread count, so the path and the blocks depend on the shapes alone (serially
they beat NumPy's array ops from there; in parallel from PARALLEL_SIZE). Every
pixel's sums over classes run in class order, as NumPy's reductions over axis 1 do, so
the results are bit-identical at any thread count. exp itself stays with NumPy, on the
whole array between the two forward kernels: Numba has no vector exp without SVML, and
its scalar exp measured 2x slower than NumPy's.
"""
import numpy as np
from numba import njit, prange

from gradflow import threads

PIXELS = 2048            # pixels per block: C rows of 8 KB (float32), in L2 for any usual C
KERNEL_SIZE = 1 << 16    # N * C * S below this: NumPy's array ops (as fast there)
# N * C * S below this: the serial kernels. They pay off in parallel only well above a
# thread-pool wake-up (~0.1 ms): measured on (16, 21, 128, 128) float32 the max/shift pass
# took 2.33 ms serial and 1.19 ms on 2 threads, on (8, 21, 64, 64) 0.25 and 0.41 ms.
PARALLEL_SIZE = 1 << 21


def _span(block, spatial):
    """Block number -> (sample, first pixel, end pixel): blocks of PIXELS pixels of one sample."""
    per_sample = (spatial + PIXELS - 1) // PIXELS
    start = (block % per_sample) * PIXELS
    return block // per_sample, start, min(spatial, start + PIXELS)


def _block_count(x):
    return x.shape[0] * ((x.shape[2] + PIXELS - 1) // PIXELS)


_span = njit(inline="always")(_span)
_block_count = njit(inline="always")(_block_count)


@njit(inline="always")
def _shift_by_max(block, x, weight, shifted, shift, class_sum):
    """shift = max over classes (NaN wins, as numpy.max), shifted = x - shift, and
    class_sum = sum_k weight_k * shifted_k (only when class_sum has pixels)."""
    i, start, stop = _span(block, x.shape[2])
    m = shift[i, start:stop]
    m[:] = x[i, 0, start:stop]
    for k in range(1, x.shape[1]):
        row = x[i, k, start:stop]
        for j in range(m.size):
            v = row[j]
            if v > m[j] or v != v:
                m[j] = v
    for k in range(x.shape[1]):
        row, out = x[i, k, start:stop], shifted[i, k, start:stop]
        for j in range(m.size):
            out[j] = row[j] - m[j]
    if class_sum.shape[1]:
        total = class_sum[i, start:stop]
        total[:] = 0
        for k in range(x.shape[1]):
            row, w = shifted[i, k, start:stop], weight[k]
            for j in range(total.size):
                total[j] += w * row[j]


@njit(inline="always")
def _sum_over_classes(block, e, out):
    i, start, stop = _span(block, e.shape[2])
    total = out[i, start:stop]
    total[:] = e[i, 0, start:stop]
    for k in range(1, e.shape[1]):
        row = e[i, k, start:stop]
        for j in range(total.size):
            total[j] += row[j]


@njit(inline="always")
def _softmax_grad(block, e, scale, target, picked, smooth, weight, grad):
    """grad = e * scale - smooth * weight_k - picked [k == target] per pixel (no sums)."""
    i, start, stop = _span(block, e.shape[2])
    s, t, a = scale[i, start:stop], target[i, start:stop], picked[i, start:stop]
    for k in range(e.shape[1]):
        row, out = e[i, k, start:stop], grad[i, k, start:stop]
        for j in range(s.size):
            out[j] = row[j] * s[j]
        if smooth.shape[1]:
            b, w = smooth[i, start:stop], weight[k]
            for j in range(s.size):
                out[j] = out[j] - b[j] * w
        for j in range(s.size):
            if t[j] == k:
                out[j] = out[j] - a[j]


# Each kernel twice: over its blocks in order on the calling thread (one thread: no pool
# wake-up), and over the same blocks in parallel. Same blocks, same bits.

@njit(cache=True)
def _shift_by_max_serial(x, weight, shifted, shift, class_sum):
    for block in range(_block_count(x)):
        _shift_by_max(block, x, weight, shifted, shift, class_sum)


@njit(cache=True, parallel=True)
def _shift_by_max_parallel(x, weight, shifted, shift, class_sum):
    for block in prange(_block_count(x)):
        _shift_by_max(block, x, weight, shifted, shift, class_sum)


@njit(cache=True)
def _sum_over_classes_serial(e, out):
    for block in range(_block_count(e)):
        _sum_over_classes(block, e, out)


@njit(cache=True, parallel=True)
def _sum_over_classes_parallel(e, out):
    for block in prange(_block_count(e)):
        _sum_over_classes(block, e, out)


@njit(cache=True)
def _softmax_grad_serial(e, scale, target, picked, smooth, weight, grad):
    for block in range(_block_count(e)):
        _softmax_grad(block, e, scale, target, picked, smooth, weight, grad)


@njit(cache=True, parallel=True)
def _softmax_grad_parallel(e, scale, target, picked, smooth, weight, grad):
    for block in prange(_block_count(e)):
        _softmax_grad(block, e, scale, target, picked, smooth, weight, grad)


def _pick(serial, parallel):
    """The parallel kernel (at gradflow's thread count) for scores (the first argument) of
    PARALLEL_SIZE values or more when more than one thread is allowed, else the serial one."""
    parallel = threads.parallel(parallel)

    def run(scores, *args):
        use_threads = scores.size >= PARALLEL_SIZE and threads.get_num_threads() > 1
        return (parallel if use_threads else serial)(scores, *args)
    return run


shift_by_max_kernel = _pick(_shift_by_max_serial, _shift_by_max_parallel)
sum_over_classes_kernel = _pick(_sum_over_classes_serial, _sum_over_classes_parallel)
softmax_grad_kernel = _pick(_softmax_grad_serial, _softmax_grad_parallel)


def worth_it(x3):
    """Whether these kernels take (N, C, S) scores x3: large, float, a NumPy array."""
    return type(x3) is np.ndarray and x3.size >= KERNEL_SIZE and x3.dtype.kind == "f"


def shifted_scores(x3, weight, with_class_sum):
    """(x - max, max (N, S), sum_k w_k (x_k - max) (N, S) or None); weight None: all 1."""
    n, n_classes, spatial = x3.shape
    x3 = np.ascontiguousarray(x3)
    shifted, shift = np.empty_like(x3), np.empty((n, spatial), x3.dtype)
    class_sum = np.empty((n, spatial) if with_class_sum else (n, 0), x3.dtype)
    w = np.ones(n_classes, x3.dtype) if weight is None else np.ascontiguousarray(weight, dtype=x3.dtype)
    shift_by_max_kernel(x3, w, shifted, shift, class_sum)
    return shifted, shift, (class_sum if with_class_sum else None)


def sum_over_classes(e):
    out = np.empty((e.shape[0], e.shape[2]), e.dtype)
    sum_over_classes_kernel(e, out)
    return out


def softmax_grad(e, scale, target, picked, smooth, weight):
    """e * scale[:, None] (- smooth[:, None] * weight[:, None]) with picked subtracted at
    each pixel's target class; smooth None: no smoothing term; weight None: all 1."""
    n, n_classes, spatial = e.shape
    grad = np.empty_like(e)
    dtype = e.dtype
    smooth = np.empty((n, 0), dtype) if smooth is None else np.ascontiguousarray(smooth, dtype=dtype)
    w = np.ones(n_classes, dtype) if weight is None else np.ascontiguousarray(weight, dtype=dtype)
    softmax_grad_kernel(e, np.ascontiguousarray(scale, dtype=dtype), np.ascontiguousarray(target),
                          np.ascontiguousarray(picked, dtype=dtype), smooth, w, grad)
    return grad
