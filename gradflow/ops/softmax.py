"""softmax and log_softmax along one dim, numerically stable (the max is subtracted first)."""
import warnings

import numpy as np

from gradflow import backend
from gradflow.autograd import Function
from gradflow.ops.reduce import normalize_dim


def log_softmax_array(x, axis):
    """(x - m) - log(sum(exp(x - m))) with m the max along `axis`: no exp overflows, and the
    large m cancels before rounding (x - logsumexp(x) would round at the scale of m)."""
    xp = backend.get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)   # (an all -inf slice gives nan, as PyTorch)
    shifted -= xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        xp = backend.get_array_module(x)
        out = xp.exp(x - x.max(axis=axis, keepdims=True))
        out /= out.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        # d softmax: J = diag(s) - s s^T, so J^T g = s * (g - <g, s>)
        return out * (g - (g * out).sum(axis=ctx.axis, keepdims=True)), None


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        out = log_softmax_array(x, axis)
        ctx.save_for_backward(out)
        ctx.axis = axis
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        xp = backend.get_array_module(out)
        return g - xp.exp(out) * g.sum(axis=ctx.axis, keepdims=True), None


def _implicit_dim(ndim, name):
    # PyTorch's legacy rule for dim=None (deprecated there too, with the same warning)
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                  "Change the call to include dim=X as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def _apply(function, x, dim, dtype, name):
    if dim is None:
        dim = _implicit_dim(x.ndim, name)
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{name}: dim must be an int, got {dim!r}")
    if dtype is not None:
        x = x.to(np.dtype(dtype))
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: needs a floating point tensor, got dtype {x.dtype} "
                        "(pass dtype=gf.float32 to convert)")
    axis = normalize_dim(int(dim), x.ndim, name)
    if x.numel() == 0:   # nothing to normalise (and max() of an empty axis would raise)
        return x.clone()
    if x.ndim == 0:   # a scalar is a softmax over one element
        return function.apply(x.reshape(1), 0).reshape(())
    return function.apply(x, axis)


def softmax(x, dim=None, dtype=None):
    """exp(x) / sum(exp(x)) along `dim` (negative dims count from the end)."""
    return _apply(Softmax, x, dim, dtype, "softmax")


def log_softmax(x, dim=None, dtype=None):
    """x - logsumexp(x) along `dim`; stable where log(softmax(x)) would underflow to -inf."""
    return _apply(LogSoftmax, x, dim, dtype, "log_softmax")
