"""Stride-1 convolution of small images as one GEMM per chunk of images (CPU).

The direct kernels (conv_direct) sweep one image plane at a time; on an 8x8 or 4x4
image a sweep is a few vectors long and the per-sweep work (36 weights, loop set-up)
dominates. Here a chunk of images becomes one matrix product instead:

    out[:, chunk] (O, m * OH * OW) = weight (O, C * KH * KW) @ cols (C * KH * KW, m * OH * OW)

with cols[(c * KH + i) * KW + j, n, oy * OW + ox] = plane[n, c, (oy + i) * width + ox + j],
copied from the zero-padded planes of conv.py's _padded_planes (so no bounds tests: each
row of cols is OH runs of OW contiguous values). The same function serves the input
gradient, as the direct path does: a conv of the padded output gradient with the flipped
weights. The weight gradient is grad_out (O, m * OH * OW) @ cols.T per chunk.

Measured at batch 16, forward+backward, direct -> here (Intel Xeon, AVX-512), 1 thread:
128 -> 128 channels at 8x8 21.6 -> 11.8 ms, at 4x4 12.0 -> 4.3 ms, 64 -> 128 at 8x8
12.1 -> 7.1 ms; 2 threads: 12.2 -> 10.1, 7.1 -> 3.9, 9.6 -> 6.6 ms. At 16x16 it was no
faster on 1 thread and slower on 2, hence conv.GEMM_PIXELS = 64.

Threads: BLAS runs on one thread (gradflow.threads), so the chunks themselves run in
parallel, each on one Python thread (the copies release the GIL, as does NumPy's
matmul). The chunks are fixed by the shapes, and the weight gradient adds the chunks'
products in chunk order, so the bits do not depend on the thread count.
"""
import concurrent.futures
import threading

import numpy as np
from numba import njit

from gradflow import threads

CHUNK_BYTES = 1 << 20    # cols per chunk: in L2 next to the weights; several chunks keep 2+ threads busy
_pools = {}
_pools_lock = threading.Lock()
_local = threading.local()      # each thread's column buffer, reused: fresh pages cost ~0.2 ms per MB


@njit(cache=True, nogil=True)
def planes_to_columns(planes, kernel_h, kernel_w, width, out_h, out_w, cols):
    """cols[(c * kernel_h + i) * kernel_w + j, n, oy * out_w + ox] = planes[n, c, (oy + i) * width + ox + j]."""
    n_images, channels = planes.shape[0], planes.shape[1]
    for row in range(channels * kernel_h * kernel_w):
        c = row // (kernel_h * kernel_w)
        i = row // kernel_w % kernel_h
        j = row % kernel_w
        for n in range(n_images):
            source = planes[n, c]
            target = cols[row, n]
            for oy in range(out_h):
                s = source[(oy + i) * width + j:]
                t = target[oy * out_w:]
                for ox in range(out_w):
                    t[ox] = s[ox]


def chunks(n_images, per_image_bytes):
    """[(first image, image count)]: whole images, at most about CHUNK_BYTES of columns
    each, their sizes differing by at most one (so that threads finish together)."""
    most = max(1, CHUNK_BYTES // max(1, per_image_bytes))
    count = -(-n_images // most)
    if count == 0:
        return []
    base, larger = divmod(n_images, count)
    sizes = [base + 1] * larger + [base] * (count - larger)
    starts = np.cumsum([0] + sizes[:-1])
    return [(int(n0), m) for n0, m in zip(starts, sizes)]


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
    size = rows * planes.shape[0] * out_hw[0] * out_hw[1]
    buffer = getattr(_local, "cols", None)
    if buffer is None or buffer.size < size or buffer.dtype != planes.dtype:
        buffer = _local.cols = np.empty(size, dtype=planes.dtype)
    cols = buffer[:size].reshape(rows, planes.shape[0], out_hw[0] * out_hw[1])
    planes_to_columns(planes, kernel_hw[0], kernel_hw[1], width, out_hw[0], out_hw[1], cols)
    return cols.reshape(rows, -1)


def conv(planes, weight, bias, groups, width, out):
    """out (N, O, OH, OW) = bias + the stride-1 convolution of the padded planes (N, C, L),
    row pitch `width`, with weight (O, C / groups, KH, KW)."""
    n, out_channels, out_h, out_w = out.shape
    rows_per_group = weight.shape[1] * weight.shape[2] * weight.shape[3]
    w = weight.reshape(groups, out_channels // groups, rows_per_group)
    bias = bias.reshape(out_channels, 1)

    def chunk(n0, m):
        cols = _columns(planes[n0:n0 + m], weight.shape[2:], width, (out_h, out_w))
        product = np.matmul(w, cols.reshape(groups, rows_per_group, -1)).reshape(out_channels, m, -1)
        np.add(product.transpose(1, 0, 2), bias, out=out[n0:n0 + m].reshape(m, out_channels, -1))

    per_image = groups * rows_per_group * out_h * out_w * planes.itemsize
    _run([lambda n0=n0, m=m: chunk(n0, m) for n0, m in chunks(n, per_image)])


def weight_grad(planes, grad_out, kernel_hw, groups, width):
    """The weight gradient (O, C / groups, KH, KW) of conv for the padded input planes (N, C, L)."""
    n, out_channels, out_h, out_w = grad_out.shape
    channels = planes.shape[1]
    rows_per_group = channels // groups * kernel_hw[0] * kernel_hw[1]

    def chunk(n0, m):
        cols = _columns(planes[n0:n0 + m], kernel_hw, width, (out_h, out_w))
        g = np.ascontiguousarray(grad_out[n0:n0 + m].reshape(m, out_channels, -1).transpose(1, 0, 2))
        return np.matmul(g.reshape(groups, out_channels // groups, -1),
                         cols.reshape(groups, rows_per_group, -1).transpose(0, 2, 1))

    per_image = channels * kernel_hw[0] * kernel_hw[1] * out_h * out_w * planes.itemsize
    parts = _run([lambda n0=n0, m=m: chunk(n0, m) for n0, m in chunks(n, per_image)])
    total = np.zeros((groups, out_channels // groups, rows_per_group), dtype=planes.dtype)
    for part in parts:          # in chunk order, whatever thread made each
        total += part
    return total.reshape(out_channels, channels // groups, *kernel_hw)
