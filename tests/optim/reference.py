"""The array-op optimizer updates gradflow used before its fused kernels, kept verbatim
as the reference the fused kernels must equal bit for bit (one NumPy op at a time, in
PyTorch's single-tensor order)."""
from gradflow import backend


def sgd_update(group, param, grad, state):
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
    weight_decay, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
    # `direction` may alias the caller's grad until `owned` says it is our own temporary.
    if weight_decay != 0:
        direction = param * weight_decay
        if maximize:
            direction -= grad
        else:
            direction += grad
        owned = True
    else:
        direction, owned = (-grad, True) if maximize else (grad, False)
    if momentum != 0:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = direction.copy()
        else:
            buf *= momentum
            buf += direction if dampening == 0 else direction * (1 - dampening)
        if nesterov:
            if owned:
                direction += buf * momentum
            else:
                direction, owned = direction + buf * momentum, True
        else:
            direction, owned = buf, False
    if owned:
        direction *= -lr
        param += direction
    else:
        param -= direction * lr


def adam_update(group, param, grad, state):
    xp = backend.get_array_module(param)
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]
    if not state:
        state["step"] = 0.0
        state["exp_avg"] = xp.zeros_like(param)
        state["exp_avg_sq"] = xp.zeros_like(param)
        if amsgrad:
            state["max_exp_avg_sq"] = xp.zeros_like(param)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    state["step"] += 1
    step = state["step"]

    if group["maximize"]:
        grad = -grad
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            param *= 1 - lr * weight_decay
        else:
            decayed = param * weight_decay
            decayed += grad
            grad = decayed

    # exp_avg.lerp_(grad, 1 - beta1), with torch's two formulas for small and large weights
    scratch = xp.subtract(grad, exp_avg)
    weight = 1 - beta1
    if abs(weight) < 0.5:
        scratch *= weight
        exp_avg += scratch
    else:
        scratch *= 1 - weight
        xp.subtract(grad, scratch, out=exp_avg)
    # exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    xp.multiply(grad, 1 - beta2, out=scratch)
    scratch *= grad
    exp_avg_sq *= beta2
    exp_avg_sq += scratch

    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = lr / bias_correction1
    if amsgrad:
        xp.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
        denom = xp.sqrt(state["max_exp_avg_sq"])
    else:
        denom = xp.sqrt(exp_avg_sq)
    denom /= bias_correction2 ** 0.5
    denom += eps
    # param.addcdiv_(exp_avg, denom, value=-step_size)
    xp.multiply(exp_avg, -step_size, out=scratch)
    scratch /= denom
    param += scratch
