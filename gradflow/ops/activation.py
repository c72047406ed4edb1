"""Small functional helpers built from core ops: relu, sigmoid, tanh, linear, pad."""
import numpy as np

from gradflow import backend
from gradflow.autograd import Function


def relu(x, inplace=False):
    return x.relu()


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def linear(x, weight, bias=None):
    """y = x W^T + b, with weight (out_features, in_features) as PyTorch."""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features but weight {weight.shape} expects {weight.shape[1]}")
    out = x @ weight.transpose(0, 1)
    return out if bias is None else out + bias


class ConstantPad(Function):
    @staticmethod
    def forward(ctx, a, widths, value):
        ctx.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, a.shape))
        return backend.get_array_module(a).pad(a, widths, constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.slices], None, None


def _source_index(n, lo, hi, mode):
    """For each padded position along one dim, the input position it copies."""
    j = np.arange(-lo, n + hi)
    if mode == "reflect":
        period = 2 * (n - 1)
        j = np.abs(j) % period if period else np.zeros_like(j)
        return np.where(j >= n, period - j, j)
    if mode == "replicate":
        return np.clip(j, 0, n - 1)
    return j % n   # circular


class IndexPad(Function):
    """reflect / replicate / circular padding: a gather per padded dim; its backward
    sums every padded position's gradient into the input position it copied."""

    @staticmethod
    def forward(ctx, a, widths, mode):
        xp = backend.get_array_module(a)
        ctx.maps = []
        for axis, (lo, hi) in enumerate(widths):
            if lo or hi:
                index = _source_index(a.shape[axis], lo, hi, mode)
                ctx.maps.append((axis, index, a.shape[axis]))
                a = xp.take(a, xp.asarray(index), axis=axis)
        return a

    @staticmethod
    def backward(ctx, g):
        xp = backend.get_array_module(g)
        for axis, index, n in reversed(ctx.maps):
            scatter = np.zeros((len(index), n), dtype=g.dtype)   # one-hot: padded -> source
            scatter[np.arange(len(index)), index] = 1
            g = xp.moveaxis(xp.tensordot(g, xp.asarray(scatter), axes=([axis], [0])), -1, axis)
        return g, None, None


_MODES = ("constant", "reflect", "replicate", "circular")


def pad(x, pad, mode="constant", value=0.0):
    """PyTorch's F.pad: `pad` lists (left, right) pairs from the last dim back."""
    if mode not in _MODES:
        raise ValueError(f"pad: mode must be one of {_MODES}, got {mode!r}")
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected an even number of values for at most {x.ndim} dims, got {pad}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding {pad} is not supported")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    if mode == "constant":
        return ConstantPad.apply(x, tuple(widths), value)
    for axis, (lo, hi) in enumerate(widths):
        n = x.shape[axis]
        limit = n - 1 if mode == "reflect" else (n if mode == "circular" else None)
        if (lo or hi) and (n == 0 or (limit is not None and max(lo, hi) > limit)):
            raise ValueError(f"pad: {mode} padding ({lo}, {hi}) must be at most {limit} for dim {axis} "
                             f"of size {n} (input shape {x.shape})")
    return IndexPad.apply(x, tuple(widths), mode)
