"""Fused optimizer updates (CUDA, Numba): the rules of gradflow.optim.rules, one launch
per chunk of up to CHUNK parameters.

A launch takes tuples of CHUNK 1-D arrays (parameters, gradients, state buffers);
blockIdx.y picks the tensor and a grid-stride loop over blockIdx.x covers it. So a
group of 40 parameters updates in 5 launches instead of a dozen array ops each. CHUNK
bounds the kernel's argument block (each 1-D array argument is 7 machine words).
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


def _chunks(arrays_per_role, scalars, kernel):
    """Launch `kernel` over the tensors in chunks of CHUNK; each role (params, grads, ...)
    is a list of equally long lists of 1-D arrays of one dtype."""
    xp = launch.xp_of(arrays_per_role[0][0])
    count = len(arrays_per_role[0])
    pad = xp.empty(0, dtype=arrays_per_role[0][0].dtype)
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        size = max(a.size for a in arrays_per_role[0][start:stop])
        if size == 0:
            continue
        tuples = [tuple(role[start:stop]) + (pad,) * (CHUNK - (stop - start)) for role in arrays_per_role]
        kernel((launch.blocks(size), stop - start), launch.GEOMETRY.threads, *tuples, *scalars)


def sgd_update(params, grads, buffers, scalars):
    """scalars: (first_step, lr, momentum, keep, weight_decay, nesterov, maximize, has_momentum)."""
    _chunks([params, grads, buffers], scalars, _sgd_chunk)


def adam_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, scalars):
    """scalars: as gradflow.optim.rules.adam_element's after the arrays and index."""
    _chunks([params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs], scalars, _adam_chunk)
