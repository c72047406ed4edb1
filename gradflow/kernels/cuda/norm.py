"""Batch norm and group norm kernels (CUDA, Numba), the same host functions as
kernels/cpu/norm.py.

Reductions are shared-memory trees in float64 over one block's threads
(``_block_sum``; the block size is a launch parameter, launch.GEOMETRY). Batch norm
reduces over many blocks: one block per (n, channel) forms partial moments, then
one thread per channel combines them over n in a fixed order (Chan's pairwise
update of mean and squared deviations), so a channel of N*H*W values is spread
over N blocks instead of one; normalising and the input gradient are then
elementwise grid-stride kernels. Group norm has one block per (n, group), which
normalises (forward) or forms the input gradient (backward) itself; its weight and
bias gradients sum over n, across blocks, in a second small kernel (one thread per
channel). Deterministic everywhere, no atomics.
"""
import math

from numba import cuda, float64

from gradflow.kernels.cuda import launch

MAX_THREADS = launch.MAX_REDUCE_THREADS


@cuda.jit(device=True)
def _block_sum(shared, value):
    """Sum of `value` over the block's threads (a power of two), returned to every thread."""
    tid = cuda.threadIdx.x
    shared[tid] = value
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step > 0:
        if tid < step:
            shared[tid] += shared[tid + step]
        cuda.syncthreads()
        step //= 2
    total = shared[0]
    cuda.syncthreads()   # every thread has read it before `shared` is reused
    return total


@cuda.jit(device=True)
def _activate(v, relu):
    return 0.0 if relu and v < 0 else v


@cuda.jit(device=True)
def _through_relu(g, output, relu):
    return g if not relu or output > 0 else 0.0


# ---- batch norm -----------------------------------------------------------------------

@launch.kernel
def _batch_norm_partial_moments(x, partial_mean, partial_m2):
    """Block (n, c): mean of x[n, c, :] and the sum of squared deviations from it."""
    shared = cuda.shared.array(MAX_THREADS, float64)
    channels = x.shape[1]
    n = cuda.blockIdx.x // channels
    c = cuda.blockIdx.x % channels
    tid = cuda.threadIdx.x
    threads = cuda.blockDim.x
    size = x.shape[2]
    total = 0.0
    for s in range(tid, size, threads):
        total += x[n, c, s]
    mu = _block_sum(shared, total) / size
    squares = 0.0
    for s in range(tid, size, threads):
        d = x[n, c, s] - mu
        squares += d * d
    m2 = _block_sum(shared, squares)
    if tid == 0:
        partial_mean[n, c] = mu
        partial_m2[n, c] = m2


@launch.kernel
def _batch_norm_combine_moments(partial_mean, partial_m2, size, eps, mean, var, invstd):
    """Thread c: the batch's mean and biased variance of channel c from the per-n moments,
    combined in n order (Chan et al.: exact for equal-sized parts, no cancellation)."""
    for c in range(cuda.grid(1), mean.shape[0], cuda.gridsize(1)):
        count = 0.0
        mu = 0.0
        m2 = 0.0
        for n in range(partial_mean.shape[0]):
            delta = partial_mean[n, c] - mu
            total = count + size
            mu += delta * (size / total)
            m2 += partial_m2[n, c] + delta * delta * (count * size / total)
            count = total
        variance = m2 / count
        mean[c] = mu
        var[c] = variance
        invstd[c] = 1.0 / math.sqrt(variance + eps)


@launch.kernel
def _batch_norm_normalise(x, mean, invstd, weight, bias, relu, y):
    _, channels, size = x.shape
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        s = k % size
        c = (k // size) % channels
        n = k // (size * channels)
        y[n, c, s] = _activate((x[n, c, s] - mean[c]) * (invstd[c] * weight[c]) + bias[c], relu)


@launch.kernel
def _batch_norm_partial_grads(grad, x, mean, output, relu, partial_g, partial_gx):
    """Block (n, c): sums of g and g * (x - mean) over x[n, c, :] (g masked by the ReLU)."""
    shared = cuda.shared.array(MAX_THREADS, float64)
    channels = x.shape[1]
    n = cuda.blockIdx.x // channels
    c = cuda.blockIdx.x % channels
    tid = cuda.threadIdx.x
    threads = cuda.blockDim.x
    mu = mean[c]
    sum_g = 0.0
    sum_gx = 0.0
    for s in range(tid, x.shape[2], threads):
        g = _through_relu(grad[n, c, s], output[n, c, s], relu)
        sum_g += g
        sum_gx += g * (x[n, c, s] - mu)
    sum_g = _block_sum(shared, sum_g)
    sum_gx = _block_sum(shared, sum_gx)
    if tid == 0:
        partial_g[n, c] = sum_g
        partial_gx[n, c] = sum_gx


@launch.kernel
def _batch_norm_input_grad(grad, x, mean, invstd, weight, sum_g, sum_gx, training, output, relu, grad_x):
    """dx = g*a + (x - mean)*b + c0 per element; the batch terms b, c0 vanish in eval mode."""
    n_batch, channels, size = x.shape
    count = n_batch * size
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        s = k % size
        c = (k // size) % channels
        n = k // (size * channels)
        rstd = invstd[c]
        a = rstd * weight[c]
        b = -a * rstd * rstd * sum_gx[c] / count if training else 0.0
        c0 = -a * sum_g[c] / count if training else 0.0
        g = _through_relu(grad[n, c, s], output[n, c, s], relu)
        grad_x[n, c, s] = g * a + (x[n, c, s] - mean[c]) * b + c0


def _elementwise(kernel, size, *args):
    if size:
        kernel(launch.blocks(size), launch.GEOMETRY.threads, *args)


def _per_channel(kernel, channels, *args):
    kernel(launch.blocks(channels), launch.GEOMETRY.threads, *args)


def _per_block(kernel, n_blocks, *args):
    if n_blocks:
        kernel(n_blocks, launch.GEOMETRY.reduce_threads, *args)


def batch_norm_train_forward(x, weight, bias, eps, relu=False):
    """Normalise with the batch's statistics (then ReLU if `relu`):
    (y, mean, biased var, invstd), the stats float64 (C,)."""
    xp = launch.xp_of(x)
    x = xp.ascontiguousarray(x)
    n_batch, channels, size = x.shape
    y = xp.empty_like(x)
    mean, var, invstd = (xp.empty(channels, dtype=xp.float64) for _ in range(3))
    if n_batch * size == 0:      # no values: undefined statistics, as 0/0
        for stat in (mean, var, invstd):
            stat[...] = xp.nan
        return y, mean, var, invstd
    partial_mean = xp.empty((n_batch, channels), dtype=xp.float64)
    partial_m2 = xp.empty((n_batch, channels), dtype=xp.float64)
    _per_block(_batch_norm_partial_moments, n_batch * channels, x, partial_mean, partial_m2)
    _per_channel(_batch_norm_combine_moments, channels, partial_mean, partial_m2, float(size), float(eps),
                 mean, var, invstd)
    _elementwise(_batch_norm_normalise, x.size, x, mean, invstd, weight, bias, bool(relu), y)
    return y, mean, var, invstd


def batch_norm_eval_forward(x, mean, invstd, weight, bias, relu=False):
    """Normalise with given (running) statistics, float64 (C,), then ReLU if `relu`."""
    xp = launch.xp_of(x)
    x = xp.ascontiguousarray(x)
    y = xp.empty_like(x)
    _elementwise(_batch_norm_normalise, x.size, x, mean, invstd, weight, bias, bool(relu), y)
    return y


def batch_norm_backward(grad, x, mean, invstd, weight, training, relu_output=None):
    """(grad_x, grad_weight, grad_bias); relu_output: the forward's output when it
    fused a ReLU (the gradient is masked by it)."""
    xp = launch.xp_of(x)
    grad, x = xp.ascontiguousarray(grad), xp.ascontiguousarray(x)
    relu = relu_output is not None
    output = xp.ascontiguousarray(relu_output) if relu else x
    n_batch, channels, _ = x.shape
    grad_x = xp.empty_like(x)
    partial_g = xp.zeros((n_batch, channels), dtype=xp.float64)
    partial_gx = xp.zeros((n_batch, channels), dtype=xp.float64)
    sum_g, sum_gx = xp.empty(channels, dtype=xp.float64), xp.empty(channels, dtype=xp.float64)
    _per_block(_batch_norm_partial_grads, n_batch * channels, grad, x, mean, output, relu, partial_g, partial_gx)
    _per_channel(_sum_over_batch, channels, partial_g, partial_gx, sum_gx, sum_g)
    _elementwise(_batch_norm_input_grad, x.size, grad, x, mean, invstd, weight, sum_g, sum_gx, bool(training),
                 output, relu, grad_x)
    return grad_x, (sum_gx * invstd).astype(x.dtype), sum_g.astype(x.dtype)


# ---- group norm -----------------------------------------------------------------------

@launch.kernel
def _group_norm_forward(x, groups, weight, bias, eps, relu, y, mean, invstd):
    shared = cuda.shared.array(MAX_THREADS, float64)
    threads = cuda.blockDim.x
    n = cuda.blockIdx.x // groups
    g = cuda.blockIdx.x % groups
    tid = cuda.threadIdx.x
    size = x.shape[2]
    per_group = x.shape[1] // groups
    c0 = g * per_group
    count = per_group * size
    total = 0.0
    for i in range(tid, count, threads):
        total += x[n, c0 + i // size, i % size]
    mu = _block_sum(shared, total) / count
    squares = 0.0
    for i in range(tid, count, threads):
        d = x[n, c0 + i // size, i % size] - mu
        squares += d * d
    rstd = 1.0 / math.sqrt(_block_sum(shared, squares) / count + eps)
    if tid == 0:
        mean[n, g] = mu
        invstd[n, g] = rstd
    for i in range(tid, count, threads):
        c, s = c0 + i // size, i % size
        y[n, c, s] = _activate((x[n, c, s] - mu) * (rstd * weight[c]) + bias[c], relu)


@launch.kernel
def _group_norm_backward(grad, x, groups, mean, invstd, weight, output, relu, grad_x, partial_g, partial_gx):
    shared = cuda.shared.array(MAX_THREADS, float64)
    threads = cuda.blockDim.x
    n = cuda.blockIdx.x // groups
    g = cuda.blockIdx.x % groups
    tid = cuda.threadIdx.x
    size = x.shape[2]
    per_group = x.shape[1] // groups
    c0 = g * per_group
    count = per_group * size
    mu = mean[n, g]
    rstd = invstd[n, g]
    sum_wg = 0.0     # sum of w * g over the group
    sum_wgx = 0.0    # sum of w * g * (x - mean)
    for c in range(c0, c0 + per_group):
        sum_g = 0.0
        sum_gx = 0.0
        for s in range(tid, size, threads):
            gs = _through_relu(grad[n, c, s], output[n, c, s], relu)
            sum_g += gs
            sum_gx += gs * (x[n, c, s] - mu)
        sum_g = _block_sum(shared, sum_g)
        sum_gx = _block_sum(shared, sum_gx)
        if tid == 0:      # per (n, c): the weight and bias gradients sum these over n
            partial_g[n, c] = sum_g
            partial_gx[n, c] = sum_gx * rstd
        sum_wg += weight[c] * sum_g
        sum_wgx += weight[c] * sum_gx
    # dx = invstd * (w*g - mean(w*g) - xhat * mean(w*g*xhat))
    b = -rstd * rstd * rstd * sum_wgx / count
    d = -rstd * sum_wg / count
    for i in range(tid, count, threads):
        c, s = c0 + i // size, i % size
        gs = _through_relu(grad[n, c, s], output[n, c, s], relu)
        grad_x[n, c, s] = gs * (rstd * weight[c]) + (x[n, c, s] - mu) * b + d


@launch.kernel
def _sum_over_batch(partial_g, partial_gx, grad_weight, grad_bias):
    """Thread c: the sums over n of the per-(n, c) partials, in n order."""
    for c in range(cuda.grid(1), grad_weight.shape[0], cuda.gridsize(1)):
        total_g = 0.0
        total_gx = 0.0
        for n in range(partial_g.shape[0]):
            total_g += partial_g[n, c]
            total_gx += partial_gx[n, c]
        grad_bias[c] = total_g
        grad_weight[c] = total_gx


def group_norm_forward(x, num_groups, weight, bias, eps, relu=False):
    """(y, mean, invstd), the stats float64 (N, num_groups); y has a ReLU applied if `relu`."""
    xp = launch.xp_of(x)
    x = xp.ascontiguousarray(x)
    y = xp.empty_like(x)
    mean = xp.empty((x.shape[0], num_groups), dtype=xp.float64)
    invstd = xp.empty((x.shape[0], num_groups), dtype=xp.float64)
    _per_block(_group_norm_forward, x.shape[0] * num_groups, x, num_groups, weight, bias, float(eps), bool(relu),
               y, mean, invstd)
    return y, mean, invstd


def group_norm_backward(grad, x, num_groups, mean, invstd, weight, relu_output=None):
    """(grad_x, grad_weight, grad_bias): one block per (n, group), then one thread per
    channel for the weight and bias gradients; relu_output as in batch_norm_backward."""
    xp = launch.xp_of(x)
    grad, x = xp.ascontiguousarray(grad), xp.ascontiguousarray(x)
    relu = relu_output is not None
    output = xp.ascontiguousarray(relu_output) if relu else x
    n_batch, channels = x.shape[0], x.shape[1]
    grad_x = xp.empty_like(x)
    partial_g = xp.zeros((n_batch, channels), dtype=xp.float64)
    partial_gx = xp.zeros((n_batch, channels), dtype=xp.float64)
    grad_weight, grad_bias = xp.empty(channels, dtype=xp.float64), xp.empty(channels, dtype=xp.float64)
    _per_block(_group_norm_backward, n_batch * num_groups, grad, x, num_groups, mean, invstd, weight, output, relu,
               grad_x, partial_g, partial_gx)
    _per_channel(_sum_over_batch, channels, partial_g, partial_gx, grad_weight, grad_bias)
    return grad_x, grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)
