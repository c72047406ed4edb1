"""The per-element update rules of SGD and Adam/AdamW, written once as plain Python.

optim/fused.py compiles them with numba.njit for the CPU and kernels/cuda/optim.py
with cuda.jit(device=True) for the GPU, so both devices run the same arithmetic in the
same order: exactly the order of PyTorch's single-tensor updates (and of gradflow's
earlier array-op updates), so float64 results agree bit for bit on the CPU. Every
scalar comes in the parameter's dtype (the host prepares them), so float32 arithmetic
stays float32 as NumPy's would.

Each function updates element ``i`` of its arrays in place.
"""
import math


def sgd_element(param, grad, momentum_buffer, i, first_step, lr, momentum, keep, weight_decay, nesterov,
                maximize, has_momentum):
    """g = ±grad + weight_decay * p;  buf = g on the first step, else momentum * buf + (1 - dampening) * g;
    g = g + momentum * buf (nesterov) or buf;  p -= lr * g.   keep = 1 - dampening."""
    g = grad[i]
    if weight_decay != 0:
        d = param[i] * weight_decay
        d = d - g if maximize else d + g
    else:
        d = -g if maximize else g
    if has_momentum:
        if first_step:
            buf = d
        else:
            buf = momentum_buffer[i] * momentum + d * keep
        momentum_buffer[i] = buf
        d = d + buf * momentum if nesterov else buf
    param[i] = param[i] - d * lr


def adam_element(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, i, lerp_weight, lerp_small, lerp_keep,
                 beta2, one_minus_beta2, weight_decay, decay_factor, decoupled, maximize, amsgrad,
                 neg_step_size, sqrt_bias_correction2, eps):
    """Adam's step for one element (see optim/adam.py); lerp_keep = 1 - lerp_weight,
    decay_factor = 1 - lr * weight_decay, neg_step_size = -lr / (1 - beta1^t)."""
    g = grad[i]
    if maximize:
        g = -g
    p = param[i]
    if weight_decay != 0:
        if decoupled:
            p = p * decay_factor
        else:
            g = p * weight_decay + g
    m = exp_avg[i]
    # exp_avg.lerp_(grad, 1 - beta1): torch's two formulas for small and large weights
    if lerp_small:
        m = m + (g - m) * lerp_weight
    else:
        m = g - (g - m) * lerp_keep
    v = exp_avg_sq[i] * beta2 + (g * one_minus_beta2) * g
    exp_avg[i] = m
    exp_avg_sq[i] = v
    if amsgrad:
        v_max = max_exp_avg_sq[i]
        if v > v_max or v != v:        # numpy.maximum: a NaN on either side wins
            v_max = v
        max_exp_avg_sq[i] = v_max
        v = v_max
    denom = math.sqrt(v) / sqrt_bias_correction2 + eps
    param[i] = p + (m * neg_step_size) / denom
