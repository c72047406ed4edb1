"""Losses: cross_entropy (fused), nll_loss, binary_cross_entropy_with_logits, dice_loss.

PyTorch's semantics throughout (reductions, weights, ignore_index, label smoothing). Class
scores sit on dim 1 of an (N, C, d1, ...) input, or dim 0 of a single (C,) sample; the Functions
see them as (N, C, S) with S the flattened spatial size, and class-index targets as (N, S).

All of it is numpy/cupy array code, no Numba kernels, because that measured faster: on the
CPU an njit loop ran cross_entropy 2x slower than numpy (Numba has no vector exp without
SVML); on an H100 a fused Numba CUDA forward/backward pair (commit 389ed9f) beat CuPy's ops
forward (0.59 vs 0.78 ms) but lost forward+backward (1.63 vs 1.23 ms) to Numba's per-launch
argument overhead, at (8, 21, 64, 64).
"""
import numpy as np

from gradflow import autograd, backend
from gradflow.autograd import Function
from gradflow.ops.softmax import log_softmax_array, softmax
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
        flat = _target_positions(safe_target, n_classes)
        shift = x3.max(axis=1, keepdims=True)
        e = x3 - shift
        if smoothing:   # sum_k w_k (x_k - m), taken before e turns into exp(x - m)
            shifted_class_sum = e.sum(axis=1) if weight is None else xp.matmul(weight, e)
        xp.exp(e, out=e)
        sum_exp = e.sum(axis=1)
        log_sum_exp = xp.log(sum_exp)   # lse - m: the large m cancels before any rounding
        if weight is None:
            target_weight, total_weight = valid.astype(x.dtype), n_classes
        else:
            target_weight, total_weight = xp.where(valid, weight[safe_target], 0), weight.sum()
        loss = (1 - smoothing) * target_weight * (log_sum_exp + (shift[:, 0] - xp.take(x3, flat)))
        if smoothing:
            loss += (smoothing / n_classes) * (total_weight * log_sum_exp - shifted_class_sum)
        loss = xp.where(valid, loss, 0)   # ignored positions contribute exactly 0, even if x is inf

        denominator = target_weight.sum() if reduction == "mean" else None
        ctx.save_for_backward(e, sum_exp, flat, valid, target_weight, weight)
        ctx.shape, ctx.reduction, ctx.smoothing = x.shape, reduction, smoothing
        ctx.denominator, ctx.total_weight = denominator, total_weight
        if reduction == "none":
            return loss.reshape(target.shape)
        with np.errstate(invalid="ignore", divide="ignore"):   # all ignored: 0/0 = nan, as PyTorch
            total = loss.sum() if reduction == "sum" else loss.sum() / denominator
        return xp.asarray(total, dtype=x.dtype)

    @staticmethod
    def backward(ctx, g):
        e, sum_exp, flat, valid, target_weight, weight = ctx.saved_tensors
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

    On CUDA the `any` below reads one bool back to the host: one device sync per call, which
    waits for the queued work (measured on an H100: ~0.2 ms with nothing else queued). We pay
    it deliberately: an error raised later or not at all is worse, and PyTorch's asynchronous
    device-side assert names neither the value nor where it is.
    """
    xp = backend.get_array_module(target)
    bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
    if bool(bad.any()):
        first = int(xp.argmax(bad.reshape(-1)))
        value = int(target.reshape(-1)[first])
        index = tuple(int(i) for i in np.unravel_index(first, target.shape))
        raise ValueError(
            f"{op}: target value {value} at index {index} is out of range for {n_classes} classes "
            f"(expected 0..{n_classes - 1}, or ignore_index={ignore_index})")


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


def dice_loss(input, target, num_classes=None, smooth=1.0, ignore_index=None, reduction="mean"):
    """Soft Dice loss for segmentation logits (no PyTorch equivalent).

    Binary: input (N, H, W) or (N, 1, H, W) logits, p = sigmoid(input); target of the same shape
    (or (N, H, W) for (N, 1, H, W) input) with values in [0, 1] (0/1 masks or soft labels); one
    class, o = target. Multi-class: input (N, C, H, W), C >= 2, p = softmax(input, dim=1); target
    (N, H, W) of class indices, o = one_hot(target). Any number of spatial dims works alike.
    Pixels whose target equals ignore_index are left out of every sum. For each sample n and
    class c, with sums over pixels:

        dice[n, c] = (2 * sum(p * o) + smooth) / (sum(p) + sum(o) + smooth)
        loss[n]    = 1 - mean over c of dice[n, c]

    reduction "none" returns loss (N,); "mean" and "sum" reduce it over the batch. `smooth`
    keeps classes absent from both prediction and target at dice 1 (loss 0) instead of 0/0.
    num_classes, when given, must equal the number of classes the input holds (1 for binary).
    """
    op = "dice_loss"
    _check_tensor(input, "input", op)
    _check_tensor(target, "target", op)
    _check_reduction(reduction, op)
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be a floating point tensor of logits, got dtype {input.dtype}")
    if input.ndim < 2:
        raise ValueError(f"{op}: input must be (N, H, W), (N, 1, H, W) or (N, C, H, W) logits, got shape {input.shape}")
    binary = input.ndim == 3 or input.shape[1] == 1
    n_classes = 1 if binary else input.shape[1]
    if num_classes is not None and num_classes != n_classes:
        raise ValueError(f"{op}: num_classes={num_classes} but the input of shape {input.shape} holds "
                         f"{n_classes} class{'es' if n_classes > 1 else ''} "
                         f"({'binary: sigmoid of one channel' if binary else 'softmax over dim 1'})")
    xp = backend.get_array_module(input.data)
    n = input.shape[0]
    t = target.data
    keep = None if ignore_index is None else (t != ignore_index)
    if binary:
        allowed = (input.shape, input.shape[:1] + input.shape[2:]) if input.ndim > 3 else (input.shape,)
        if target.shape not in allowed:
            raise ValueError(f"{op}: target of shape {target.shape} does not match binary input of shape "
                             f"{input.shape}: expected {' or '.join(str(s) for s in allowed)}")
        bad = (t < 0) | (t > 1)
        what = "outside [0, 1]"
        probs = input.sigmoid().reshape(n, 1, -1)
        onehot = (t if keep is None else xp.where(keep, t, 0)).astype(input.dtype).reshape(n, 1, -1)
    else:
        if target.shape != input.shape[:1] + input.shape[2:]:
            raise ValueError(f"{op}: target of shape {target.shape} does not match input of shape {input.shape}: "
                             f"expected class indices of shape {input.shape[:1] + input.shape[2:]}")
        if target.dtype.kind not in "iu":
            raise TypeError(f"{op}: expected an integer (int64) target of class indices for a multi-class input, "
                            f"got dtype {target.dtype}")
        bad = (t < 0) | (t >= n_classes)
        what = f"out of range for {n_classes} classes (expected 0..{n_classes - 1})"
        probs = softmax(input, 1).reshape(n, n_classes, -1)
        classes = xp.arange(n_classes).reshape(1, n_classes, 1)
        onehot = (t.reshape(n, 1, -1) == classes).astype(input.dtype)
    if keep is not None:
        bad &= keep
    if bool(bad.any()):   # one device sync on CUDA, as in cross_entropy
        first = int(xp.argmax(bad.reshape(-1)))
        raise ValueError(f"{op}: target value {t.reshape(-1)[first].item()} at index "
                         f"{tuple(int(i) for i in np.unravel_index(first, t.shape))} is {what}"
                         + (f" and not ignore_index={ignore_index}" if ignore_index is not None else ""))
    if keep is not None:
        mask = keep.reshape(n, 1, -1).astype(input.dtype)
        onehot = onehot * mask
        probs = probs * Tensor(mask)
    onehot = Tensor(onehot)
    intersection = (probs * onehot).sum(dim=2)
    cardinality = probs.sum(dim=2) + Tensor(onehot.data.sum(axis=2))
    dice = (2 * intersection + smooth) / (cardinality + smooth)
    loss = 1 - dice.mean(dim=1)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()
