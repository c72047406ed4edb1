"""2-D pooling as PyTorch defines it: max, average and their adaptive forms.

Every pool here is separable into one window table per spatial axis (`Windows`):
where each output's window starts, how many of its taps fall inside the input,
the stride between taps, the axis' share of the average divisor, and for the
backward gather, which windows cover each input position. The tables depend
only on the geometry, so they are built once (in NumPy, then moved to the
device) and cached; the kernels in kernels/{cpu,cuda}/pool.py only read them.
"""
import functools
from typing import NamedTuple

import numpy as np

from gradflow import backend, kernels
from gradflow.ops.arguments import pair
from gradflow.autograd import Function


class Windows(NamedTuple):
    """The pooling windows along one axis of an input of `size` positions."""
    first: object        # (O,) int64: first in-bounds tap of each window (PyTorch's clipped start)
    count: object        # (O,) int64: how many taps of the window fall inside the input
    step: int            # distance between taps: the dilation
    divisor: object      # (O,) float64: this axis' factor of the average-pool divisor
    cover_start: object  # (size+1,) int64: input i is covered by covers[cover_start[i]:cover_start[i+1]]
    covers: object       # int64 window indices, increasing per input (the order PyTorch sums in)


def _windows_from_starts(size, starts, spans, step, divisors, device):
    """Window o has spans[o] taps, `step` apart, from starts[o] (which may lie in the padding)."""
    first, count = [], []
    covering = [[] for _ in range(size)]
    for o, (start, span) in enumerate(zip(starts, spans)):
        f = start
        while f < 0:         # exactly PyTorch's clipping, also for windows with no tap inside
            f += step
        taps = range(f, min(start + (span - 1) * step + 1, size), step)
        first.append(f)
        count.append(len(taps))
        for i in taps:
            covering[i].append(o)
    cover_start = np.cumsum([0] + [len(c) for c in covering], dtype=np.int64)
    covers = np.array([o for c in covering for o in c], dtype=np.int64)
    tables = (np.array(first, dtype=np.int64), np.array(count, dtype=np.int64),
              np.array(divisors, dtype=np.float64), cover_start, covers)
    first, count, divisor, cover_start, covers = (backend.to_device(t, device) for t in tables)
    return Windows(first, count, step, divisor, cover_start, covers)


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling_output_shape: with ceil_mode the last window must start
    inside the input or its left padding."""
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


@functools.lru_cache(maxsize=512)
def sliding_windows(size, kernel, stride, padding, dilation=1, ceil_mode=False,
                    count_include_pad=True, divisor_override=None, device="cpu"):
    """Windows of a max/avg pool along one axis (arguments already validated)."""
    out = pool_output_size(size, kernel, stride, padding, dilation, ceil_mode)
    starts = [o * stride - padding for o in range(out)]
    if divisor_override is not None:
        divisors = [divisor_override] * out
    elif count_include_pad:   # the window clipped to the padded input, as PyTorch's avg_pool2d
        divisors = [min(s + kernel, size + padding) - s for s in starts]
    else:
        divisors = [min(s + kernel, size) - max(s, 0) for s in starts]
    return _windows_from_starts(size, starts, [kernel] * out, dilation, divisors, device)


@functools.lru_cache(maxsize=512)
def adaptive_windows(size, out, device="cpu"):
    """Window o spans [floor(o*size/out), ceil((o+1)*size/out)), as PyTorch's adaptive pools."""
    starts = [o * size // out for o in range(out)]
    ends = [-((-(o + 1) * size) // out) for o in range(out)]
    widths = [e - s for s, e in zip(starts, ends)]
    return _windows_from_starts(size, starts, widths, 1, widths, device)


# ---- autograd Functions -------------------------------------------------------------

class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, rows, cols):
        out, indices = kernels.pool_kernels(x).max_pool2d_forward(x, rows, cols)
        ctx.save_for_backward(indices)
        ctx.windows = rows, cols
        return out, indices

    @staticmethod
    def backward(ctx, grad_out, _grad_indices):
        indices, = ctx.saved_tensors
        rows, cols = ctx.windows
        grad = kernels.pool_kernels(grad_out).max_pool2d_backward(grad_out, indices, rows, cols)
        return grad, None, None


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, rows, cols):
        ctx.windows = rows, cols
        return kernels.pool_kernels(x).avg_pool2d_forward(x, rows, cols)

    @staticmethod
    def backward(ctx, grad_out):
        rows, cols = ctx.windows
        return kernels.pool_kernels(grad_out).avg_pool2d_backward(grad_out, rows, cols), None, None


# ---- argument checks ------------------------------------------------------------------

def _check_input(x, op):
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape {x.shape}")
    if not x.dtype.kind == "f":
        raise TypeError(f"{op}: expected a floating-point input, got dtype {x.dtype}")
    if any(s == 0 for s in x.shape[-3:]):
        raise ValueError(f"{op}: expected non-empty channel and spatial dims, got shape {x.shape}")


def _sliding_geometry(x, op, kernel_size, stride, padding, dilation, ceil_mode):
    """Validated (kernel, stride, padding, dilation) pairs, with PyTorch's rules."""
    _check_input(x, op)
    kernel = pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else pair(stride, "stride", op)
    padding = pair(padding, "padding", op)
    dilation = pair(dilation, "dilation", op)
    if min(kernel) <= 0:
        raise ValueError(f"{op}: kernel_size must be positive, got {kernel}")
    if min(stride) <= 0:
        raise ValueError(f"{op}: stride must be positive, got {stride}")
    if min(dilation) <= 0:
        raise ValueError(f"{op}: dilation must be positive, got {dilation}")
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding}")
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise ValueError(f"{op}: padding should be at most half of kernel_size, "
                             f"but got padding={padding} and kernel_size={kernel}")
    out = tuple(pool_output_size(n, k, s, p, d, ceil_mode)
                for n, k, s, p, d in zip(x.shape[-2:], kernel, stride, padding, dilation))
    if min(out) < 1:
        raise ValueError(f"{op}: input of spatial size {tuple(x.shape[-2:])} is too small for "
                         f"kernel_size={kernel}, stride={stride}, padding={padding}, dilation={dilation}: "
                         f"the output would be {out}")
    return kernel, stride, padding, dilation


# ---- public functions -----------------------------------------------------------------

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over each window; padding counts as -inf. With return_indices, also the
    int64 index h*W+w of each maximum within its (H, W) plane (the first one on ties)."""
    kernel, stride, padding, dilation = _sliding_geometry(x, "max_pool2d", kernel_size, stride, padding,
                                                          dilation, ceil_mode)
    rows, cols = (sliding_windows(n, k, s, p, d, bool(ceil_mode), device=x.device)
                  for n, k, s, p, d in zip(x.shape[-2:], kernel, stride, padding, dilation))
    out, indices = MaxPool2d.apply(x, rows, cols)
    return (out, indices) if return_indices else out


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over each window. The divisor is the window clipped to the padded input
    (count_include_pad), to the input (not count_include_pad), or divisor_override."""
    kernel, stride, padding, _ = _sliding_geometry(x, "avg_pool2d", kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer)):
            raise TypeError(f"avg_pool2d: divisor_override must be an int, got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError("avg_pool2d: divisor_override must not be zero")
    # the override divides once: the row tables carry it, the column tables carry 1
    row_override, col_override = (None, None) if divisor_override is None else (int(divisor_override), 1)
    rows = sliding_windows(x.shape[-2], kernel[0], stride[0], padding[0], 1, bool(ceil_mode),
                           bool(count_include_pad), row_override, x.device)
    cols = sliding_windows(x.shape[-1], kernel[1], stride[1], padding[1], 1, bool(ceil_mode),
                           bool(count_include_pad), col_override, x.device)
    return AvgPool2d.apply(x, rows, cols)


def _adaptive_geometry(x, output_size, op):
    _check_input(x, op)
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
        sizes = tuple(x.shape[-2 + i] if s is None else s for i, s in enumerate(output_size))
    else:
        sizes = (output_size, output_size)
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"{op}: output_size must be an int, None or a pair of them, got {output_size!r}")
        if s < 0:
            raise ValueError(f"{op}: output_size must be non-negative, got {output_size!r}")
    return tuple(adaptive_windows(n, int(o), x.device) for n, o in zip(x.shape[-2:], sizes))


def adaptive_avg_pool2d(x, output_size):
    """Average over PyTorch's adaptive windows; output_size may hold None (keep that size)."""
    rows, cols = _adaptive_geometry(x, output_size, "adaptive_avg_pool2d")
    return AvgPool2d.apply(x, rows, cols)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Max over PyTorch's adaptive windows, with indices as max_pool2d."""
    rows, cols = _adaptive_geometry(x, output_size, "adaptive_max_pool2d")
    out, indices = MaxPool2d.apply(x, rows, cols)
    return (out, indices) if return_indices else out
