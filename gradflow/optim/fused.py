"""Fused optimizer updates: every array op of an update in one pass over the data.

The rules live in optim/rules.py. On the CPU each parameter is one call of a
numba.njit kernel compiled for its group's flags (see _sgd_kernels), split into
fixed blocks of BLOCK elements, run in parallel (prange) for a parameter of at
least PARALLEL_SIZE elements when more than one thread is allowed. Each element's
arithmetic is the same whatever the block or thread count (no sums across
elements, no fast-math), so results are bit-identical at any thread count and
vector width. On CUDA, kernels/cuda/optim.py updates up to 8 parameters per launch.

Scalars are cast to the parameter's dtype here, once per step, as NumPy casts a
Python float in an array op (float32 parameters update in float32).
"""
import functools

from numba import njit, prange

from gradflow import backend, threads
from gradflow.optim import rules

BLOCK = 1 << 14          # elements per block
# Smaller parameters update serially: the update is memory-bound and a thread-pool wake-up
# costs ~0.1 ms (measured: Adam on 1 M float32 values 0.62 ms serial, 0.47 ms on 2 threads;
# on 256 K values 0.15 ms serial, 0.33 ms on 2 threads).
PARALLEL_SIZE = 1 << 20

_sgd_element = njit(inline="always", error_model="numpy")(rules.sgd_element)
_adam_element = njit(inline="always", error_model="numpy")(rules.adam_element)


def _serial_and_parallel(update):
    """A serial and a parallel compilation of `update`. Not cached on disk: Numba's
    cache would not notice an edit of rules.py (it checks only this file); each
    compiles in well under a second, once per flag combination a program uses."""
    return (njit(error_model="numpy")(update),
            threads.parallel(njit(error_model="numpy", parallel=True)(update)))


# The flags are constants of each compilation (closure variables), not arguments:
# with a branch on an argument inside the element loop LLVM kept the loop scalar
# (Adam ran 4x slower than NumPy's array ops); with constants the branches fold
# away and the loop vectorises. Each block's loop runs over slices from index 0,
# which tells LLVM the index is never negative (with range(start, stop) Numba's
# negative-index wraparound kept the loop scalar too).

@functools.lru_cache(maxsize=None)
def _sgd_kernels(first_step, has_momentum, nesterov, maximize, has_weight_decay):
    def update(param, grad, buffer, lr, momentum, keep, weight_decay):
        decay = weight_decay if has_weight_decay else param.dtype.type(0)
        n = param.size
        for block in prange((n + BLOCK - 1) // BLOCK):
            start, stop = block * BLOCK, min(n, (block + 1) * BLOCK)
            p, g, b = param[start:stop], grad[start:stop], buffer[start:stop]
            for i in range(p.size):
                _sgd_element(p, g, b, i, first_step, lr, momentum, keep, decay, nesterov, maximize, has_momentum)
    return _serial_and_parallel(update)


@functools.lru_cache(maxsize=None)
def _adam_kernels(lerp_small, has_weight_decay, decoupled, maximize, amsgrad):
    def update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lerp_weight, lerp_keep, beta2, one_minus_beta2,
               weight_decay, decay_factor, neg_step_size, sqrt_bias_correction2, eps):
        decay = weight_decay if has_weight_decay else param.dtype.type(0)
        n = param.size
        for block in prange((n + BLOCK - 1) // BLOCK):
            start, stop = block * BLOCK, min(n, (block + 1) * BLOCK)
            p, g, m, v = param[start:stop], grad[start:stop], exp_avg[start:stop], exp_avg_sq[start:stop]
            v_max = max_exp_avg_sq[start:stop]
            for i in range(p.size):
                _adam_element(p, g, m, v, v_max, i, lerp_weight, lerp_small, lerp_keep, beta2, one_minus_beta2, decay,
                              decay_factor, decoupled, maximize, amsgrad, neg_step_size, sqrt_bias_correction2, eps)
    return _serial_and_parallel(update)


def _cpu_kernel(pair, size):
    return pair[1] if size >= PARALLEL_SIZE and threads.get_num_threads() > 1 else pair[0]


def _flat(array):
    """A 1-D view of a contiguous array (parameters and their state always are)."""
    if not array.flags.c_contiguous:
        raise ValueError(f"fused optimizer updates need contiguous arrays, got strides {array.strides}")
    return array.reshape(-1)


def _device(array):
    """'cuda' or 'cpu': which kernels update this array (tests point the simulator at 'cuda')."""
    return backend.device_of(array)


def _cuda_kernels():
    from gradflow.kernels.cuda import optim
    return optim


def _same_kind(entries, key):
    """Consecutive runs of entries sharing key(entry): each run updates with one set of
    scalars. A parameter listed twice starts a new run (its updates must not overlap)."""
    runs, members = [], set()          # members: ids of the last run's parameters
    for entry in entries:
        k = key(entry)
        if runs and runs[-1][0] == k and id(entry[0]) not in members:
            runs[-1][1].append(entry)
        else:
            runs.append((k, [entry]))
            members = set()
        members.add(id(entry[0]))
    return runs


def sgd_step(group, params, states):
    """One SGD update of `params` (Tensors with gradients) and their `states` (dicts)."""
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
    weight_decay, nesterov, maximize = group["weight_decay"], bool(group["nesterov"]), bool(group["maximize"])
    has_momentum = momentum != 0
    entries = []
    for p, state in zip(params, states):
        param, grad = p.data, p.grad.data
        first = has_momentum and state.get("momentum_buffer") is None
        if first:
            state["momentum_buffer"] = backend.get_array_module(param).empty_like(param)
        buffer = state["momentum_buffer"] if has_momentum else grad    # never written without momentum
        entries.append((param, grad, buffer, first))
    for (device, dtype, first), run in _same_kind(entries, lambda e: (_device(e[0]), e[0].dtype, e[3])):
        t = dtype.type
        values = (t(lr), t(momentum), t(1 - dampening), t(weight_decay))
        if device == "cuda":
            scalars = (bool(first), *values, nesterov, maximize, bool(has_momentum))
            _cuda_kernels().sgd_update(*([_flat(e[k]) for e in run] for k in range(3)), scalars)
            continue
        kernels = _sgd_kernels(bool(first), bool(has_momentum), nesterov and has_momentum, maximize,
                               weight_decay != 0)
        for param, grad, buffer, _ in run:
            _cpu_kernel(kernels, param.size)(_flat(param), _flat(grad), _flat(buffer), *values)


def adam_step(group, params, states):
    """One Adam/AdamW update (see optim/adam.py for the rule and its options)."""
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    weight_decay, amsgrad = group["weight_decay"], bool(group["amsgrad"])
    decoupled, maximize = bool(group["decoupled_weight_decay"]), bool(group["maximize"])
    entries = []
    for p, state in zip(params, states):
        param = p.data
        if not state:
            xp = backend.get_array_module(param)
            state["step"] = 0.0
            state["exp_avg"] = xp.zeros_like(param)
            state["exp_avg_sq"] = xp.zeros_like(param)
            if amsgrad:
                state["max_exp_avg_sq"] = xp.zeros_like(param)
        state["step"] += 1
        max_sq = state["max_exp_avg_sq"] if amsgrad else state["exp_avg_sq"]   # read only with amsgrad
        entries.append((param, p.grad.data, state["exp_avg"], state["exp_avg_sq"], max_sq, state["step"]))
    lerp_weight = 1 - beta1
    lerp_small = bool(abs(lerp_weight) < 0.5)
    for (device, dtype, step), run in _same_kind(entries, lambda e: (_device(e[0]), e[0].dtype, e[5])):
        t = dtype.type
        lerp = (t(lerp_weight), t(1 - lerp_weight), t(beta2), t(1 - beta2), t(weight_decay), t(1 - lr * weight_decay))
        bias = (t(-(lr / (1 - beta1 ** step))), t((1 - beta2 ** step) ** 0.5), t(eps))
        if device == "cuda":
            scalars = (lerp[0], lerp_small, *lerp[1:], decoupled, maximize, amsgrad, *bias)
            _cuda_kernels().adam_update(*([_flat(e[k]) for e in run] for k in range(5)), scalars)
            continue
        kernels = _adam_kernels(lerp_small, weight_decay != 0, decoupled and weight_decay != 0, maximize, amsgrad)
        for param, grad, exp_avg, exp_avg_sq, max_sq, _ in run:
            _cpu_kernel(kernels, param.size)(_flat(param), _flat(grad), _flat(exp_avg), _flat(exp_avg_sq),
                                             _flat(max_sq), *lerp, *bias)
