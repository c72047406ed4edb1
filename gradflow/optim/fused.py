"""Fused optimizer updates: every array op of an update in one pass over the data.

The rules live in optim/rules.py. On the CPU each parameter is one call of a
numba.njit kernel, split into fixed blocks of BLOCK elements run in parallel
(prange) when the parameter spans several: each element's arithmetic is the same
whatever the thread count, so results are bit-identical at any thread count. On
CUDA, kernels/cuda/optim.py updates up to 8 parameters per launch.

Scalars are cast to the parameter's dtype here, once per step, as NumPy casts a
Python float in an array op (float32 parameters update in float32).
"""
from numba import njit, prange

from gradflow import backend
from gradflow.optim import rules

BLOCK = 1 << 14     # elements per parallel block; parameters up to this size run serially

_sgd_element = njit(inline="always", error_model="numpy")(rules.sgd_element)
_adam_element = njit(inline="always", error_model="numpy")(rules.adam_element)


def _sgd_blocks(param, grad, buffer, first_step, lr, momentum, keep, weight_decay, nesterov, maximize, has_momentum):
    n = param.size
    for block in prange((n + BLOCK - 1) // BLOCK):
        for i in range(block * BLOCK, min(n, (block + 1) * BLOCK)):
            _sgd_element(param, grad, buffer, i, first_step, lr, momentum, keep, weight_decay, nesterov, maximize,
                         has_momentum)


def _adam_blocks(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lerp_weight, lerp_small, lerp_keep, beta2,
                 one_minus_beta2, weight_decay, decay_factor, decoupled, maximize, amsgrad, neg_step_size,
                 sqrt_bias_correction2, eps):
    n = param.size
    for block in prange((n + BLOCK - 1) // BLOCK):
        for i in range(block * BLOCK, min(n, (block + 1) * BLOCK)):
            _adam_element(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, i, lerp_weight, lerp_small, lerp_keep,
                          beta2, one_minus_beta2, weight_decay, decay_factor, decoupled, maximize, amsgrad,
                          neg_step_size, sqrt_bias_correction2, eps)


# A serial and a parallel compilation of each: a thread pool wake-up costs more than a
# small update. Not cached on disk: Numba's cache would not notice an edit of rules.py
# (it checks only this file), and compiling all four takes under a second.
_sgd_cpu = (njit(error_model="numpy")(_sgd_blocks), njit(error_model="numpy", parallel=True)(_sgd_blocks))
_adam_cpu = (njit(error_model="numpy")(_adam_blocks), njit(error_model="numpy", parallel=True)(_adam_blocks))


def _cpu_kernel(pair, size):
    return pair[1] if size > BLOCK else pair[0]


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
    runs = []
    for entry in entries:
        k = key(entry)
        if runs and runs[-1][0] == k and all(entry[0] is not e[0] for e in runs[-1][1]):
            runs[-1][1].append(entry)
        else:
            runs.append((k, [entry]))
    return runs


def sgd_step(group, params, states):
    """One SGD update of `params` (Tensors with gradients) and their `states` (dicts)."""
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
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
        scalars = (bool(first), t(lr), t(momentum), t(1 - dampening), t(group["weight_decay"]),
                   bool(group["nesterov"]), bool(group["maximize"]), bool(has_momentum))
        if device == "cuda":
            _cuda_kernels().sgd_update(*([_flat(e[k]) for e in run] for k in range(3)), scalars)
        else:
            for param, grad, buffer, _ in run:
                _cpu_kernel(_sgd_cpu, param.size)(_flat(param), _flat(grad), _flat(buffer), *scalars)


def adam_step(group, params, states):
    """One Adam/AdamW update (see optim/adam.py for the rule and its options)."""
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]
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
    for (device, dtype, step), run in _same_kind(entries, lambda e: (_device(e[0]), e[0].dtype, e[5])):
        t = dtype.type
        scalars = (t(lerp_weight), bool(abs(lerp_weight) < 0.5), t(1 - lerp_weight), t(beta2), t(1 - beta2),
                   t(weight_decay), t(1 - lr * weight_decay), bool(group["decoupled_weight_decay"]),
                   bool(group["maximize"]), bool(amsgrad), t(-(lr / (1 - beta1 ** step))),
                   t((1 - beta2 ** step) ** 0.5), t(eps))
        if device == "cuda":
            _cuda_kernels().adam_update(*([_flat(e[k]) for e in run] for k in range(5)), scalars)
        else:
            for param, grad, exp_avg, exp_avg_sq, max_sq, _ in run:
                _cpu_kernel(_adam_cpu, param.size)(_flat(param), _flat(grad), _flat(exp_avg), _flat(exp_avg_sq),
                                                   _flat(max_sq), *scalars)

