"""Reductions: sum, mean, max, min (with dim/keepdim) and argmax/argmin."""
import builtins
from collections import namedtuple

import numpy as np

from gradflow import backend
from gradflow.autograd import Function
from gradflow.tensor import Tensor

values_indices = namedtuple("values_indices", ["values", "indices"])


def normalize_dim(dim, ndim, op):
    """One dim -> its non-negative axis. A 0-dim tensor has one addressable dim, as in
    PyTorch: 0 and -1 are accepted (and name the scalar itself), anything else is out of range."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int or a sequence of ints, got {dim!r}")
    limit = builtins.max(ndim, 1)
    if not -limit <= dim < limit:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions "
                         f"(expected to be in range of [{-limit}, {limit - 1}])")
    return int(dim) % limit


def normalize_dims(dim, ndim, op):
    """dim (None, int or sequence) -> sorted tuple of the axes to reduce; () for a 0-dim
    tensor, whose dims 0 and -1 name the scalar itself (it has no axis to reduce)."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = [normalize_dim(d, ndim, op) for d in dims]
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dim} repeats a dimension")
    return tuple(sorted(out)) if ndim else ()


def _expand_back(g, shape, axes, keepdim):
    """Reshape a reduced gradient so it broadcasts against the input."""
    if not keepdim and shape:
        kept = [1 if i in axes else n for i, n in enumerate(shape)]
        g = g.reshape(kept)
    return g


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        return a.sum(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        xp = backend.get_array_module(g)
        g = _expand_back(g, ctx.shape, ctx.axes, ctx.keepdim)
        return xp.broadcast_to(g, ctx.shape).copy(), None, None


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, axes, keepdim
        count = 1
        for ax in axes:
            count *= a.shape[ax]
        ctx.count = count
        return a.mean(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        xp = backend.get_array_module(g)
        g = _expand_back(g, ctx.shape, ctx.axes, ctx.keepdim) / ctx.count
        return xp.broadcast_to(g, ctx.shape).astype(g.dtype), None, None


class AMax(Function):
    """max/min over all of `axes`; the gradient is shared evenly between ties (as PyTorch)."""

    @staticmethod
    def forward(ctx, a, axes, keepdim, is_max):
        out = a.max(axis=axes, keepdims=True) if is_max else a.min(axis=axes, keepdims=True)
        ctx.save_for_backward(a, out)
        ctx.axes, ctx.keepdim = axes, keepdim
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    @staticmethod
    def backward(ctx, g):
        a, out = ctx.saved_tensors
        g = _expand_back(g, a.shape, ctx.axes, ctx.keepdim)
        hit = a == out
        return g * hit / hit.sum(axis=ctx.axes, keepdims=True), None, None, None


class MaxDim(Function):
    """max/min along one dim, returning (values, indices); the gradient goes to the index."""

    @staticmethod
    def forward(ctx, a, dim, keepdim, is_max):
        xp = backend.get_array_module(a)
        idx = (xp.argmax if is_max else xp.argmin)(a, axis=dim)
        idx_k = xp.expand_dims(idx, dim)
        values = xp.take_along_axis(a, idx_k, axis=dim)
        ctx.save_for_backward(idx_k)
        ctx.shape, ctx.dim, ctx.keepdim = a.shape, dim, keepdim
        if keepdim:
            return values, idx_k.astype(xp.int64)
        return values.squeeze(dim), idx.astype(xp.int64)

    @staticmethod
    def backward(ctx, g, _):
        (idx_k,) = ctx.saved_tensors
        xp = backend.get_array_module(g)
        if not ctx.keepdim:
            g = xp.expand_dims(g, ctx.dim)
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        xp.put_along_axis(out, idx_k, g, axis=ctx.dim)
        return out, None, None, None


def sum(x, dim=None, keepdim=False):
    return Sum.apply(x, normalize_dims(dim, x.ndim, "sum"), keepdim)


def mean(x, dim=None, keepdim=False):
    if x.dtype.kind != "f":
        raise TypeError(f"mean: needs a floating point tensor, got dtype {x.dtype}")
    return Mean.apply(x, normalize_dims(dim, x.ndim, "mean"), keepdim)


def _extreme(x, dim, keepdim, is_max):
    name = "max" if is_max else "min"
    if x.numel() == 0:
        raise RuntimeError(f"{name}: the tensor is empty")
    if dim is None:
        return AMax.apply(x, tuple(range(x.ndim)), False, is_max)
    axis = normalize_dim(dim, x.ndim, name)
    if x.ndim == 0:
        return values_indices(x.clone(), Tensor(backend.get_array_module(x.data).zeros((), dtype="int64")))
    return values_indices(*MaxDim.apply(x, axis, keepdim, is_max))


def max(x, dim=None, keepdim=False):
    return _extreme(x, dim, keepdim, True)


def min(x, dim=None, keepdim=False):
    return _extreme(x, dim, keepdim, False)


def _arg(x, dim, keepdim, is_max):
    xp = backend.get_array_module(x.data)
    fn = xp.argmax if is_max else xp.argmin
    if dim is None:
        out = fn(x.data)
        if keepdim:
            out = out.reshape((1,) * x.ndim)
        return Tensor(xp.asarray(out, dtype=xp.int64))
    axis = normalize_dim(dim, x.ndim, "argmax" if is_max else "argmin")
    return Tensor(fn(x.data, axis=axis, keepdims=keepdim).astype(xp.int64))


def argmax(x, dim=None, keepdim=False):
    return _arg(x, dim, keepdim, True)


def argmin(x, dim=None, keepdim=False):
    return _arg(x, dim, keepdim, False)
