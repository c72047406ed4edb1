"""Pooling kernels (CUDA, Numba), the same host functions as kernels/cpu/pool.py.

Inputs are (..., H, W) arrays pooled per (H, W) plane; `rows` and `cols` are the
per-axis window tables of gradflow.ops.pool.Windows, already on the device; their
kernel argument views are built once (launch.constant). One
thread per output element forward; backward is a gather with one thread per input
pixel (grid-stride loops: a capped grid covers any size), summing the windows that cover it in increasing window order: no atomics,
deterministic.
"""
import math

from numba import cuda

from gradflow.kernels.cuda import launch


@launch.kernel
def _max_pool_forward(x, out, indices, row_first, row_count, row_step, col_first, col_count, col_step):
    planes, out_h, out_w = out.shape
    width = x.shape[2]
    for k in range(cuda.grid(1), planes * out_h * out_w, cuda.gridsize(1)):
        ow = k % out_w
        oh = (k // out_w) % out_h
        p = k // (out_w * out_h)
        h0, w0 = row_first[oh], col_first[ow]
        best = -math.inf
        best_index = h0 * width + w0
        for i in range(row_count[oh]):
            h = h0 + i * row_step
            for j in range(col_count[ow]):
                w = w0 + j * col_step
                v = x[p, h, w]
                if v > best or v != v:   # strict: the first maximum wins ties; a NaN wins
                    best = v
                    best_index = h * width + w
        out[p, oh, ow] = best
        indices[p, oh, ow] = best_index


@launch.kernel
def _max_pool_backward(grad_out, indices, grad_in, row_cover_start, row_covers, col_cover_start, col_covers):
    planes, height, width = grad_in.shape
    for k in range(cuda.grid(1), planes * height * width, cuda.gridsize(1)):
        w = k % width
        h = (k // width) % height
        p = k // (width * height)
        here = h * width + w
        total = 0.0
        for a in range(row_cover_start[h], row_cover_start[h + 1]):
            oh = row_covers[a]
            for b in range(col_cover_start[w], col_cover_start[w + 1]):
                ow = col_covers[b]
                if indices[p, oh, ow] == here:
                    total += grad_out[p, oh, ow]
        grad_in[p, h, w] = total


@launch.kernel
def _avg_pool_forward(x, out, row_first, row_count, row_divisor, col_first, col_count, col_divisor):
    planes, out_h, out_w = out.shape
    for k in range(cuda.grid(1), planes * out_h * out_w, cuda.gridsize(1)):
        ow = k % out_w
        oh = (k // out_w) % out_h
        p = k // (out_w * out_h)
        total = 0.0
        for h in range(row_first[oh], row_first[oh] + row_count[oh]):
            for w in range(col_first[ow], col_first[ow] + col_count[ow]):
                total += x[p, h, w]
        out[p, oh, ow] = total / (row_divisor[oh] * col_divisor[ow])


@launch.kernel
def _avg_pool_backward(grad_out, grad_in, row_divisor, row_cover_start, row_covers,
                       col_divisor, col_cover_start, col_covers):
    planes, height, width = grad_in.shape
    for k in range(cuda.grid(1), planes * height * width, cuda.gridsize(1)):
        w = k % width
        h = (k // width) % height
        p = k // (width * height)
        total = 0.0
        for a in range(row_cover_start[h], row_cover_start[h + 1]):
            oh = row_covers[a]
            for b in range(col_cover_start[w], col_cover_start[w + 1]):
                ow = col_covers[b]
                total += grad_out[p, oh, ow] / (row_divisor[oh] * col_divisor[ow])
        grad_in[p, h, w] = total


def _planes(xp, a):
    """a as contiguous (planes, H, W): a view when a is contiguous (outputs are)."""
    a = xp.ascontiguousarray(a)
    return a.reshape(math.prod(a.shape[:-2]), a.shape[-2], a.shape[-1])


def _launch(kernel, n, *args):
    if n:
        kernel(launch.blocks(n), launch.GEOMETRY.threads, *args)


def _tables(*tables):
    """The window tables' device views, built once per table (the tables are cached)."""
    return tuple(launch.constant(t) if hasattr(t, "shape") else t for t in tables)


def max_pool2d_forward(x, rows, cols):
    """(out, int64 indices h*W+w of each window's first maximum)."""
    xp = launch.xp_of(x)
    shape = x.shape[:-2] + (len(rows.first), len(cols.first))
    out = xp.empty(shape, dtype=x.dtype)
    indices = xp.empty(shape, dtype=xp.int64)
    _launch(_max_pool_forward, out.size, _planes(xp, x), _planes(xp, out), _planes(xp, indices),
            *_tables(rows.first, rows.count, rows.step, cols.first, cols.count, cols.step))
    return out, indices


def max_pool2d_backward(grad_out, indices, rows, cols):
    """Each input pixel gathers the gradient of every window whose maximum it was."""
    xp = launch.xp_of(grad_out)
    shape = indices.shape[:-2] + (len(rows.cover_start) - 1, len(cols.cover_start) - 1)
    grad_in = xp.empty(shape, dtype=grad_out.dtype)
    _launch(_max_pool_backward, grad_in.size, _planes(xp, grad_out), _planes(xp, indices),
            _planes(xp, grad_in), *_tables(rows.cover_start, rows.covers, cols.cover_start, cols.covers))
    return grad_in


def avg_pool2d_forward(x, rows, cols):
    xp = launch.xp_of(x)
    shape = x.shape[:-2] + (len(rows.first), len(cols.first))
    out = xp.empty(shape, dtype=x.dtype)
    _launch(_avg_pool_forward, out.size, _planes(xp, x), _planes(xp, out),
            *_tables(rows.first, rows.count, rows.divisor, cols.first, cols.count, cols.divisor))
    return out


def avg_pool2d_backward(grad_out, rows, cols):
    """Each input pixel gathers grad/divisor from every window that covers it."""
    xp = launch.xp_of(grad_out)
    shape = grad_out.shape[:-2] + (len(rows.cover_start) - 1, len(cols.cover_start) - 1)
    grad_in = xp.empty(shape, dtype=grad_out.dtype)
    _launch(_avg_pool_backward, grad_in.size, _planes(xp, grad_out), _planes(xp, grad_in),
            *_tables(rows.divisor, rows.cover_start, rows.covers, cols.divisor, cols.cover_start, cols.covers))
    return grad_in
