"""Batch norm and group norm kernels (CPU, Numba).

Inputs are (N, C, S) arrays (S: the flattened spatial size); weight and bias are
(C,) arrays of the input's dtype. Statistics are reduced in float64 whatever the
input dtype: batch norm's two-pass (mean, then mean squared deviation), group
norm's in one pass of shifted sums (see _group_norm_forward_block); either way a
large mean cannot cancel the variance away. A channel's (batch norm) or an (n, group)'s (group
norm) data is reduced and then normalised while it is still in cache, so each
direction is one kernel call; the per-element arithmetic runs in the input's
dtype, at its vector width.
"""
import numpy as np
from numba import njit, prange

from gradflow import threads
from gradflow.threads import parallel

# fastmath minus the no-NaN/no-inf assumptions: reductions may be reordered and
# vectorised, but NaN and inf inputs still propagate as in PyTorch.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# Group-norm inputs of fewer values run serially whatever the thread count: measured on
# 2 threads, (4, 16, 64, 64) float32 took 0.07 ms serial and 0.10 ms in the pool.
GROUP_PARALLEL_SIZE = 1 << 18
# The group-norm kernels exist serial and parallel, compiled apart: without "contract"
# neither may fuse a multiply-add the other leaves split (measured: the fused ReLU's
# grad_x then differed between the two in the last bit).
GROUP_FASTMATH = FASTMATH - {"contract"}


@njit(inline="always")
def _activate(v, relu, zero):
    """The fused ReLU (a NaN stays NaN, as np.maximum); relu is loop-invariant, so
    LLVM unswitches it out of the element loops."""
    return v if not relu or not v < 0 else zero


@njit(inline="always")
def _through_relu(g, output, relu, zero):
    """The gradient past the fused ReLU: zero where its output was not positive."""
    return g if not relu or output > 0 else zero


# ---- batch norm: statistics per channel over (N, S) -----------------------------------

@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _batch_norm_train_forward(x, weight, bias, eps, relu, y, mean, var, invstd):
    zero = x.dtype.type(0)
    n_batch, channels, size = x.shape
    count = n_batch * size
    for c in prange(channels):      # one channel per block: its sums in the same order on any thread
        total = 0.0
        for n in range(n_batch):
            for s in range(size):
                total += x[n, c, s]
        mu = total / count
        squares = 0.0
        for n in range(n_batch):
            for s in range(size):
                d = x[n, c, s] - mu
                squares += d * d
        mean[c] = mu
        var[c] = squares / count
        invstd[c] = 1.0 / np.sqrt(squares / count + eps)
        mu_x = x.dtype.type(mu)
        scale = x.dtype.type(invstd[c] * weight[c])
        shift = bias[c]
        for n in range(n_batch):
            for s in range(size):
                y[n, c, s] = _activate((x[n, c, s] - mu_x) * scale + shift, relu, zero)


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _batch_norm_eval_forward(x, mean, invstd, weight, bias, relu, y):
    zero = x.dtype.type(0)
    for c in prange(x.shape[1]):
        mu_x = x.dtype.type(mean[c])
        scale = x.dtype.type(invstd[c] * weight[c])
        shift = bias[c]
        for n in range(x.shape[0]):
            for s in range(x.shape[2]):
                y[n, c, s] = _activate((x[n, c, s] - mu_x) * scale + shift, relu, zero)


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _batch_norm_backward(grad, x, mean, invstd, weight, training, output, relu, grad_x, grad_weight, grad_bias):
    zero = x.dtype.type(0)
    n_batch, channels, size = x.shape
    count = n_batch * size
    for c in prange(channels):
        mu_x = x.dtype.type(mean[c])
        sum_g = 0.0      # d bias
        sum_gx = 0.0     # sum of g * (x - mean): d weight / invstd
        for n in range(n_batch):
            for s in range(size):
                g = _through_relu(grad[n, c, s], output[n, c, s], relu, zero)
                sum_g += g
                sum_gx += g * (x[n, c, s] - mu_x)
        grad_bias[c] = sum_g
        grad_weight[c] = sum_gx * invstd[c]
        # dx = w*invstd * (g - [training] (mean(g) + xhat * mean(g*xhat)))
        #    = g*a + (x - mean)*b + c0, with the batch terms b, c0 zero in eval mode
        a = invstd[c] * weight[c]
        b = -a * invstd[c] * invstd[c] * sum_gx / count if training else 0.0
        c0 = -a * sum_g / count if training else 0.0
        a_x, b_x, c0_x = x.dtype.type(a), x.dtype.type(b), x.dtype.type(c0)
        for n in range(n_batch):
            for s in range(size):
                g = _through_relu(grad[n, c, s], output[n, c, s], relu, zero)
                grad_x[n, c, s] = g * a_x + (x[n, c, s] - mu_x) * b_x + c0_x


@parallel
def batch_norm_train_forward(x, weight, bias, eps, relu=False):
    """Normalise with the batch's statistics (then ReLU if `relu`):
    (y, mean, biased var, invstd), the stats float64 (C,)."""
    x = np.ascontiguousarray(x)
    channels = x.shape[1]
    y = np.empty_like(x)
    mean, var, invstd = (np.empty(channels, dtype=np.float64) for _ in range(3))
    _batch_norm_train_forward(x, weight, bias, float(eps), bool(relu), y, mean, var, invstd)
    return y, mean, var, invstd


@parallel
def batch_norm_eval_forward(x, mean, invstd, weight, bias, relu=False):
    """Normalise with given (running) statistics, float64 (C,), then ReLU if `relu`."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _batch_norm_eval_forward(x, mean, invstd, weight, bias, bool(relu), y)
    return y


@parallel
def batch_norm_backward(grad, x, mean, invstd, weight, training, relu_output=None):
    """(grad_x, grad_weight, grad_bias) in one pass per channel. In training the
    statistics depend on x, which adds the two batch terms of grad_x. relu_output:
    the forward's output when it fused a ReLU (the gradient is masked by it)."""
    grad, x = np.ascontiguousarray(grad), np.ascontiguousarray(x)
    relu = relu_output is not None
    output = np.ascontiguousarray(relu_output) if relu else x
    grad_x = np.empty_like(x)
    grad_weight, grad_bias = np.empty(x.shape[1], dtype=np.float64), np.empty(x.shape[1], dtype=np.float64)
    _batch_norm_backward(grad, x, mean, invstd, weight, bool(training), output, relu, grad_x, grad_weight, grad_bias)
    return grad_x, grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)


# ---- group norm: statistics per (n, group) over (C / groups, S) -----------------------
#
# One block per (sample, group), in the same order on any thread. Each kernel exists
# twice, as in cross_entropy.py: the blocks in order on the calling thread, and the same
# blocks in prange; threads.by_size chooses by size alone, so both give the same bits.

@njit(inline="always")
def _group_span(block, groups, channels):
    """Block number -> (sample, group, its first channel, its end channel)."""
    n, g = block // groups, block % groups
    per_group = channels // groups
    return n, g, g * per_group, (g + 1) * per_group


@njit(inline="always")
def _group_norm_forward_block(block, x, groups, weight, bias, eps, relu, y, mean, invstd):
    """The group's statistics in ONE pass over x, as sums of x - shift in float64, the
    shift being the group's first element: the sum of squares then cancels by
    (mean - shift)^2 / var, a few units for any data that is not all one value, where
    unshifted sums would cancel by mean^2 / var. Then the normalising pass, with the
    group still in cache."""
    zero = x.dtype.type(0)
    n, g, c0, c1 = _group_span(block, groups, x.shape[1])
    count = (c1 - c0) * x.shape[2]
    shift = np.float64(x[n, c0, 0]) if count else 0.0
    total = 0.0
    squares = 0.0
    for c in range(c0, c1):
        for s in range(x.shape[2]):
            d = x[n, c, s] - shift
            total += d
            squares += d * d
    mu = total / count
    var = max(squares / count - mu * mu, 0.0)
    mean[n, g] = shift + mu
    invstd[n, g] = 1.0 / np.sqrt(var + eps)
    mu_x = x.dtype.type(shift + mu)
    for c in range(c0, c1):
        scale = x.dtype.type(invstd[n, g] * weight[c])
        offset = bias[c]
        for s in range(x.shape[2]):
            y[n, c, s] = _activate((x[n, c, s] - mu_x) * scale + offset, relu, zero)


@njit(inline="always")
def _group_norm_backward_block(block, grad, x, groups, mean, invstd, weight, output, relu, grad_x,
                               sums_g, sums_gx):
    """grad_x of one (sample, group); its per-channel sums of g and g * xhat into
    sums_g[n], sums_gx[n] (added over samples later, in sample order)."""
    zero = x.dtype.type(0)
    n, g, c0, c1 = _group_span(block, groups, x.shape[1])
    count = (c1 - c0) * x.shape[2]
    mu_x = x.dtype.type(mean[n, g])
    rstd = invstd[n, g]
    sum_wg = 0.0     # sum of w * g over the group
    sum_wgx = 0.0    # sum of w * g * (x - mean)
    for c in range(c0, c1):
        sum_g = 0.0
        sum_gx = 0.0
        for s in range(x.shape[2]):
            gs = _through_relu(grad[n, c, s], output[n, c, s], relu, zero)
            sum_g += gs
            sum_gx += gs * (x[n, c, s] - mu_x)
        sums_g[n, c] = sum_g
        sums_gx[n, c] = sum_gx * rstd
        sum_wg += weight[c] * sum_g
        sum_wgx += weight[c] * sum_gx
    # dx = invstd * (w*g - mean(w*g) - xhat * mean(w*g*xhat))
    b = x.dtype.type(-rstd * rstd * rstd * sum_wgx / count)
    c_ = x.dtype.type(-rstd * sum_wg / count)
    for c in range(c0, c1):
        a = x.dtype.type(rstd * weight[c])
        for s in range(x.shape[2]):
            gs = _through_relu(grad[n, c, s], output[n, c, s], relu, zero)
            grad_x[n, c, s] = gs * a + (x[n, c, s] - mu_x) * b + c_


@njit(cache=True, fastmath=GROUP_FASTMATH)
def _group_norm_forward_serial(x, groups, weight, bias, eps, relu, y, mean, invstd):
    for block in range(x.shape[0] * groups):
        _group_norm_forward_block(block, x, groups, weight, bias, eps, relu, y, mean, invstd)


@njit(cache=True, fastmath=GROUP_FASTMATH, parallel=True)
def _group_norm_forward_parallel(x, groups, weight, bias, eps, relu, y, mean, invstd):
    for block in prange(x.shape[0] * groups):
        _group_norm_forward_block(block, x, groups, weight, bias, eps, relu, y, mean, invstd)


@njit(inline="always")
def _add_over_samples(sums_g, sums_gx, grad_weight, grad_bias):
    for c in range(sums_g.shape[1]):
        total_g = 0.0
        total_gx = 0.0
        for n in range(sums_g.shape[0]):
            total_g += sums_g[n, c]
            total_gx += sums_gx[n, c]
        grad_bias[c] = total_g
        grad_weight[c] = total_gx


@njit(cache=True, fastmath=GROUP_FASTMATH)
def _group_norm_backward_serial(grad, x, groups, mean, invstd, weight, output, relu, grad_x, grad_weight, grad_bias):
    sums_g, sums_gx = np.empty((x.shape[0], x.shape[1])), np.empty((x.shape[0], x.shape[1]))
    for block in range(x.shape[0] * groups):
        _group_norm_backward_block(block, grad, x, groups, mean, invstd, weight, output, relu, grad_x,
                                   sums_g, sums_gx)
    _add_over_samples(sums_g, sums_gx, grad_weight, grad_bias)


@njit(cache=True, fastmath=GROUP_FASTMATH, parallel=True)
def _group_norm_backward_parallel(grad, x, groups, mean, invstd, weight, output, relu, grad_x, grad_weight,
                                  grad_bias):
    sums_g, sums_gx = np.empty((x.shape[0], x.shape[1])), np.empty((x.shape[0], x.shape[1]))
    for block in prange(x.shape[0] * groups):
        _group_norm_backward_block(block, grad, x, groups, mean, invstd, weight, output, relu, grad_x,
                                   sums_g, sums_gx)
    _add_over_samples(sums_g, sums_gx, grad_weight, grad_bias)


# inputs (the first argument) of GROUP_PARALLEL_SIZE values or more run in parallel
_group_norm_forward = threads.by_size(_group_norm_forward_serial, _group_norm_forward_parallel,
                                      GROUP_PARALLEL_SIZE)
_group_norm_backward = threads.by_size(_group_norm_backward_serial, _group_norm_backward_parallel,
                                       GROUP_PARALLEL_SIZE)


def group_norm_forward(x, num_groups, weight, bias, eps, relu=False):
    """(y, mean, invstd), the stats float64 (N, num_groups); y has a ReLU applied if `relu`."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    mean = np.empty((x.shape[0], num_groups), dtype=np.float64)
    invstd = np.empty((x.shape[0], num_groups), dtype=np.float64)
    _group_norm_forward(x, num_groups, weight, bias, float(eps), bool(relu), y, mean, invstd)
    return y, mean, invstd


def group_norm_backward(grad, x, num_groups, mean, invstd, weight, relu_output=None):
    """(grad_x, grad_weight, grad_bias) in one pass per (n, group); relu_output as
    in batch_norm_backward."""
    grad, x = np.ascontiguousarray(grad), np.ascontiguousarray(x)
    relu = relu_output is not None
    output = np.ascontiguousarray(relu_output) if relu else x
    grad_x = np.empty_like(x)
    grad_weight, grad_bias = np.empty(x.shape[1], dtype=np.float64), np.empty(x.shape[1], dtype=np.float64)
    _group_norm_backward(grad, x, num_groups, mean, invstd, weight, output, relu, grad_x, grad_weight, grad_bias)
    return grad_x, grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)
