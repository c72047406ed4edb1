"""Class-index losses: cross_entropy (fused) and nll_loss.

PyTorch's semantics throughout (reductions, weights, ignore_index, label smoothing). Class
scores sit on dim 1 of an (N, C, d1, ...) input, or dim 0 of a single (C,) sample; the Functions
see them as (N, C, S) with S the flattened spatial size, and class-index targets as (N, S).

cross_entropy on large CPU inputs runs its per-pixel passes (max, exp, sums over classes,
the target's score; the gradient) in gradflow.kernels.cpu.cross_entropy, in pixel blocks,
with a vectorised exp (gradflow.kernels.cpu.fast_exp). The rest is numpy/cupy array code: on an H100 a
fused Numba CUDA forward/backward pair beat CuPy's ops forward (0.59 vs 0.78 ms) but lost
forward+backward (1.63 vs 1.23 ms) to Numba's per-launch argument overhead, at (8, 21, 64, 64).
"""
import numpy as np

from gradflow import autograd, backend, transfer
from gradflow.autograd import Function
from gradflow.kernels.cpu import cross_entropy as cpu_cross_entropy
from gradflow.ops.softmax import log_softmax_array
from gradflow.tensor import Tensor

REDUCTIONS = ("none", "mean", "sum")


# ---- cross-entropy with class-index targets: one fused Function ---------------------------

class CrossEntropy(Function):
    """log-softmax + pick the target class (+ label smoothing) + reduction, in one pass set.

    Per position i with target t (w = class weights, all 1 without `weight`, W = sum of w,
    lse = log sum_k exp(x_k), computed as (lse - max) to keep float32 accurate at |x| ~ 1e4):
        loss_i = (1 - eps) * w_t * (lse_i - x_t) + (eps / C) * (W * lse_i - sum_k w_k x_k)
    and 0 where t == ignore_index; "mean" divides the sum by the sum of w_t over the positions
    not ignored (PyTorch's weighted mean; with label smoothing too). The gradient is
    softmax - one-hot, scaled: dloss_i/dx_j = p_j * (a_i + b_i W) - a_i [j == t] - b_i w_j
    with a_i = g_i (1 - eps) w_t / D, b_i = g_i (eps / C) / D.
    """

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction, smoothing):
        xp = backend.get_array_module(x)
        x3 = x.reshape(_as_ncs(x))
        n, n_classes, spatial = x3.shape
        t2 = target.reshape(n, spatial)
        valid = t2 != ignore_index
        safe_target = xp.where(valid, t2, 0)
        flat = None        # the flat target positions: only the array ops need them
        if cpu_cross_entropy.worth_it(x3):     # the same passes, fused, in parallel pixel blocks
            e, sum_exp, picked, shifted_class_sum = cpu_cross_entropy.forward(
                x3, safe_target, weight, bool(smoothing))
        else:
            flat = _target_positions(safe_target, n_classes)
            shift = x3.max(axis=1, keepdims=True)
            e = x3 - shift
            if smoothing:   # sum_k w_k (x_k - m), taken before e turns into exp(x - m)
                shifted_class_sum = e.sum(axis=1) if weight is None else xp.matmul(weight, e)
            xp.exp(e, out=e)
            sum_exp = e.sum(axis=1)
            picked = xp.take(x3, flat) - shift[:, 0]
        log_sum_exp = xp.log(sum_exp)   # lse - m: the large m cancels before any rounding
        if weight is None:
            target_weight, total_weight = valid.astype(x.dtype), n_classes
        else:
            target_weight, total_weight = xp.where(valid, weight[safe_target], 0), weight.sum()
        loss = (1 - smoothing) * target_weight * (log_sum_exp - picked)
        if smoothing:
            loss += (smoothing / n_classes) * (total_weight * log_sum_exp - shifted_class_sum)
        loss = xp.where(valid, loss, 0)   # ignored positions contribute exactly 0, even if x is inf

        denominator = target_weight.sum() if reduction == "mean" else None
        ctx.save_for_backward(e, sum_exp, flat, safe_target, valid, target_weight, weight)
        ctx.shape, ctx.reduction, ctx.smoothing = x.shape, reduction, smoothing
        ctx.denominator, ctx.total_weight = denominator, total_weight
        if reduction == "none":
            return loss.reshape(target.shape)
        with np.errstate(invalid="ignore", divide="ignore"):   # all ignored: 0/0 = nan, as PyTorch
            total = loss.sum() if reduction == "sum" else loss.sum() / denominator
        return xp.asarray(total, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        e, sum_exp, flat, safe_target, valid, target_weight, weight = ctx.saved_tensors
        xp = backend.get_array_module(e)
        n, n_classes, spatial = e.shape
        eps = ctx.smoothing
        g = g.reshape(n, spatial) if ctx.reduction == "none" else g
        with np.errstate(invalid="ignore", divide="ignore"):
            if ctx.reduction == "mean":
                g = g / ctx.denominator
            a = xp.where(valid, g * ((1 - eps) * target_weight), 0)
            b = xp.where(valid, g * (eps / n_classes), 0) if eps else None
        p_scale = a if b is None else a + b * ctx.total_weight
        if cpu_cross_entropy.worth_it(e):
            grad = cpu_cross_entropy.softmax_grad(e, p_scale / sum_exp, safe_target, a, b, weight)
            return grad.reshape(ctx.shape), None, None, None, None, None
        grad = e * (p_scale / sum_exp)[:, None]
        if b is not None:
            grad -= b[:, None] * (1 if weight is None else weight[:, None])
        grad.reshape(-1)[flat] -= a   # one target per position: unique indices, no accumulation
        return grad.reshape(ctx.shape), None, None, None, None, None


class SoftTargetCrossEntropy(Function):
    """Cross-entropy against class probabilities q (same shape as x), as PyTorch:
    loss_i = -sum_k w_k q'_k log p_k with q' = (1 - eps) q + eps / C; "mean" divides by the
    number of positions N * S (not by the weights)."""

    @staticmethod
    def forward(ctx, x, q, weight, reduction, smoothing):
        xp = backend.get_array_module(x)
        n_classes = x.shape[1] if x.ndim > 1 else x.shape[0]
        x3 = x.reshape(_as_ncs(x))
        q3 = q.reshape(x3.shape)
        log_p = log_softmax_array(x3, 1)
        mixed = (1 - smoothing) * q3 + smoothing / n_classes if smoothing else q3
        weighted = mixed if weight is None else mixed * weight[:, None]
        loss = -(weighted * log_p).sum(axis=1)
        ctx.save_for_backward(log_p, weighted, weight)
        ctx.shape, ctx.reduction, ctx.smoothing = x.shape, reduction, smoothing
        if reduction == "none":
            return loss.reshape(x.shape[:1] + x.shape[2:] if x.ndim > 1 else ())
        with np.errstate(invalid="ignore", divide="ignore"):
            total = loss.sum() if reduction == "sum" else loss.sum() / loss.size
        return xp.asarray(total, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        log_p, weighted, weight = ctx.saved_tensors
        xp = backend.get_array_module(log_p)
        n, _, spatial = log_p.shape
        if ctx.reduction == "none":
            g = g.reshape(n, 1, spatial)
        elif ctx.reduction == "mean":
            g = g / (n * spatial)
        need_x, need_q = ctx.needs_input_grad[:2]
        grad_x = grad_q = None
        if need_x:
            grad_x = ((xp.exp(log_p) * weighted.sum(axis=1, keepdims=True) - weighted) * g).reshape(ctx.shape)
        if need_q:
            w = 1 if weight is None else weight[:, None]
            grad_q = (-(1 - ctx.smoothing) * w * log_p * g).reshape(ctx.shape)
        return grad_x, grad_q, None, None, None


class NLLLoss(Function):
    """loss_i = -w_t * x[t] (0 where t == ignore_index); "mean" divides by the sum of w_t."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction):
        xp = backend.get_array_module(x)
        x3 = x.reshape(_as_ncs(x))
        n, n_classes, spatial = x3.shape
        t2 = target.reshape(n, spatial)
        valid = t2 != ignore_index
        safe_target = xp.where(valid, t2, 0)
        flat = _target_positions(safe_target, n_classes)
        picked = xp.take(x3, flat)
        target_weight = valid.astype(x.dtype) if weight is None else xp.where(valid, weight[safe_target], 0)
        loss = xp.where(valid, -target_weight * picked, 0)
        ctx.save_for_backward(flat, valid, target_weight)
        ctx.shape, ctx.dtype, ctx.reduction = x3.shape, x.dtype, reduction
        ctx.input_shape = x.shape
        ctx.denominator = target_weight.sum() if reduction == "mean" else None
        if reduction == "none":
            return loss.reshape(target.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = loss.sum() if reduction == "sum" else loss.sum() / ctx.denominator
        return xp.asarray(total, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        flat, valid, target_weight = ctx.saved_tensors
        xp = backend.get_array_module(flat)
        g = g.reshape(flat.shape) if ctx.reduction == "none" else g
        with np.errstate(invalid="ignore", divide="ignore"):
            if ctx.reduction == "mean":
                g = g / ctx.denominator
            picked_grad = xp.where(valid, -g * target_weight, 0)
        grad = xp.zeros(ctx.shape, dtype=ctx.dtype)
        grad.reshape(-1)[flat] = picked_grad
        return grad.reshape(ctx.input_shape), None, None, None, None


def _target_positions(safe_target, n_classes):
    """Flat index into the (N, C, S) scores of each position's target class score."""
    xp = backend.get_array_module(safe_target)
    n, spatial = safe_target.shape
    return (xp.arange(n)[:, None] * n_classes + safe_target) * spatial + xp.arange(spatial)


def _as_ncs(x):
    """(N, C, S) for an (N, C, d1, ...) input, S = d1 * ... (1 for (N, C)); (1, C, 1) for (C,)."""
    if x.ndim == 1:
        return 1, x.shape[0], 1
    return x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64))


# ---- argument checks shared by the class-index losses -------------------------------------

def _check_tensor(value, what, op):
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {what} must be a Tensor, got {type(value).__name__}")


def _check_reduction(reduction, op):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _check_input(input, op):
    _check_tensor(input, "input", op)
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be a floating point tensor of scores, got dtype {input.dtype}")
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have shape (C,), (N, C) or (N, C, d1, ...), got a 0-d tensor")
    return input.shape[1] if input.ndim > 1 else input.shape[0]


def _index_target_shape(input):
    return input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()


def _check_index_target(input, target, op):
    expected = _index_target_shape(input)
    if target.shape != expected:
        raise ValueError(
            f"{op}: target of shape {target.shape} does not match input of shape {input.shape}: "
            f"expected class indices of shape {expected}"
            + (f" or class probabilities of shape {input.shape}" if op == "cross_entropy" else ""))
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{op}: expected an integer (int64) target of class indices, got dtype {target.dtype} "
            f"with shape {target.shape}" + (f"; a float target holds class probabilities and must "
                                             f"have the input's shape {input.shape}" if op == "cross_entropy" else ""))


def check_target_range(target, n_classes, ignore_index, op):
    """ValueError naming the first target outside [0, n_classes) that is not ignore_index.

    On CUDA, reading the answer back would sync the device every call; the check is
    queued instead (gradflow.transfer.check_later) and raised at the next host read
    (the logged loss, .item(), .numpy()), still naming the value and where it is,
    which PyTorch's asynchronous device-side assert does not.
    """
    xp = backend.get_array_module(target)
    bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)

    def raise_error():
        first = int(xp.argmax(bad.reshape(-1)))
        value = int(target.reshape(-1)[first])
        index = tuple(int(i) for i in np.unravel_index(first, target.shape))
        raise ValueError(
            f"{op}: target value {value} at index {index} is out of range for {n_classes} classes "
            f"(expected 0..{n_classes - 1}, or ignore_index={ignore_index})")
    transfer.check_later(bad.any(), raise_error)


def _class_weight(weight, n_classes, input, op):
    """The raw (C,) weight array in the input's dtype, or None."""
    if weight is None:
        return None
    _check_tensor(weight, "weight", op)
    if weight.shape != (n_classes,):
        raise ValueError(f"{op}: weight of shape {weight.shape} does not fit input of shape {input.shape}: "
                         f"expected one weight per class, shape ({n_classes},)")
    if weight.requires_grad and autograd.is_grad_enabled():
        raise RuntimeError(f"{op}: weight is not differentiable (as in PyTorch); pass weight.detach()")
    if weight.device != input.device:
        raise RuntimeError(f"{op}: expected weight on {input.device}, like the input, but it is on {weight.device}")
    return weight.data.astype(input.dtype, copy=False)


# ---- public functions ------------------------------------------------------------------------

def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """PyTorch's F.cross_entropy: log_softmax over the class dim followed by nll_loss, fused.

    input: scores (C,), (N, C) or (N, C, d1, ...). target: class indices (int) of shape (),
    (N,) or (N, d1, ...), or class probabilities (float) of the input's shape.
    """
    op = "cross_entropy"
    n_classes = _check_input(input, op)
    _check_tensor(target, "target", op)
    _check_reduction(reduction, op)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    w = _class_weight(weight, n_classes, input, op)
    if target.shape == input.shape:   # class probabilities, as PyTorch decides it: by shape
        if target.dtype.kind != "f":
            raise TypeError(f"{op}: a target of the input's shape {input.shape} holds class probabilities "
                            f"and must be floating point, got dtype {target.dtype} "
                            f"(class indices have shape {_index_target_shape(input)})")
        if ignore_index >= 0:
            raise ValueError(f"{op}: ignore_index={ignore_index} is not supported for class-probability targets")
        return SoftTargetCrossEntropy.apply(input, target.to(input.dtype), w, reduction, float(label_smoothing))
    _check_index_target(input, target, op)
    check_target_range(target.data, n_classes, ignore_index, op)
    return CrossEntropy.apply(input, target, w, int(ignore_index), reduction, float(label_smoothing))


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """PyTorch's F.nll_loss on log-probabilities (C,), (N, C) or (N, C, d1, ...)."""
    op = "nll_loss"
    n_classes = _check_input(input, op)
    _check_tensor(target, "target", op)
    _check_reduction(reduction, op)
    w = _class_weight(weight, n_classes, input, op)
    _check_index_target(input, target, op)
    check_target_range(target.data, n_classes, ignore_index, op)
    return NLLLoss.apply(input, target, w, int(ignore_index), reduction)
