"""interpolate: nearest and bilinear resizing of (N, C, H, W) tensors, PyTorch's index rules.

Both modes are separable: along each spatial axis, output o reads a few inputs i with weights
A[o, i] (one input with weight 1 for nearest; two for bilinear). The forward pass gathers
rows of A, the backward pass gathers columns of A (the inputs' "who reads me" lists, padded
to equal length with weight 0): both are gathers, so the GPU needs no atomics and the result
is deterministic.
"""
import functools
import math

import numpy as np

from gradflow import backend
from gradflow.autograd import Function
from gradflow.ops.arguments import pair

MODES = ("nearest", "bilinear")


def _nearest_source(in_size, out_size, scale):
    """PyTorch's nearest_idx: float32 arithmetic, floor(o * scale), clamped to in_size - 1."""
    if out_size == in_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    step = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
    source = np.floor(np.arange(out_size, dtype=np.float32) * step).astype(np.int64)
    return np.minimum(source, in_size - 1)


def _bilinear_source(in_size, out_size, align_corners, scale, dtype):
    """PyTorch's area_pixel_compute_source_index + guard_index_and_lambda, in the input's
    dtype (its opmath type on CPU): source indices and their weights, (out, 2) each."""
    one, half = dtype.type(1), dtype.type(0.5)
    if in_size == out_size:   # PyTorch copies an axis whose size is unchanged, whatever the scale
        return np.arange(out_size)[:, None], np.ones((out_size, 1), dtype)
    dst = np.arange(out_size).astype(dtype)
    if align_corners:
        step = dtype.type(in_size - 1) / dtype.type(out_size - 1) if out_size > 1 else dtype.type(0)
        real = step * dst
    else:
        step = dtype.type(1.0 / scale) if scale else dtype.type(in_size) / dtype.type(out_size)
        real = np.maximum(step * (dst + half) - half, dtype.type(0))
    index0 = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    lambda1 = np.minimum(np.maximum(real - index0.astype(dtype), dtype.type(0)), one)
    index1 = index0 + (index0 < in_size - 1)
    return np.stack([index0, index1], 1), np.stack([one - lambda1, lambda1], 1)


def _transpose(rows_index, rows_weight, in_size):
    """Columns of the sparse (out, in) matrix given by its rows: for each input, the outputs
    that read it and their weights, padded with (0, weight 0) to a common length."""
    out_size = rows_index.shape[0]
    dense = np.zeros((out_size, in_size), dtype=rows_weight.dtype)
    for k in range(rows_index.shape[1]):   # += per k: a border row may read one input twice
        dense[np.arange(out_size), rows_index[:, k]] += rows_weight[:, k]
    readers = dense != 0
    width = max(1, int(readers.sum(axis=0).max()))
    cols_index = np.zeros((in_size, width), dtype=np.int64)
    cols_weight = np.zeros((in_size, width), dtype=rows_weight.dtype)
    for i in range(in_size):
        (outputs,) = np.nonzero(readers[:, i])
        cols_index[i, :outputs.size] = outputs
        cols_weight[i, :outputs.size] = dense[outputs, i]
    return cols_index, cols_weight


@functools.lru_cache(maxsize=256)
def axis_tables(in_size, out_size, mode, align_corners, scale, dtype, device):
    """(rows_index, rows_weight, cols_index, cols_weight) of one axis, on `device`.
    rows_weight is None for nearest (a plain copy, as PyTorch)."""
    dtype = np.dtype(dtype)
    if mode == "nearest":
        rows_index = _nearest_source(in_size, out_size, scale)[:, None]
        rows_weight = None
        cols_index, cols_weight = _transpose(rows_index, np.ones((out_size, 1), dtype), in_size)
    else:
        rows_index, rows_weight = _bilinear_source(in_size, out_size, align_corners, scale, dtype)
        cols_index, cols_weight = _transpose(rows_index, rows_weight, in_size)
    xp = backend.xp_for(device)
    return tuple(None if a is None else xp.asarray(a) for a in (rows_index, rows_weight, cols_index, cols_weight))


def _gather_axis(a, axis, index, weight):
    """out[.., o, ..] = sum over k of weight[o, k] * a[.., index[o, k], ..], k in order."""
    xp = backend.get_array_module(a)
    shape = [1] * a.ndim
    shape[axis] = -1
    out = None
    for k in range(index.shape[1]):
        term = xp.take(a, index[:, k], axis=axis)
        if weight is not None:
            term *= weight[:, k].reshape(shape)
        if out is None:
            out = term
        else:
            out += term
    return out


class Resample2d(Function):
    @staticmethod
    def forward(ctx, x, tables_h, tables_w):
        ctx.tables = tables_h, tables_w
        rows_h, weight_h = tables_h[:2]
        rows_w, weight_w = tables_w[:2]
        if weight_h is None:   # nearest: one fancy-indexed copy
            return x[:, :, rows_h[:, 0][:, None], rows_w[:, 0][None, :]]
        # along W first, then H: the same products and sums, in PyTorch's order
        return _gather_axis(_gather_axis(x, 3, rows_w, weight_w), 2, rows_h, weight_h)

    @staticmethod
    def backward(ctx, g):
        tables_h, tables_w = ctx.tables
        grad = _gather_axis(_gather_axis(g, 2, *tables_h[2:]), 3, *tables_w[2:])
        return grad, None, None


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """PyTorch's F.interpolate for (N, C, H, W) input, modes "nearest" and "bilinear".

    With scale_factor (and recompute_scale_factor None/False) the output is floor(in * s)
    and the source index uses 1/s, as PyTorch; with size, in/out.
    """
    if mode not in MODES:
        raise ValueError(f"interpolate: mode must be one of {MODES}, got {mode!r}")
    if input.ndim != 4:
        raise ValueError(f"interpolate: expected a 4-D input (N, C, H, W), got shape {input.shape}")
    if mode == "nearest":
        if align_corners is not None:
            raise ValueError("interpolate: align_corners option can only be set with the "
                             "interpolating modes: linear | bilinear | bicubic | trilinear")
    else:
        if input.dtype.kind != "f":
            raise TypeError(f"interpolate: bilinear mode needs a floating point input, got dtype {input.dtype}")
        align_corners = bool(align_corners)
    if size is not None and scale_factor is not None:
        raise ValueError("interpolate: only one of size or scale_factor should be defined")
    in_size = input.shape[2:]
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size")
        out_size = pair(size, "size", "interpolate")
        scales = (None, None)
    elif scale_factor is not None:
        scales = tuple(float(s) for s in pair(scale_factor, "scale_factor", "interpolate", integers=False))
        out_size = tuple(int(math.floor(n * s)) for n, s in zip(in_size, scales))
        if recompute_scale_factor:   # index rule from the integer sizes, as PyTorch
            scales = (None, None)
    else:
        raise ValueError("interpolate: either size or scale_factor should be defined")
    if min(in_size) <= 0 or min(out_size) <= 0:
        raise ValueError(f"interpolate: input and output sizes should be greater than 0, but got "
                         f"input (H: {in_size[0]}, W: {in_size[1]}) output (H: {out_size[0]}, W: {out_size[1]})")
    scales = tuple(s if s is not None and s > 0 else None for s in scales)
    dtype = input.dtype.str if input.dtype.kind == "f" else "<f4"
    tables = [axis_tables(n, m, mode, align_corners, s, dtype, input.device)
              for n, m, s in zip(in_size, out_size, scales)]
    return Resample2d.apply(input, *tables)
