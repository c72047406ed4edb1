"""Cross-entropy over class scores (N, C, S) on the CPU: the per-pixel passes, in parallel
over fixed blocks of PIXELS pixels of one sample (Numba).

gradflow.ops.loss.CrossEntropy calls these for inputs of at least KERNEL_SIZE values,
whatever the thread count, so the path and the blocks depend on the shapes alone (serially
they beat NumPy's array ops from there; in parallel from PARALLEL_SIZE). Every
pixel's sums over classes run in class order, as NumPy's reductions over axis 1 do, so
the results are bit-identical at any thread count. The forward is one kernel (max, then
exp, the sums and the target's score), with exp from gradflow.kernels.cpu.fast_exp: within
3 ulp (float32) and 1 ulp (float64) of NumPy's, so these paths agree with the array ops to
rounding, not bit for bit.
"""
import numpy as np
from numba import njit, prange

from gradflow import threads
from gradflow.kernels.cpu.fast_exp import exp_nonpositive

PIXELS = 2048            # pixels per block: C rows of 8 KB (float32), in L2 for any usual C
KERNEL_SIZE = 1 << 16    # N * C * S below this: NumPy's array ops (as fast there)
# N * C * S below this: the serial kernels. On Numba's omp layer the pool wakes in
# microseconds and the blocks pay off in parallel from about 0.1M values: float32 on the
# 2-vCPU AMD EPYC (Zen 4), 2 threads, serial / parallel forward: (8, 5, 64, 64) 0.12 /
# 0.06 ms, (8, 21, 64, 64) 0.40 / 0.19-0.30 ms; softmax gradient 0.05 / 0.03 ms and
# 0.18 / 0.10-0.13 ms. (On the workqueue layer a wake-up costs ~0.2 ms, which made the
# parallel forward no faster than the serial one up to ~0.7M values.)
PARALLEL_SIZE = 1 << 17


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
def _forward(block, x, target, weight, e, sum_exp, picked, class_sum):
    """e = exp(x - max) (max over classes, NaN wins as in numpy.max), sum_exp = sum_k e_k,
    picked = x_target - max, and class_sum = sum_k weight_k (x_k - max) when class_sum has
    pixels. Each class row of the block is read twice: for the max, then for the rest."""
    i, start, stop = _span(block, x.shape[2])
    m = picked[i, start:stop]          # the max until the last loop turns it into picked
    m[:] = x[i, 0, start:stop]
    for k in range(1, x.shape[1]):
        row = x[i, k, start:stop]
        for j in range(m.size):
            v = row[j]
            if v > m[j] or v != v:
                m[j] = v
    total = sum_exp[i, start:stop]
    total[:] = 0
    smoothing = class_sum.shape[1] > 0
    if smoothing:
        weighted = class_sum[i, start:stop]
        weighted[:] = 0
    for k in range(x.shape[1]):
        row, out = x[i, k, start:stop], e[i, k, start:stop]
        if smoothing:
            w = weight[k]
            for j in range(m.size):
                d = row[j] - m[j]
                out[j] = exp_nonpositive(d)
                total[j] += out[j]
                weighted[j] += w * d
        else:
            for j in range(m.size):
                out[j] = exp_nonpositive(row[j] - m[j])
                total[j] += out[j]
    t = target[i, start:stop]
    for j in range(m.size):
        m[j] = x[i, t[j], start + j] - m[j]


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

# fastmath "contract" only: multiply-adds fuse (the exp polynomial runs 1.5x faster), while
# NaN and inf keep IEEE semantics.
@njit(cache=True, fastmath={"contract"})
def _forward_serial(x, target, weight, e, sum_exp, picked, class_sum):
    for block in range(_block_count(x)):
        _forward(block, x, target, weight, e, sum_exp, picked, class_sum)


@njit(cache=True, parallel=True, fastmath={"contract"})
def _forward_parallel(x, target, weight, e, sum_exp, picked, class_sum):
    for block in prange(_block_count(x)):
        _forward(block, x, target, weight, e, sum_exp, picked, class_sum)


@njit(cache=True)
def _softmax_grad_serial(e, scale, target, picked, smooth, weight, grad):
    for block in range(_block_count(e)):
        _softmax_grad(block, e, scale, target, picked, smooth, weight, grad)


@njit(cache=True, parallel=True)
def _softmax_grad_parallel(e, scale, target, picked, smooth, weight, grad):
    for block in prange(_block_count(e)):
        _softmax_grad(block, e, scale, target, picked, smooth, weight, grad)


# scores (the first argument) of PARALLEL_SIZE values or more run in parallel
forward_kernel = threads.by_size(_forward_serial, _forward_parallel, PARALLEL_SIZE)
softmax_grad_kernel = threads.by_size(_softmax_grad_serial, _softmax_grad_parallel, PARALLEL_SIZE)


def worth_it(x3):
    """Whether these kernels take (N, C, S) scores x3: large, float, a NumPy array."""
    return type(x3) is np.ndarray and x3.size >= KERNEL_SIZE and x3.dtype.kind == "f"


def forward(x3, target, weight, with_class_sum):
    """(exp(x - max) (N, C, S), sum_k exp(x_k - max), x_target - max, and
    sum_k w_k (x_k - max) or None) for scores x3 (N, C, S) and class indices target (N, S),
    each within [0, C); weight None: all 1."""
    n, n_classes, spatial = x3.shape
    x3 = np.ascontiguousarray(x3)
    e, sum_exp, picked = np.empty_like(x3), np.empty((n, spatial), x3.dtype), np.empty((n, spatial), x3.dtype)
    class_sum = np.empty((n, spatial) if with_class_sum else (n, 0), x3.dtype)
    w = np.ones(n_classes, x3.dtype) if weight is None else np.ascontiguousarray(weight, dtype=x3.dtype)
    forward_kernel(x3, np.ascontiguousarray(target), w, e, sum_exp, picked, class_sum)
    return e, sum_exp, picked, (class_sum if with_class_sum else None)


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
