"""Shape ops: reshape, permute, transpose, flatten, squeeze, unsqueeze, expand, indexing, cat, stack."""
import numpy as np

from gradflow import backend
from gradflow.autograd import Function
from gradflow.ops.reduce import normalize_dim, normalize_dims
from gradflow.tensor import Tensor, raw_index


def _dims_arg(dims):
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        return tuple(dims[0])
    return tuple(dims)


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


class Permute(Function):
    @staticmethod
    def forward(ctx, a, dims):
        ctx.inverse = tuple(np.argsort(dims))
        return a.transpose(dims)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(ctx.inverse), None


class Expand(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return backend.get_array_module(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        from gradflow.ops.elementwise import unbroadcast
        return unbroadcast(g, ctx.shape), None


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, g):
        xp = backend.get_array_module(g)
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        if _is_basic(ctx.index):
            out[ctx.index] = g
        else:   # advanced indices may repeat: accumulate
            xp.add.at(out, ctx.index, g)
        return out, None


class Cat(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        ctx.sizes = [a.shape[dim] for a in arrays]
        return backend.get_array_module(arrays[0]).concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp = backend.get_array_module(g)
        splits = np.cumsum(ctx.sizes)[:-1].tolist()
        return (None, *xp.split(g, splits, axis=ctx.dim))


class Stack(Function):
    @staticmethod
    def forward(ctx, dim, *arrays):
        ctx.dim = dim
        return backend.get_array_module(arrays[0]).stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp = backend.get_array_module(g)
        return (None, *[xp.take(g, i, axis=ctx.dim) for i in range(g.shape[ctx.dim])])


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


def reshape(x, *shape):
    shape = _dims_arg(shape)
    known = 1
    unknown = 0
    for n in shape:
        if n == -1:
            unknown += 1
        elif not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"reshape: invalid size {n!r} in shape {shape}")
        else:
            known *= n
    if unknown > 1 or (unknown == 0 and known != x.numel()) or (unknown and (known == 0 or x.numel() % known)):
        raise ValueError(f"reshape: shape {shape} is invalid for a tensor of shape {x.shape} ({x.numel()} elements)")
    return Reshape.apply(x, shape)


def permute(x, *dims):
    dims = _dims_arg(dims)
    if len(dims) != x.ndim:
        raise ValueError(f"permute: got {len(dims)} dims for a tensor with {x.ndim} dimensions")
    order = tuple(normalize_dim(d, x.ndim, "permute") for d in dims)
    if len(set(order)) != len(order):
        raise ValueError(f"permute: dims {dims} repeat a dimension")
    return Permute.apply(x, order)


def transpose(x, dim0, dim1):
    d0, d1 = (normalize_dim(d, x.ndim, "transpose") for d in (dim0, dim1))
    order = list(range(x.ndim))
    if x.ndim == 0:   # dims 0 and -1 name the scalar itself: nothing to swap
        return Permute.apply(x, ())
    order[d0], order[d1] = order[d1], order[d0]
    return Permute.apply(x, tuple(order))


def flatten(x, start_dim=0, end_dim=-1):
    s = normalize_dim(start_dim, x.ndim, "flatten")
    e = normalize_dim(end_dim, x.ndim, "flatten")
    if x.ndim == 0:
        return reshape(x, 1)
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = x.shape
    return reshape(x, shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:])


def squeeze(x, dim=None):
    if dim is None:
        axes = [i for i, n in enumerate(x.shape) if n == 1]
    else:
        axes = [d for d in normalize_dims(dim, x.ndim, "squeeze") if x.ndim and x.shape[d] == 1]
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def unsqueeze(x, dim):
    d = normalize_dim(dim, x.ndim + 1, "unsqueeze")
    shape = list(x.shape)
    shape.insert(d, 1)
    return reshape(x, tuple(shape))


def expand(x, *shape):
    shape = _dims_arg(shape)
    if len(shape) < x.ndim:
        raise ValueError(f"expand: target shape {shape} has fewer dims than the tensor's {x.shape}")
    lead = len(shape) - x.ndim
    full = []
    for i, n in enumerate(shape):
        own = x.shape[i - lead] if i >= lead else 1
        if n == -1:
            n = own
        if own != 1 and own != n:
            raise ValueError(f"expand: cannot expand shape {x.shape} to {shape}")
        full.append(n)
    return Expand.apply(x, tuple(full))


def getitem(x, index):
    index = raw_index(index)
    if isinstance(index, list):
        index = np.asarray(index)
    if isinstance(index, tuple) and any(hasattr(i, "shape") for i in index) and \
            any(isinstance(i, (int, np.integer)) for i in index):
        # PyTorch applies integer indices as selects before advanced indexing; NumPy
        # would treat them as advanced too and move the broadcast dims elsewhere.
        selects = tuple(slice(None) if hasattr(i, "shape") else i for i in index)
        rest = tuple(i if hasattr(i, "shape") or i is Ellipsis else slice(None)
                     for i in index if not isinstance(i, (int, np.integer)))
        return GetItem.apply(GetItem.apply(x, selects), rest)
    return GetItem.apply(x, index)


def _check_sequence(tensors, op):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected tensors, got {type(t).__name__}")
    return tensors


def cat(tensors, dim=0):
    tensors = _check_sequence(tensors, "cat")
    ndim = tensors[0].ndim
    for i, t in enumerate(tensors):
        if t.ndim == 0:
            raise ValueError(f"cat: zero-dimensional tensor (at position {i}) cannot be concatenated; "
                             "use stack, or unsqueeze it first")
    d = normalize_dim(dim, ndim, "cat")
    for t in tensors:
        if t.ndim != ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, tensors[0].shape)) if i != d):
            raise ValueError(f"cat: sizes must match except in dim {d}; got {tensors[0].shape} and {t.shape}")
    return Cat.apply(d, *tensors)


def stack(tensors, dim=0):
    tensors = _check_sequence(tensors, "stack")
    for t in tensors:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: all tensors must have the same shape; got {tensors[0].shape} and {t.shape}")
    d = normalize_dim(dim, tensors[0].ndim + 1, "stack")
    return Stack.apply(d, *tensors)
