"""dropout (elements) and dropout2d (whole channels), with masks from gradflow's own RNG.

In training, each element (or each (n, c) channel) is kept with probability 1 - p and scaled
by 1 / (1 - p), so the expected output equals the input; the gradient is the same scaled
mask. The draws come from gradflow.random (numpy's Generator on CPU, cupy.random on CUDA),
so gf.manual_seed(s) makes them repeatable.
"""
import warnings

import numpy as np

from gradflow import backend, random
from gradflow.autograd import Function


class ScaledMask(Function):
    """x * mask, mask holding 0 or 1 / (1 - p) and broadcasting against x."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None


def _check_p(p, op):
    if not isinstance(p, (int, float, np.floating, np.integer)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")


def _scaled_mask(shape, p, dtype, device):
    if p == 1:   # everything dropped (no draws, as PyTorch); 1 / (1 - p) would divide by zero
        return backend.xp_for(device).zeros(shape, dtype=dtype)
    keep = random.xp_random(device).random(shape, dtype=np.float32) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


def _apply(x, p, training, mask_shape, op):
    _check_p(p, op)
    if not training or p == 0:
        return x
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: needs a floating point input, got dtype {x.dtype}")
    return ScaledMask.apply(x, _scaled_mask(mask_shape, float(p), x.dtype, x.device))


def dropout(x, p=0.5, training=True, inplace=False):
    """Zero each element with probability p and scale the rest by 1 / (1 - p).

    inplace is accepted for PyTorch compatibility; the result is always a new tensor
    (same values), since tensors in a graph are never modified in place here."""
    return _apply(x, p, training, x.shape, "dropout")


def dropout2d(x, p=0.5, training=True, inplace=False):
    """Zero whole channels: each (n, c) plane of an (N, C, H, W) input is kept or dropped.

    A 3-D input is taken as (N, C, L) with a warning, as PyTorch does today."""
    op = "dropout2d"
    _check_p(p, op)
    if x.ndim < 2:
        raise ValueError(f"{op}: needs an input with a channel dim, (N, C, H, W), got shape {x.shape}")
    if x.ndim not in (3, 4):
        warnings.warn(f"{op}: Received a {x.ndim}-D input to dropout2d, which is deprecated and will "
                      "result in an error in a future release; use dropout instead.", stacklevel=2)
    elif x.ndim == 3:
        warnings.warn(f"{op}: Received a 3D input to dropout2d and assuming that channel-wise 1D "
                      "dropout behavior is desired - input is interpreted as shape (N, C, L).", stacklevel=2)
    return _apply(x, p, training, x.shape[:2] + (1,) * (x.ndim - 2), op)
