"""Soft Dice loss for binary and multi-class segmentation (no PyTorch equivalent)."""
import numpy as np

from gradflow import backend, transfer
from gradflow.ops.loss import _check_reduction, _check_tensor
from gradflow.ops.softmax import softmax
from gradflow.tensor import Tensor


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

    def raise_error():
        first = int(xp.argmax(bad.reshape(-1)))
        raise ValueError(f"{op}: target value {t.reshape(-1)[first].item()} at index "
                         f"{tuple(int(i) for i in np.unravel_index(first, t.shape))} is {what}"
                         + (f" and not ignore_index={ignore_index}" if ignore_index is not None else ""))
    transfer.check_later(bad.any(), raise_error)   # on CUDA: raised at the next host read, as in cross_entropy
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
