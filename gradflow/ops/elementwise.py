"""Elementwise arithmetic, math functions, matmul and comparisons, with broadcasting."""
import numpy as np

from gradflow import backend
from gradflow.autograd import Function
from gradflow.kernels.cpu import elementwise as cpu_elementwise
from gradflow.tensor import Tensor


def unbroadcast(grad, shape):
    """Sum a broadcast gradient back to the shape of the input it came from."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _shape(x):
    return getattr(x, "shape", ())


def _operand(x):
    """Tensors and Python numbers pass through; arrays become constant Tensors."""
    if isinstance(x, (Tensor, int, float, bool)):
        return x
    if isinstance(x, np.ndarray) or backend.is_cuda_array(x) or isinstance(x, np.generic):
        return Tensor(np.asarray(x) if isinstance(x, np.generic) else x)
    raise TypeError(f"unsupported operand type {type(x).__name__}; expected a Tensor or a number")


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = _shape(a), _shape(b)
        return cpu_elementwise.add(a, b)      # a + b (in parallel for large CPU arrays)

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, sa) if na else None), (unbroadcast(g, sb) if nb else None)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = _shape(a), _shape(b)
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, sa) if na else None), (unbroadcast(-g, sb) if nb else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g * b, _shape(a)) if na else None,
                unbroadcast(g * a, _shape(b)) if nb else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        ga = unbroadcast(g / b, _shape(a)) if na else None
        gb = unbroadcast(-g * a / (b * b), _shape(b)) if nb else None
        return ga, gb


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if na:
            ga = unbroadcast(g * b * a ** (b - 1), _shape(a))
        if nb:
            xp = backend.get_array_module(out)
            # d(a**b)/db = a**b * log(a); PyTorch defines it as 0 where a == 0
            log_a = xp.log(xp.where(a == 0, 1, a)) if hasattr(a, "shape") else np.log(a if a != 0 else 1)
            gb = unbroadcast(g * out * log_a, _shape(b))
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both arguments need at least 1 dimension")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied "
                             f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = g2[..., None, :] if b.ndim > 1 else g2[..., None]
        if b.ndim == 1:
            g2 = g2[..., None]
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if na:
            ga = unbroadcast(g2 @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape)
        if nb:
            gb = unbroadcast(a2.swapaxes(-1, -2) @ g2, b2.shape).reshape(b.shape)
        return ga, gb


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = backend.get_array_module(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.get_array_module(a).log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g / a


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = backend.get_array_module(a).sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g / (2 * out)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * backend.get_array_module(a).sign(a)


class Relu(Function):
    @staticmethod
    def forward(ctx, a):
        out = cpu_elementwise.relu(a) if isinstance(a, np.ndarray) else backend.get_array_module(a).maximum(a, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return cpu_elementwise.relu_backward(g, out) if isinstance(g, np.ndarray) else g * (out > 0)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        xp = backend.get_array_module(a)
        # tanh form: stable for large |a| in both directions
        out = 0.5 * xp.tanh(0.5 * a) + 0.5
        out = out.astype(a.dtype, copy=False)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out * (1 - out)


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        out = backend.get_array_module(a).tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (1 - out * out)


class Clamp(Function):
    """min(max(a, lo), hi); lo and hi are each None, a number or an array (broadcasting).

    Gradients follow PyTorch's convention at ties and crossed bounds: `a` gets it where
    lo <= a <= hi, `lo` where a < lo (and lo < hi), `hi` where a > hi or hi < lo (then
    every output is hi)."""

    @staticmethod
    def forward(ctx, a, lo, hi):
        xp = backend.get_array_module(a)
        ctx.save_for_backward(a, lo, hi)
        out = a if lo is None else xp.maximum(a, lo)
        out = out if hi is None else xp.minimum(out, hi)
        if not any(hasattr(b, "dtype") for b in (lo, hi)):   # number bounds keep a's dtype
            out = out.astype(a.dtype, copy=False)
        ctx.out_shape = out.shape
        return out

    @staticmethod
    def backward(ctx, g):
        a, lo, hi = ctx.saved_tensors
        xp = backend.get_array_module(g)
        na, nlo, nhi = ctx.needs_input_grad
        if lo is not None and hi is not None:
            takes_a, takes_lo, takes_hi = (a >= lo) & (a <= hi), (a < lo) & (lo < hi), (a > hi) | (hi < lo)
        elif lo is not None:
            takes_a, takes_lo, takes_hi = a >= lo, a < lo, None
        else:
            takes_a, takes_lo, takes_hi = a <= hi, None, a > hi

        def share(takes, source):
            return unbroadcast(xp.where(xp.broadcast_to(takes, ctx.out_shape), g, 0).astype(g.dtype, copy=False),
                               _shape(source))
        return (share(takes_a, a) if na else None,
                share(takes_lo, lo) if nlo else None,
                share(takes_hi, hi) if nhi else None)


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        ctx.shapes = _shape(a), _shape(b)
        return backend.get_array_module(cond).where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        _, na, nb = ctx.needs_input_grad
        sa, sb = ctx.shapes
        return (None,
                unbroadcast(g * cond, sa) if na else None,
                unbroadcast(g * ~cond, sb) if nb else None)


class Clone(Function):
    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return g


class Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype), None


class ToDevice(Function):
    @staticmethod
    def forward(ctx, a, device):
        ctx.source = backend.device_of(a)
        return backend.to_device(a, device)

    @staticmethod
    def backward(ctx, g):
        return backend.to_device(g, ctx.source), None


def _binary(function, a, b):
    a, b = _operand(a), _operand(b)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError("at least one operand must be a Tensor")
    return function.apply(a, b)


def add(a, b):
    return _binary(Add, a, b)


def sub(a, b):
    return _binary(Sub, a, b)


def mul(a, b):
    return _binary(Mul, a, b)


def div(a, b):
    return _binary(Div, a, b)


def pow(a, b):
    return _binary(Pow, a, b)


def matmul(a, b):
    a, b = _operand(a), _operand(b)
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("matmul needs two tensors")
    return MatMul.apply(a, b)


def clamp(a, min=None, max=None):
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    bounds = [None if b is None else _operand(b) for b in (min, max)]
    shapes = [a.shape] + [b.shape for b in bounds if isinstance(b, Tensor)]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"clamp: the input and its bounds cannot broadcast together: shapes {shapes}") from None
    return Clamp.apply(a, *bounds)


def where(condition, a, b):
    condition = _operand(condition)
    if not isinstance(condition, Tensor) or condition.dtype != np.bool_:
        raise TypeError("where: condition must be a bool tensor")
    return Where.apply(condition, _operand(a), _operand(b))


def compare(name, a, b):
    """Comparison without gradient: returns a bool tensor."""
    a, b = _operand(a), _operand(b)
    ra = a.data if isinstance(a, Tensor) else a
    rb = b.data if isinstance(b, Tensor) else b
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a.device != b.device:
        raise RuntimeError(f"comparison: expected both tensors on the same device, found {a.device} and {b.device}")
    xp = backend.get_array_module(ra if hasattr(ra, "shape") else rb)
    return Tensor(getattr(xp, name)(ra, rb))
