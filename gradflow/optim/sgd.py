"""SGD with momentum, dampening, Nesterov momentum, weight decay and maximize (PyTorch's rule)."""
from gradflow.optim.optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent, exactly torch.optim.SGD's update:

        g = ±grad + weight_decay * p
        buf = g (first step) or momentum * buf + (1 - dampening) * g
        g = g + momentum * buf (nesterov) or buf
        p -= lr * g
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, group, param, grad, state):
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
