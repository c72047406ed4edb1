"""Batch norm and group norm kernels (CPU, Numba).

Inputs are (N, C, S) arrays (S: the flattened spatial size); weight and bias are
(C,) arrays of the input's dtype. Statistics are reduced in float64 whatever the
input dtype, two-pass (mean, then mean squared deviation) so a large mean cannot
cancel the variance away. A channel's (batch norm) or an (n, group)'s (group
norm) data is reduced and then normalised while it is still in cache, so each
direction is one kernel call; the per-element arithmetic runs in the input's
dtype, at its vector width.
"""
import numpy as np
from numba import njit, prange

from gradflow.threads import parallel

# fastmath minus the no-NaN/no-inf assumptions: reductions may be reordered and
# vectorised, but NaN and inf inputs still propagate as in PyTorch.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


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

@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _group_norm_forward(x, groups, weight, bias, eps, relu, y, mean, invstd):
    zero = x.dtype.type(0)
    n_batch, channels, size = x.shape
    per_group = channels // groups
    count = per_group * size
    for block in prange(n_batch * groups):     # one (sample, group) per block
        n, g = block // groups, block % groups
        c0 = g * per_group
        total = 0.0
        for c in range(c0, c0 + per_group):
            for s in range(size):
                total += x[n, c, s]
        mu = total / count
        squares = 0.0
        for c in range(c0, c0 + per_group):
            for s in range(size):
                d = x[n, c, s] - mu
                squares += d * d
        mean[n, g] = mu
        invstd[n, g] = 1.0 / np.sqrt(squares / count + eps)
        mu_x = x.dtype.type(mu)
        for c in range(c0, c0 + per_group):
            scale = x.dtype.type(invstd[n, g] * weight[c])
            shift = bias[c]
            for s in range(size):
                y[n, c, s] = _activate((x[n, c, s] - mu_x) * scale + shift, relu, zero)


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _group_norm_backward(grad, x, groups, mean, invstd, weight, output, relu, grad_x, grad_weight, grad_bias):
    """Parallel over (sample, group) blocks; the per-sample sums of the weight and bias
    gradients are kept apart and added sample after sample at the end."""
    zero = x.dtype.type(0)
    n_batch, channels, size = x.shape
    per_group = channels // groups
    count = per_group * size
    sums_g = np.empty((n_batch, channels))       # sum of g per (sample, channel)
    sums_gx = np.empty((n_batch, channels))      # sum of g * (x - mean)
    for block in prange(n_batch * groups):
        n, g = block // groups, block % groups
        c0 = g * per_group
        mu_x = x.dtype.type(mean[n, g])
        rstd = invstd[n, g]
        sum_wg = 0.0     # sum of w * g over the group
        sum_wgx = 0.0    # sum of w * g * (x - mean)
        for c in range(c0, c0 + per_group):
            sum_g = 0.0
            sum_gx = 0.0
            for s in range(size):
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
        for c in range(c0, c0 + per_group):
            a = x.dtype.type(rstd * weight[c])
            for s in range(size):
                gs = _through_relu(grad[n, c, s], output[n, c, s], relu, zero)
                grad_x[n, c, s] = gs * a + (x[n, c, s] - mu_x) * b + c_
    for c in range(channels):
        total_g = 0.0
        total_gx = 0.0
        for n in range(n_batch):
            total_g += sums_g[n, c]
            total_gx += sums_gx[n, c]
        grad_bias[c] = total_g
        grad_weight[c] = total_gx


@parallel
def group_norm_forward(x, num_groups, weight, bias, eps, relu=False):
    """(y, mean, invstd), the stats float64 (N, num_groups); y has a ReLU applied if `relu`."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    mean = np.empty((x.shape[0], num_groups), dtype=np.float64)
    invstd = np.empty((x.shape[0], num_groups), dtype=np.float64)
    _group_norm_forward(x, num_groups, weight, bias, float(eps), bool(relu), y, mean, invstd)
    return y, mean, invstd


@parallel
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
