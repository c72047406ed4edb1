"""binary_cross_entropy_with_logits in the stable log-sum-exp form, as PyTorch."""
import numpy as np

from gradflow import autograd, backend
from gradflow.autograd import Function
from gradflow.ops.loss import _check_reduction, _check_tensor


class BCEWithLogits(Function):
    """loss = (1 - t) x + l * softplus(-x), l = 1 + (pos_weight - 1) t, times weight.

    softplus(-x) = log(1 + exp(-x)) = max(-x, 0) + log1p(exp(-|x|)) never overflows, so the
    loss is finite for any finite logit (1e4 included, float32 too)."""

    @staticmethod
    def forward(ctx, x, t, weight, pos_weight, reduction):
        xp = backend.get_array_module(x)
        softplus_neg = xp.maximum(-x, 0) + xp.log1p(xp.exp(-abs(x)))
        if pos_weight is None:
            loss = (1 - t) * x + softplus_neg
        else:
            loss = (1 - t) * x + ((pos_weight - 1) * t + 1) * softplus_neg
        if weight is not None:
            loss = loss * weight
        ctx.save_for_backward(x, t, weight, pos_weight, softplus_neg)
        ctx.reduction = reduction
        if reduction == "none":
            return loss
        with np.errstate(invalid="ignore", divide="ignore"):
            return xp.asarray(loss.sum() if reduction == "sum" else loss.mean(), dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        x, t, weight, pos_weight, softplus_neg = ctx.saved_tensors
        xp = backend.get_array_module(x)
        if ctx.reduction == "mean":
            g = g / x.size
        if weight is not None:
            g = g * weight
        need_x, need_t = ctx.needs_input_grad[:2]
        grad_x = grad_t = None
        if need_x:
            sig = (0.5 * xp.tanh(0.5 * x) + 0.5).astype(x.dtype, copy=False)   # stable sigmoid
            if pos_weight is None:
                grad_x = (sig - t) * g
            else:   # d/dx = l * sigmoid(x) - pos_weight * t
                grad_x = (((pos_weight - 1) * t + 1) * sig - pos_weight * t) * g
        if need_t:   # d/dt = -x + (pos_weight - 1) softplus(-x)
            grad_t = (-x if pos_weight is None else (pos_weight - 1) * softplus_neg - x) * g
        return grad_x, grad_t, None, None, None


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction="mean"):
    """PyTorch's F.binary_cross_entropy_with_logits. weight and pos_weight broadcast against the
    input as in PyTorch (a (C,) pos_weight applies along the last dim; use (C, 1, 1) for NCHW)."""
    op = "binary_cross_entropy_with_logits"
    _check_tensor(input, "input", op)
    _check_tensor(target, "target", op)
    _check_reduction(reduction, op)
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be a floating point tensor of logits, got dtype {input.dtype}")
    if target.shape != input.shape:
        raise ValueError(f"{op}: target of shape {target.shape} must have the input's shape {input.shape}")
    if target.dtype.kind != "f":
        raise TypeError(f"{op}: target must be a floating point tensor of probabilities, got dtype {target.dtype}")
    extras = []
    for name, value in (("weight", weight), ("pos_weight", pos_weight)):
        if value is None:
            extras.append(None)
            continue
        _check_tensor(value, name, op)
        try:
            fits = np.broadcast_shapes(value.shape, input.shape) == input.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{op}: {name} of shape {value.shape} does not broadcast to the input's shape {input.shape}")
        if value.requires_grad and autograd.is_grad_enabled():
            raise RuntimeError(f"{op}: {name} is not differentiable (as in PyTorch); pass {name}.detach()")
        if value.device != input.device:
            raise RuntimeError(f"{op}: expected {name} on {input.device}, like the input, but it is on {value.device}")
        extras.append(value.data.astype(input.dtype, copy=False))
    return BCEWithLogits.apply(input, target.to(input.dtype), *extras, reduction)
