"""Fused cross-entropy kernels (CUDA, Numba): one launch forward, one backward.

The CPU path is plain numpy in gradflow.ops.loss: an njit loop measured 2x slower there
(Numba has no vector exp without SVML), so there is no kernels/cpu/loss.py. On the GPU the
same numpy-style code costs ~30 CuPy launches; these two kernels replace them.

Scores are (N, C, S) with S the flattened spatial size, targets (N, S). One thread per
position (n, s) loops over the C classes; neighbouring threads read neighbouring s, so every
load is coalesced. Formulas as in gradflow.ops.loss.CrossEntropy.
"""
import math

from numba import cuda

from gradflow.kernels.cuda import launch

# rows of the (4, N, S) per-position `stats` array the forward fills and the backward reads;
# one array, not four, because each array argument adds to Numba's launch overhead
LOSS, TARGET_WEIGHT, MAX, LOG_SUM_EXP = 0, 1, 2, 3

@cuda.jit
def _forward(x, target, weight, has_weight, ignore_index, smoothing, stats, first_bad):
    n, n_classes, spatial = x.shape
    for p in range(cuda.grid(1), n * spatial, cuda.gridsize(1)):
        i = p // spatial
        s = p % spatial
        t = target[i, s]
        if t == ignore_index or t < 0 or t >= n_classes:
            if t != ignore_index:
                cuda.atomic.min(first_bad, 0, p)   # integer min: the first bad position, deterministic
            for row in range(4):
                stats[row, i, s] = 0
            continue
        m = x[i, 0, s]
        for k in range(1, n_classes):
            m = max(m, x[i, k, s])
        total = 0.0
        for k in range(n_classes):
            total += math.exp(x[i, k, s] - m)
        log_sum = math.log(total)   # lse - m: the large m cancels before any rounding
        w_t = weight[t] if has_weight else 1.0
        value = (1.0 - smoothing) * w_t * (log_sum + (m - x[i, t, s]))
        if smoothing != 0:
            shifted_sum = 0.0
            weight_sum = 0.0
            for k in range(n_classes):
                w_k = weight[k] if has_weight else 1.0
                shifted_sum += w_k * (x[i, k, s] - m)
                weight_sum += w_k
            value += smoothing / n_classes * (weight_sum * log_sum - shifted_sum)
        stats[LOSS, i, s] = value
        stats[TARGET_WEIGHT, i, s] = w_t
        stats[MAX, i, s] = m
        stats[LOG_SUM_EXP, i, s] = log_sum


@cuda.jit
def _backward(x, target, weight, has_weight, ignore_index, smoothing, stats, grad_loss, per_position, grad):
    n, n_classes, spatial = x.shape
    for p in range(cuda.grid(1), n * spatial, cuda.gridsize(1)):
        i = p // spatial
        s = p % spatial
        t = target[i, s]
        if t == ignore_index:
            for k in range(n_classes):
                grad[i, k, s] = 0
            continue
        g = grad_loss[p] if per_position else grad_loss[0]
        a = g * (1.0 - smoothing) * stats[TARGET_WEIGHT, i, s]
        b = g * smoothing / n_classes
        weight_sum = 0.0
        if smoothing != 0:
            for k in range(n_classes):
                weight_sum += weight[k] if has_weight else 1.0
        p_scale = a + b * weight_sum
        m = stats[MAX, i, s]
        log_sum = stats[LOG_SUM_EXP, i, s]
        for k in range(n_classes):
            w_k = weight[k] if has_weight else 1.0
            value = math.exp((x[i, k, s] - m) - log_sum) * p_scale - b * w_k
            if k == t:
                value -= a
            grad[i, k, s] = value


def _launch(kernel, n, *args):
    if n:
        d = launch.device_array
        kernel[launch.blocks(n), launch.THREADS, launch.stream()](
            *(d(a) if hasattr(a, "shape") else a for a in args))


def _weight_args(x, weight):
    # Numba needs an array either way: without weights a 1-element view of x stands in, unread
    return (weight, True) if weight is not None else (x.reshape(-1)[:1], False)


def cross_entropy_forward(x, target, weight, ignore_index, smoothing):
    """Per-position terms of the fused cross-entropy on x (N, C, S) and target (N, S).

    Returns (stats, first_bad): stats (4, N, S) in x's dtype holds, by row, the loss, the
    target's class weight, the max score and log(sum(exp(x - max))), all 0 where the target
    is ignored or out of range; first_bad (1,) int64 holds the smallest flat position whose
    target is out of range, or N * S if there is none.
    """
    xp = launch.xp_of(x)
    x = xp.ascontiguousarray(x)
    target = xp.ascontiguousarray(target)
    stats = xp.empty((4,) + target.shape, dtype=x.dtype)
    first_bad = xp.full(1, target.size, dtype=xp.int64)
    weight, has_weight = _weight_args(x, weight)
    _launch(_forward, target.size, x, target, weight, has_weight, int(ignore_index), float(smoothing),
            stats, first_bad)
    return stats, first_bad


def cross_entropy_backward(x, target, weight, ignore_index, smoothing, stats, grad_loss, per_position):
    """d loss / d x, (N, C, S). grad_loss is (N, S) when per_position ("none"), else one value
    for every position (already divided by the mean's denominator)."""
    xp = launch.xp_of(x)
    x = xp.ascontiguousarray(x)
    target = xp.ascontiguousarray(target)
    grad_loss = xp.ascontiguousarray(grad_loss, dtype=x.dtype).reshape(-1)
    grad = xp.empty(x.shape, dtype=x.dtype)
    weight, has_weight = _weight_args(x, weight)
    _launch(_backward, target.size, x, target, weight, has_weight, int(ignore_index), float(smoothing),
            stats, grad_loss, per_position, grad)
    return grad
