"""Batch norm and group norm kernels (CUDA, Numba), the same host functions as
kernels/cpu/norm.py.

One block per channel (batch norm) or per (n, group) (group norm) reduces its data
with a shared-memory tree in float64, then normalises (forward) or forms the input
gradient (backward) in the same kernel. Group norm's weight and bias gradients sum
over n, across blocks, so a second small kernel (one thread per channel) adds up
the per-(n, channel) partial sums in a fixed order: deterministic, no atomics.
"""
import math

from numba import cuda, float64

from gradflow.kernels.cuda import launch

# Threads per reduction block: a power of two. The simulator runs every thread as
# a Python thread, so it gets fewer.
REDUCE_THREADS = 32 if launch.SIMULATOR else 256


@cuda.jit(device=True)
def _block_sum(shared, value):
    """Sum of `value` over the block's threads, returned to every thread."""
    tid = cuda.threadIdx.x
    shared[tid] = value
    cuda.syncthreads()
    step = REDUCE_THREADS // 2
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

@cuda.jit
def _batch_norm_train_forward(x, weight, bias, eps, relu, y, mean, var, invstd):
    shared = cuda.shared.array(REDUCE_THREADS, float64)
    c = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    n_batch, _, size = x.shape
    count = n_batch * size
    total = 0.0
    for i in range(tid, count, REDUCE_THREADS):
        total += x[i // size, c, i % size]
    mu = _block_sum(shared, total) / count
    squares = 0.0
    for i in range(tid, count, REDUCE_THREADS):
        d = x[i // size, c, i % size] - mu
        squares += d * d
    variance = _block_sum(shared, squares) / count
    rstd = 1.0 / math.sqrt(variance + eps)
    if tid == 0:
        mean[c] = mu
        var[c] = variance
        invstd[c] = rstd
    scale = rstd * weight[c]
    shift = bias[c]
    for i in range(tid, count, REDUCE_THREADS):
        n, s = i // size, i % size
        y[n, c, s] = _activate((x[n, c, s] - mu) * scale + shift, relu)


@cuda.jit
def _batch_norm_eval_forward(x, mean, invstd, weight, bias, relu, y):
    _, channels, size = x.shape
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        s = k % size
        c = (k // size) % channels
        n = k // (size * channels)
        y[n, c, s] = _activate((x[n, c, s] - mean[c]) * (invstd[c] * weight[c]) + bias[c], relu)


@cuda.jit
def _batch_norm_backward(grad, x, mean, invstd, weight, training, output, relu, grad_x, grad_weight, grad_bias):
    shared = cuda.shared.array(REDUCE_THREADS, float64)
    c = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    n_batch, _, size = x.shape
    count = n_batch * size
    mu = mean[c]
    sum_g = 0.0
    sum_gx = 0.0
    for i in range(tid, count, REDUCE_THREADS):
        n, s = i // size, i % size
        g = _through_relu(grad[n, c, s], output[n, c, s], relu)
        sum_g += g
        sum_gx += g * (x[n, c, s] - mu)
    sum_g = _block_sum(shared, sum_g)
    sum_gx = _block_sum(shared, sum_gx)
    rstd = invstd[c]
    if tid == 0:
        grad_bias[c] = sum_g
        grad_weight[c] = sum_gx * rstd
    # dx = g*a + (x - mean)*b + c0; the batch terms b, c0 vanish in eval mode
    a = rstd * weight[c]
    b = -a * rstd * rstd * sum_gx / count if training else 0.0
    c0 = -a * sum_g / count if training else 0.0
    for i in range(tid, count, REDUCE_THREADS):
        n, s = i // size, i % size
        g = _through_relu(grad[n, c, s], output[n, c, s], relu)
        grad_x[n, c, s] = g * a + (x[n, c, s] - mu) * b + c0


def _device(*arrays):
    return tuple(launch.device_array(a) for a in arrays)


def batch_norm_train_forward(x, weight, bias, eps, relu=False):
    """Normalise with the batch's statistics (then ReLU if `relu`):
    (y, mean, biased var, invstd), the stats float64 (C,)."""
    xp = launch.xp_of(x)
    x = xp.ascontiguousarray(x)
    channels = x.shape[1]
    y = xp.empty_like(x)
    mean, var, invstd = (xp.empty(channels, dtype=xp.float64) for _ in range(3))
    _batch_norm_train_forward[channels, REDUCE_THREADS, launch.stream()](
        *_device(x, weight, bias), float(eps), bool(relu), *_device(y, mean, var, invstd))
    return y, mean, var, invstd


def batch_norm_eval_forward(x, mean, invstd, weight, bias, relu=False):
    """Normalise with given (running) statistics, float64 (C,), then ReLU if `relu`."""
    xp = launch.xp_of(x)
    x = xp.ascontiguousarray(x)
    y = xp.empty_like(x)
    if x.size:
        _batch_norm_eval_forward[launch.blocks(x.size), launch.THREADS, launch.stream()](
            *_device(x, mean, invstd, weight, bias), bool(relu), *_device(y))
    return y


def batch_norm_backward(grad, x, mean, invstd, weight, training, relu_output=None):
    """(grad_x, grad_weight, grad_bias) in one kernel; relu_output: the forward's
    output when it fused a ReLU (the gradient is masked by it)."""
    xp = launch.xp_of(x)
    grad, x = xp.ascontiguousarray(grad), xp.ascontiguousarray(x)
    relu = relu_output is not None
    output = xp.ascontiguousarray(relu_output) if relu else x
    channels = x.shape[1]
    grad_x = xp.empty_like(x)
    grad_weight, grad_bias = xp.empty(channels, dtype=xp.float64), xp.empty(channels, dtype=xp.float64)
    _batch_norm_backward[channels, REDUCE_THREADS, launch.stream()](
        *_device(grad, x, mean, invstd, weight), bool(training), launch.device_array(output), relu,
        *_device(grad_x, grad_weight, grad_bias))
    return grad_x, grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)


# ---- group norm -----------------------------------------------------------------------

@cuda.jit
def _group_norm_forward(x, groups, weight, bias, eps, relu, y, mean, invstd):
    shared = cuda.shared.array(REDUCE_THREADS, float64)
    n = cuda.blockIdx.x // groups
    g = cuda.blockIdx.x % groups
    tid = cuda.threadIdx.x
    size = x.shape[2]
    per_group = x.shape[1] // groups
    c0 = g * per_group
    count = per_group * size
    total = 0.0
    for i in range(tid, count, REDUCE_THREADS):
        total += x[n, c0 + i // size, i % size]
    mu = _block_sum(shared, total) / count
    squares = 0.0
    for i in range(tid, count, REDUCE_THREADS):
        d = x[n, c0 + i // size, i % size] - mu
        squares += d * d
    rstd = 1.0 / math.sqrt(_block_sum(shared, squares) / count + eps)
    if tid == 0:
        mean[n, g] = mu
        invstd[n, g] = rstd
    for i in range(tid, count, REDUCE_THREADS):
        c, s = c0 + i // size, i % size
        y[n, c, s] = _activate((x[n, c, s] - mu) * (rstd * weight[c]) + bias[c], relu)


@cuda.jit
def _group_norm_backward(grad, x, groups, mean, invstd, weight, output, relu, grad_x, partial_g, partial_gx):
    shared = cuda.shared.array(REDUCE_THREADS, float64)
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
        for s in range(tid, size, REDUCE_THREADS):
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
    for i in range(tid, count, REDUCE_THREADS):
        c, s = c0 + i // size, i % size
        gs = _through_relu(grad[n, c, s], output[n, c, s], relu)
        grad_x[n, c, s] = gs * (rstd * weight[c]) + (x[n, c, s] - mu) * b + d


@cuda.jit
def _sum_over_batch(partial_g, partial_gx, grad_weight, grad_bias):
    c = cuda.grid(1)
    if c < grad_weight.shape[0]:
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
    if x.shape[0]:
        _group_norm_forward[x.shape[0] * num_groups, REDUCE_THREADS, launch.stream()](
            launch.device_array(x), num_groups, *_device(weight, bias), float(eps), bool(relu),
            *_device(y, mean, invstd))
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
    stream = launch.stream()
    if n_batch:
        _group_norm_backward[n_batch * num_groups, REDUCE_THREADS, stream](
            *_device(grad, x), num_groups, *_device(mean, invstd, weight, output), relu,
            *_device(grad_x, partial_g, partial_gx))
    _sum_over_batch[launch.blocks(channels), launch.THREADS, stream](
        *_device(partial_g, partial_gx, grad_weight, grad_bias))
    return grad_x, grad_weight.astype(x.dtype), grad_bias.astype(x.dtype)
