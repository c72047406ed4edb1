"""Fused optimizer updates (CUDA, Numba): the rules of gradflow.optim.rules, one launch
per chunk of up to CHUNK parameters.

A launch takes tuples of CHUNK 1-D arrays (parameters, gradients, state buffers);
blockIdx.y picks the tensor and a grid-stride loop over blockIdx.x covers it. So a
group of 40 parameters updates in 5 launches instead of a dozen array ops each. CHUNK
bounds the kernel's argument block (each 1-D array argument is 7 machine words). Should
this Numba fail to compile the tuple-indexed kernels, updates go one launch per tensor.
Elementwise only: deterministic, no atomics.
"""
from numba import cuda

from gradflow.kernels.cuda import launch
from gradflow.optim import rules

CHUNK = 8

_sgd_element = cuda.jit(device=True)(rules.sgd_element)
_adam_element = cuda.jit(device=True)(rules.adam_element)


@launch.kernel(depends=(rules,))
def _sgd_chunk(params, grads, buffers, first_step, lr, momentum, keep, weight_decay, nesterov, maximize,
               has_momentum):
    j = cuda.blockIdx.y
    param, grad, buffer = params[j], grads[j], buffers[j]
    for i in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, param.size,
                   cuda.gridDim.x * cuda.blockDim.x):
        _sgd_element(param, grad, buffer, i, first_step, lr, momentum, keep, weight_decay, nesterov, maximize,
                     has_momentum)


@launch.kernel(depends=(rules,))
def _adam_chunk(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lerp_weight, lerp_small, lerp_keep, beta2,
                one_minus_beta2, weight_decay, decay_factor, decoupled, maximize, amsgrad, neg_step_size,
                sqrt_bias_correction2, eps):
    j = cuda.blockIdx.y
    param = params[j]
    for i in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, param.size,
                   cuda.gridDim.x * cuda.blockDim.x):
        _adam_element(param, grads[j], exp_avgs[j], exp_avg_sqs[j], max_exp_avg_sqs[j], i, lerp_weight, lerp_small,
                      lerp_keep, beta2, one_minus_beta2, weight_decay, decay_factor, decoupled, maximize, amsgrad,
                      neg_step_size, sqrt_bias_correction2, eps)


@launch.kernel(depends=(rules,))
def _sgd_one(param, grad, buffer, first_step, lr, momentum, keep, weight_decay, nesterov, maximize, has_momentum):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _sgd_element(param, grad, buffer, i, first_step, lr, momentum, keep, weight_decay, nesterov, maximize,
                     has_momentum)


@launch.kernel(depends=(rules,))
def _adam_one(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lerp_weight, lerp_small, lerp_keep, beta2,
              one_minus_beta2, weight_decay, decay_factor, decoupled, maximize, amsgrad, neg_step_size,
              sqrt_bias_correction2, eps):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _adam_element(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, i, lerp_weight, lerp_small, lerp_keep,
                      beta2, one_minus_beta2, weight_decay, decay_factor, decoupled, maximize, amsgrad,
                      neg_step_size, sqrt_bias_correction2, eps)


# Why chunked launches are off (None: on). A Numba that cannot compile tuple-indexed kernels
# still updates correctly, one launch per tensor.
per_tensor_reason = None


def _chunks(arrays_per_role, scalars, chunk_kernel, one_kernel):
    """Launch `chunk_kernel` over the tensors in chunks of CHUNK (or `one_kernel` per tensor);
    each role (params, grads, ...) is a list of equally long lists of 1-D arrays of one dtype."""
    global per_tensor_reason
    xp = launch.xp_of(arrays_per_role[0][0])
    count = len(arrays_per_role[0])
    pad = xp.empty(0, dtype=arrays_per_role[0][0].dtype)
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        size = max(a.size for a in arrays_per_role[0][start:stop])
        if size == 0:
            continue
        if per_tensor_reason is None:
            tuples = [tuple(role[start:stop]) + (pad,) * (CHUNK - (stop - start)) for role in arrays_per_role]
            try:
                chunk_kernel((launch.blocks(size), stop - start), launch.GEOMETRY.threads, *tuples, *scalars)
                continue
            except Exception as exc:      # fails at compile time, before anything ran
                per_tensor_reason = f"{type(exc).__name__}: {exc}"
        for k in range(start, stop):
            if arrays_per_role[0][k].size:
                one_kernel(launch.blocks(arrays_per_role[0][k].size), launch.GEOMETRY.threads,
                           *(role[k] for role in arrays_per_role), *scalars)


def sgd_update(params, grads, buffers, scalars):
    """scalars: (first_step, lr, momentum, keep, weight_decay, nesterov, maximize, has_momentum)."""
    _chunks([params, grads, buffers], scalars, _sgd_chunk, _sgd_one)


def adam_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, scalars):
    """scalars: as gradflow.optim.rules.adam_element's after the arrays and index."""
    _chunks([params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs], scalars, _adam_chunk, _adam_one)
