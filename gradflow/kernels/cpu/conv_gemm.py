"""Stride-1 convolution of small images as one GEMM per chunk of images (CPU).

The direct kernels (conv_direct) sweep one image plane at a time; on an 8x8 or 4x4
image a sweep is a few vectors long and the per-sweep work (36 weights, loop set-up)
dominates. Here a chunk of images becomes one matrix product instead:

    out[:, chunk] (O, m * OH * OW) = weight (O, C * KH * KW) @ cols (C * KH * KW, m * OH * OW)

with cols[(c * KH + i) * KW + j, (n * OH + oy) * OW + ox] = plane[n, c, (oy + i) * width + ox + j],
copied from the zero-padded planes of conv.py's _padded_planes (so no bounds tests: each
row of cols is OH runs of OW contiguous values). The same function serves the input
gradient, as the direct path does: a conv of the padded output gradient with the flipped
weights. The weight gradient is grad_out (O, m * OH * OW) @ cols.T per chunk.

Measured at batch 16, forward+backward, direct -> here (Intel Xeon, AVX-512), 1 thread:
128 -> 128 channels at 8x8 21.6 -> 11.8 ms, at 4x4 12.0 -> 4.3 ms, 64 -> 128 at 8x8
12.1 -> 7.1 ms; 2 threads: 12.2 -> 10.1, 7.1 -> 3.9, 9.6 -> 6.6 ms. At 16x16 it was no
faster on 1 thread and slower on 2, hence conv.GEMM_PIXELS = 64 (measured again with the
chunks on Numba's threads, AMD EPYC Zen 4, batch 16, 64 -> 64 at 16x16: direct 13.0 / 8.7 ms
at 1 / 2 threads, GEMM 17.2 / 9.1 ms).

Threads: the chunks are fixed by the shapes and run in parallel, each GEMM on one thread
(BLAS is held to one, gradflow.threads): in a prange loop that calls BLAS itself where
gradflow.kernels.cpu.blas found it, else on Python threads around NumPy's matmul (the
copies release the GIL, as does matmul). The weight gradient adds the chunks' products in
chunk order, so the bits do not depend on the thread count.
"""
import concurrent.futures
import math
import threading

import numpy as np
from numba import njit, prange

from gradflow import threads
from gradflow.kernels.cpu import blas

CHUNK_BYTES = 1 << 20    # cols per chunk: in L2 next to the weights; several chunks keep 2+ threads busy
_pools = {}
_pools_lock = threading.Lock()
_local = threading.local()      # each thread's buffers, reused: fresh pages cost ~0.2 ms per MB


@njit(cache=True, nogil=True)
def planes_to_columns(planes, kernel_h, kernel_w, width, out_h, out_w, cols):
    """cols[(c * kernel_h + i) * kernel_w + j, (n * out_h + oy) * out_w + ox]
    = planes[n, c, (oy + i) * width + ox + j]."""
    n_images, channels = planes.shape[0], planes.shape[1]
    pixels = out_h * out_w
    for row in range(channels * kernel_h * kernel_w):
        c = row // (kernel_h * kernel_w)
        i = row // kernel_w % kernel_h
        j = row % kernel_w
        for n in range(n_images):
            source = planes[n, c]
            target = cols[row, n * pixels:]
            for oy in range(out_h):
                s = source[(oy + i) * width + j:]
                t = target[oy * out_w:]
                for ox in range(out_w):
                    t[ox] = s[ox]


def chunks(n_images, per_image_bytes):
    """[(first image, image count)]: whole images, at most about CHUNK_BYTES of columns
    each, their sizes differing by at most one (so that threads finish together).
    Plain integer arithmetic: small convolutions call this twice per step and layer."""
    most = max(1, CHUNK_BYTES // max(1, per_image_bytes))
    count = -(-n_images // most)
    if count == 0:
        return []
    base, larger = divmod(n_images, count)
    result, n0 = [], 0
    for i in range(count):
        m = base + 1 if i < larger else base
        result.append((n0, m))
        n0 += m
    return result


def _buffer(name, shape, dtype):
    """A scratch array of this shape from the calling thread's buffer `name` (grown as needed)."""
    size = math.prod(shape)
    buffer = getattr(_local, name, None)
    if buffer is None or buffer.size < size or buffer.dtype != dtype:
        buffer = np.empty(size, dtype=dtype)
        setattr(_local, name, buffer)
    return buffer[:size].reshape(shape)


def _chunk_layout(n_images, per_image_bytes, pixels):
    """(starts, columns) for the prange kernels: chunk i holds images [starts[i], starts[i + 1]);
    columns: the largest chunk's images x pixels, the width of its scratch rows."""
    parts = chunks(n_images, per_image_bytes)
    starts = np.array([n0 for n0, _ in parts] + [n_images], dtype=np.int64)
    return starts, max((m for _, m in parts), default=0) * pixels


# ---- chunks on Numba's threads, BLAS called from the kernel --------------------------------

@njit(cache=True, parallel=True)
def _conv_chunks(gemm, planes, weight, bias, kernel_h, kernel_w, width, starts, cols, product, out):
    """out = bias + the convolution, one GEMM per group per chunk of images [starts[i],
    starts[i + 1]); weight (groups, O / groups, rows per group); cols and product: scratch of
    (chunks, rows, most images * pixels) and (chunks, O, most images * pixels)."""
    groups, out_per_group, rows = weight.shape
    out_h, out_w = out.shape[2], out.shape[3]
    pixels = out_h * out_w
    for chunk in prange(starts.size - 1):
        n0, m = starts[chunk], starts[chunk + 1] - starts[chunk]
        c = cols[chunk, :, :m * pixels]
        p = product[chunk, :, :m * pixels]
        planes_to_columns(planes[n0:n0 + m], kernel_h, kernel_w, width, out_h, out_w, c)
        for g in range(groups):
            blas.gemm(gemm, weight[g], c[g * rows:(g + 1) * rows], p[g * out_per_group:(g + 1) * out_per_group], False)
        for n in range(m):
            for o in range(out.shape[1]):
                source = p[o, n * pixels:]
                for y in range(out_h):
                    target = out[n0 + n, o, y]
                    for x in range(out_w):
                        target[x] = source[y * out_w + x] + bias[o]


@njit(cache=True, parallel=True)
def _weight_grad_chunks(gemm, planes, grads, kernel_h, kernel_w, width, out_w, starts, cols, folded, partial, total):
    """total (groups, O / groups, rows per group) = sum over chunks, in chunk order, of the
    chunk's grad_out (O, m * pixels) @ cols.T; grads (N, O, pixels); cols, folded, partial:
    scratch of (chunks, C * KH * KW, most * pixels), (chunks, O, most * pixels), (chunks,) + total.shape."""
    groups, out_per_group, rows = total.shape
    pixels = grads.shape[2]
    for chunk in prange(starts.size - 1):
        n0, m = starts[chunk], starts[chunk + 1] - starts[chunk]
        c = cols[chunk, :, :m * pixels]
        f = folded[chunk, :, :m * pixels]
        planes_to_columns(planes[n0:n0 + m], kernel_h, kernel_w, width, pixels // out_w, out_w, c)
        for o in range(grads.shape[1]):
            for n in range(m):
                f[o, n * pixels:(n + 1) * pixels] = grads[n0 + n, o]
        for g in range(groups):
            blas.gemm(gemm, f[g * out_per_group:(g + 1) * out_per_group], c[g * rows:(g + 1) * rows],
                      partial[chunk, g], True)
    total[:] = partial[0]
    for chunk in range(1, starts.size - 1):
        total += partial[chunk]


# ---- the host functions ------------------------------------------------------------------

def conv(planes, weight, bias, groups, width, out):
    """out (N, O, OH, OW) = bias + the stride-1 convolution of the padded planes (N, C, L),
    row pitch `width`, with weight (O, C / groups, KH, KW)."""
    n, out_channels, out_h, out_w = out.shape
    kernel_h, kernel_w = weight.shape[2:]
    rows_per_group = weight.shape[1] * kernel_h * kernel_w
    w = weight.reshape(groups, out_channels // groups, rows_per_group)
    per_image = groups * rows_per_group * out_h * out_w * planes.itemsize
    gemm = blas.GEMM_ADDRESSES.get(planes.dtype)
    if gemm is not None:
        starts, most = _chunk_layout(n, per_image, out_h * out_w)
        chunk_count = starts.size - 1
        _conv_chunks(gemm, planes, w, bias, kernel_h, kernel_w, width, starts,
                     _buffer("cols", (chunk_count, groups * rows_per_group, most), planes.dtype),
                     _buffer("product", (chunk_count, out_channels, most), planes.dtype), out)
        return
    bias = bias.reshape(out_channels, 1)

    def chunk(n0, m):
        cols = _columns(planes[n0:n0 + m], weight.shape[2:], width, (out_h, out_w))
        product = np.matmul(w, cols.reshape(groups, rows_per_group, -1)).reshape(out_channels, m, -1)
        np.add(product.transpose(1, 0, 2), bias, out=out[n0:n0 + m].reshape(m, out_channels, -1))

    _run([lambda n0=n0, m=m: chunk(n0, m) for n0, m in chunks(n, per_image)])


def weight_grad(planes, grad_out, kernel_hw, groups, width):
    """The weight gradient (O, C / groups, KH, KW) of conv for the padded input planes (N, C, L)."""
    n, out_channels, out_h, out_w = grad_out.shape
    channels = planes.shape[1]
    rows_per_group = channels // groups * kernel_hw[0] * kernel_hw[1]
    per_image = channels * kernel_hw[0] * kernel_hw[1] * out_h * out_w * planes.itemsize
    total = np.zeros((groups, out_channels // groups, rows_per_group), dtype=planes.dtype)
    gemm = blas.GEMM_ADDRESSES.get(planes.dtype)
    if gemm is not None and n:
        starts, most = _chunk_layout(n, per_image, out_h * out_w)
        chunk_count = starts.size - 1
        _weight_grad_chunks(gemm, planes, grad_out.reshape(n, out_channels, -1), kernel_hw[0], kernel_hw[1], width,
                            out_w, starts, _buffer("cols", (chunk_count, groups * rows_per_group, most), planes.dtype),
                            _buffer("product", (chunk_count, out_channels, most), planes.dtype),
                            _buffer("partial", (chunk_count,) + total.shape, planes.dtype), total)
        return total.reshape(out_channels, channels // groups, *kernel_hw)

    def chunk(n0, m):
        cols = _columns(planes[n0:n0 + m], kernel_hw, width, (out_h, out_w))
        g = np.ascontiguousarray(grad_out[n0:n0 + m].reshape(m, out_channels, -1).transpose(1, 0, 2))
        return np.matmul(g.reshape(groups, out_channels // groups, -1),
                         cols.reshape(groups, rows_per_group, -1).transpose(0, 2, 1))

    parts = _run([lambda n0=n0, m=m: chunk(n0, m) for n0, m in chunks(n, per_image)])
    for part in parts:          # in chunk order, whatever thread made each
        total += part
    return total.reshape(out_channels, channels // groups, *kernel_hw)


# ---- the fallback: chunks on Python threads around NumPy's matmul ------------------------

def _run(tasks):
    """Run the callables, in parallel on up to get_num_threads() threads; their results in order."""
    workers = min(threads.get_num_threads(), len(tasks))
    if workers <= 1:
        return [task() for task in tasks]
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = concurrent.futures.ThreadPoolExecutor(workers, "gradflow-conv")
    return [future.result() for future in [pool.submit(task) for task in tasks]]


def _columns(planes, kernel_hw, width, out_hw):
    rows = planes.shape[1] * kernel_hw[0] * kernel_hw[1]
    cols = _buffer("thread_cols", (rows, planes.shape[0] * out_hw[0] * out_hw[1]), planes.dtype)
    planes_to_columns(planes, kernel_hw[0], kernel_hw[1], width, out_hw[0], out_hw[1], cols)
    return cols
