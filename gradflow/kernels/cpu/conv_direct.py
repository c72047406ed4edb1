"""Direct convolution kernels (CPU, Numba): 3x3 stride 1, the hot path of FCN-style
networks, and 2x2 stride 1, which runs stride-2 kernels of up to 4x4 (space-to-depth).

Measured on the 2-vCPU AVX-512 (Zen 5) development machine, single thread, conv2d 3x3
x (8,32,64,64) -> 32 channels, forward+backward: im2col + OpenBLAS 37 ms, these kernels
12.8 ms (forward 3.9 ms), PyTorch (oneDNN) 10-17 ms (forward 3.0 ms) depending on page
faults in its allocator. The kernels themselves run at ~170 GFLOP/s, about the 512-bit
FMA peak of one core. What makes them fast, each point measured:

* Flattened padded planes. The input is copied once into zero-padded planes of row
  pitch `width` (the padded width), flattened to 1-D. Output pixel (y, x) then reads
  plane[q + i * width + j] with q = y * width + x, so one loop over q covers a block of
  whole rows with the taps at fixed offsets. The K - 1 columns per row past the output
  width are computed and dropped (3% extra work at width 64).
* The loop over q is innermost and holds all taps of 4 output channels: every input
  vector load feeds 4 fused multiply-adds, and LLVM vectorises it with 512-bit FMAs
  (2 or 3 channels per pass: no faster; 512-bit beat 256-bit vectors here).
* Where the output width is a multiple of the vector length, in 512-bit code (BANDS), 4
  output rows x 4 channels per pass instead (_taps4x4, inner loop over the columns of one
  row): each input vector load feeds up to 12 FMAs and 16 independent sums hide the FMA
  latency (forward 5.2 -> 3.4 ms; 2x4 or 4x2 outputs per pass: 3.8-4.1 ms; 8x4: no faster).
* The accumulators of a pass live in ONE scratch array at compile-time-constant
  distances (CHUNK, SLAB). LLVM has to check at run time that the stores do not overlap the
  loaded planes; at constant distances the stores form one check group, whereas 4
  separate arrays need more checks than LLVM allows, and it then silently gives up
  vectorising. The array starts on a 64-byte boundary (5-10% faster).
* Planes are read through views at literal offsets (row[q + 1], not plane[q + start + 1]):
  Numba's negative-index wraparound would otherwise put a select on every address and
  keep the loop scalar (measured 8x slower).
* fastmath without nnan/ninf: FMA contraction and reassociation (which the vectorised
  weight-gradient sums need) while NaN and inf still propagate as in PyTorch.

The gradient w.r.t. the input of a stride-1 convolution is this same forward kernel run
on the output gradient padded by (K - 1 - padding), with the weights flipped and their
two channel axes swapped; gradflow.kernels.cpu.conv prepares both.
"""
import numpy as np
from numba import njit, prange

from gradflow.kernels.cpu import WIDE_VECTORS

FASTMATH = {"contract", "reassoc", "nsz"}
CHUNK = 2048     # accumulator length per output channel: 4 x 2048 float32 = 32 KB stays in L1; 1024 was 3-12% slower
# The weight gradient sweeps a plane in spans of WEIGHT_SPAN positions, every input channel
# and kernel row per span, so that a span of its 4 gradient rows (24 KB in float32) and of
# the plane stay in a 32 KB L1 cache for all of them; one sweep over the whole plane
# streamed the gradient rows from L2 once per channel and row. Intel Xeon (AVX-512), 1
# thread, batch 16, whole sweep -> spans of 1536: 16 -> 16 at 64x64 4.06 -> 3.21 ms,
# 32 -> 32 at 32x32 4.41 -> 3.41, 32 -> 64 at 16x16 2.50 -> 1.90 (1024 was slower than
# 1536 and 2048 there, 3072 and more no faster than the whole sweep); AVX2 code 0-12% faster.
# conv_stride2's weight gradient likewise: (16,16,128,128) -> 32 8.05 -> 6.94 ms (AVX2 8.43 -> 7.61).
WEIGHT_SPAN = 1536
SLAB = 512       # _taps4x4 accumulator per (channel, row of the band): 16 x 512 float32 = 32 KB; 1024 was 30% slower
# The 4x4 bands keep 16 vector sums live: with AVX-512's 32 registers they beat the
# flattened kernels (forward 1 thread, AMD EPYC Zen 4: (8,32,64,64) -> 32 7.0 vs 7.8 ms);
# compiled for AVX2 (16 registers) the sums spill and they lost to them on every shape
# measured there (10.3 vs 9.1 ms; (32,64,16,16) -> 64 10.5 vs 9.8 ms; 4 channels x 2 rows
# per pass was slower still). So they run only in 512-bit code.
BANDS = WIDE_VECTORS


@njit(cache=True, parallel=True)
def pad_planes(x, planes, top, left, width):
    """planes[n // k, c, (n % k) * slot + (y + top) * width + left + x] = x[n, c, y, x], with
    k = N / len(planes) images side by side per plane and slot = planes.shape[2] / k
    (k = 1: one padded plane per image); nothing else is written.

    The caller zeroes `planes` once: the border is never written, so a reused buffer
    stays a correctly zero-padded copy."""
    n_images, channels, height, in_width = x.shape
    if n_images == 0:
        return
    images = n_images // planes.shape[0]
    slot = planes.shape[2] // images
    for block in prange(n_images * channels):
        n, c = block // channels, block % channels
        plane = planes[n // images, c, (n % images) * slot:]
        for y in range(height):
            row = plane[(y + top) * width + left:]
            source = x[n, c, y]
            for k in range(in_width):
                row[k] = source[k]


@njit(cache=True)
def _aligned_empty(length, dtype):
    """np.empty(length) starting on a 64-byte boundary: the accumulator stores are full
    512-bit vectors, and ones split across cache lines cost ~10% of the kernel's time."""
    raw = np.empty(length + 64, dtype=dtype)
    skip = (-raw.ctypes.data) % 64 // raw.itemsize
    return raw[skip:skip + length]


@njit(cache=True)
def even_chunks(total, most):
    """(count, size): the fewest chunks of at most `most` items that cover `total`, all
    about the same size. The threads share blocks, not work: equal blocks keep them
    busy alike (64 rows in chunks of at most 31: 22, 22, 20 rather than 31, 31, 2)."""
    count = max(1, (total + most - 1) // most)
    size = max(1, (total + count - 1) // count)
    return (total + size - 1) // size, size


@njit(cache=True)
def _band_chunks(bands, most):
    """(images, bands) per chunk of _conv_bands: whole images while they fit in `most`
    bands, else even chunks of one image's bands."""
    if bands <= most:
        return max(1, most // max(1, bands)), bands
    return 1, even_chunks(bands, most)[1]


@njit(inline="always")
def taps3x3(weight, o, c):
    """The 9 taps weight[o, c] as scalars, row by row, for the kernels to unpack into locals
    that stay in registers through a sweep. Indexed from the whole array: taking the view
    weight[o, c] first changed the kernels' machine code; this way it is the same as with
    the 9 loads written out in each kernel."""
    w = weight
    return (w[o, c, 0, 0], w[o, c, 0, 1], w[o, c, 0, 2], w[o, c, 1, 0], w[o, c, 1, 1], w[o, c, 1, 2],
            w[o, c, 2, 0], w[o, c, 2, 1], w[o, c, 2, 2])


@njit(cache=True, fastmath=FASTMATH)
def _taps4(plane, weight, o, c, start, width, length, acc):
    """acc[k * CHUNK + q] += sum_ij weight[o + k, c, i, j] * plane[start + q + i * width + j], k < 4."""
    r0 = plane[start:]
    r1 = plane[start + width:]
    r2 = plane[start + 2 * width:]
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = taps3x3(weight, o, c)
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = taps3x3(weight, o + 1, c)
    c0, c1, c2, c3, c4, c5, c6, c7, c8 = taps3x3(weight, o + 2, c)
    d0, d1, d2, d3, d4, d5, d6, d7, d8 = taps3x3(weight, o + 3, c)
    for q in range(length):
        x0, x1, x2 = r0[q], r0[q + 1], r0[q + 2]
        x3, x4, x5 = r1[q], r1[q + 1], r1[q + 2]
        x6, x7, x8 = r2[q], r2[q + 1], r2[q + 2]
        acc[q] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4 + a5 * x5 + a6 * x6 + a7 * x7 + a8 * x8
        acc[q + CHUNK] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4 + b5 * x5 + b6 * x6 + b7 * x7 + b8 * x8
        acc[q + 2 * CHUNK] += (c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3 + c4 * x4 + c5 * x5
                               + c6 * x6 + c7 * x7 + c8 * x8)
        acc[q + 3 * CHUNK] += (d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3 + d4 * x4 + d5 * x5
                               + d6 * x6 + d7 * x7 + d8 * x8)


@njit(cache=True, fastmath=FASTMATH)
def _taps1(plane, weight, o, c, start, width, length, acc):
    """acc[q] += sum_ij weight[o, c, i, j] * plane[start + q + i * width + j] (the channels left over)."""
    r0 = plane[start:]
    r1 = plane[start + width:]
    r2 = plane[start + 2 * width:]
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = taps3x3(weight, o, c)
    for q in range(length):
        acc[q] += (a0 * r0[q] + a1 * r0[q + 1] + a2 * r0[q + 2] + a3 * r1[q] + a4 * r1[q + 1]
                   + a5 * r1[q + 2] + a6 * r2[q] + a7 * r2[q + 1] + a8 * r2[q + 2])


def conv(planes, weight, bias, groups, width, out):
    """out[n, o, y, x] = bias[o] + sum_{c in o's group, i, j} weight[o, c, i, j] * plane_c[(y + i) * width + x + j].

    A stride-1 convolution with a 3x3 or 2x2 kernel. planes (N, C, L): zero-padded input
    planes of row pitch `width` <= CHUNK, L >= (OH + K - 1) * width + K - 1; weight
    (O, C / groups, K, K); out (N, O, OH, OW) with OW = width - K + 1.

    3x3 with the output width a multiple of the 512-bit vector length, where the code has
    512-bit vectors (BANDS): whole blocks of 4 channels x 4 rows go through _taps4x4
    (forward at (8,32,64,64) -> 32: 5.2 -> 3.4 ms), the rows and channels left over
    through the flattened kernels. Other widths take the flattened kernels only:
    _taps4x4's scalar remainder columns made widths 17-28 up to 1.5x slower, widths 4-12
    were 1.2-1.5x slower."""
    out_h, out_w = out.shape[2], out.shape[3]
    out_per_group = out.shape[1] // groups
    banded_rows = banded_channels = 0
    if BANDS and weight.shape[2] == 3 and 0 < out_w <= SLAB and out_w % (64 // planes.itemsize) == 0:
        banded_rows, banded_channels = out_h - out_h % 4, out_per_group - out_per_group % 4
        if banded_rows > 0 and banded_channels > 0:
            _conv_bands(planes, weight, bias, groups, width, banded_rows, banded_channels, out)
        else:
            banded_rows = banded_channels = 0
    if banded_rows > 0 and banded_channels < out_per_group:
        _conv_flat(planes, weight, bias, groups, width, 0, banded_rows, banded_channels, out)
    if banded_rows < out_h:
        _conv_flat(planes, weight, bias, groups, width, banded_rows, out_h, 0, out)


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _conv_bands(planes, weight, bias, groups, width, rows, channels, out):
    """conv for output rows [0, rows) and the first `channels` channels of each group
    (both multiples of 4), a band of 4 rows x 4 channels at a time (3x3 only). A chunk
    is up to SLAB // out_w bands: a few rows of one image, or several small images
    (16x16 at batch 8: one call per 8 images instead of per image, 20% faster).

    Parallel over blocks (chunk of images, chunk of bands, group, 4 channels), the
    channel blocks of one chunk adjacent so that a thread's blocks share their input
    planes in L2. Every block writes its own outputs, each summed in the same order
    whatever thread runs it."""
    n_images, out_w = out.shape[0], out.shape[3]
    in_per_group = weight.shape[1]
    out_per_group = out.shape[1] // groups
    images_per_chunk, bands_per_chunk = _band_chunks(rows // 4, SLAB // out_w)
    rows_per_chunk = 4 * bands_per_chunk
    image_chunks = (n_images + images_per_chunk - 1) // images_per_chunk
    row_chunks = (rows + rows_per_chunk - 1) // rows_per_chunk
    channel_blocks = channels // 4
    for block in prange(image_chunks * row_chunks * groups * channel_blocks):
        o_block = block % channel_blocks
        g = block // channel_blocks % groups
        y0 = block // (channel_blocks * groups) % row_chunks * rows_per_chunk
        n0 = block // (channel_blocks * groups * row_chunks) * images_per_chunk
        o = g * out_per_group + 4 * o_block
        images = min(images_per_chunk, n_images - n0)
        bands = min(bands_per_chunk, (rows - y0) // 4)
        length = images * bands * out_w
        acc = _aligned_empty(16 * SLAB, planes.dtype)
        for slab in range(16):
            acc[slab * SLAB:slab * SLAB + length] = bias[o + slab // 4]
        for c in range(in_per_group):
            _taps4x4(planes, g * in_per_group + c, weight, o, c, n0, images, y0 * width, width, out_w,
                     bands, acc)
        for image in range(images):
            for k in range(4):
                for band in range(bands):
                    for r in range(4):
                        begin = (4 * k + r) * SLAB + (image * bands + band) * out_w
                        out[n0 + image, o + k, y0 + 4 * band + r, :] = acc[begin:begin + out_w]


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _conv_flat(planes, weight, bias, groups, width, row_begin, row_end, channel_begin, out):
    """conv for output rows [row_begin, row_end) and channels from channel_begin on in each
    group, through the flattened kernels: any width, any channel count. Parallel over
    blocks (image, chunk of rows, group, up to 4 channels), as _conv_bands."""
    n_images, out_channels, out_h, out_w = out.shape
    in_per_group = weight.shape[1]
    three = weight.shape[2] == 3
    out_per_group = out_channels // groups
    row_chunks, rows_per_chunk = even_chunks(row_end - row_begin, CHUNK // width)
    channel_blocks = (out_per_group - channel_begin + 3) // 4
    for block in prange(n_images * row_chunks * groups * channel_blocks):
        o_block = block % channel_blocks
        g = block // channel_blocks % groups
        y0 = row_begin + block // (channel_blocks * groups) % row_chunks * rows_per_chunk
        n = block // (channel_blocks * groups * row_chunks)
        rows = min(rows_per_chunk, row_end - y0)
        length = rows * width
        start = y0 * width
        group_end = (g + 1) * out_per_group
        o = g * out_per_group + channel_begin + 4 * o_block
        count = min(4, group_end - o)
        acc = _aligned_empty(4 * CHUNK, planes.dtype)
        for k in range(count):
            acc[k * CHUNK:k * CHUNK + length] = bias[o + k]
        for c in range(in_per_group):
            plane = planes[n, g * in_per_group + c]
            if count == 4 and three:
                _taps4(plane, weight, o, c, start, width, length, acc)
            elif count == 4:
                _taps4_2x2(plane, weight, o, c, start, width, length, acc)
            else:
                for k in range(count):
                    if three:
                        _taps1(plane, weight, o + k, c, start, width, length, acc[k * CHUNK:])
                    else:
                        _taps1_2x2(plane, weight, o + k, c, start, width, length, acc[k * CHUNK:])
        for k in range(count):
            for r in range(rows):
                begin = k * CHUNK + r * width
                out[n, o + k, y0 + r, :] = acc[begin:begin + out_w]


@njit(cache=True, fastmath=FASTMATH)
def _taps4x4(planes, channel, weight, o, c, first_image, images, start, width, out_w, bands, acc):
    """acc[(4k + r) * SLAB + (m * bands + band) * out_w + x]
        += sum_ij weight[o + k, c, i, j] * plane[top + (r + i) * width + x + j]
    with plane = planes[first_image + m, channel], top = start + 4 * band * width,
    for k, r < 4, m < images, band < bands, x < out_w: 4 channels x 4 rows per pass."""
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = taps3x3(weight, o, c)
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = taps3x3(weight, o + 1, c)
    c0, c1, c2, c3, c4, c5, c6, c7, c8 = taps3x3(weight, o + 2, c)
    d0, d1, d2, d3, d4, d5, d6, d7, d8 = taps3x3(weight, o + 3, c)
    for image in range(images):
        plane = planes[first_image + image, channel]
        for band in range(bands):
            top = start + 4 * band * width
            r0 = plane[top:]
            r1 = plane[top + 1 * width:]
            r2 = plane[top + 2 * width:]
            r3 = plane[top + 3 * width:]
            r4 = plane[top + 4 * width:]
            r5 = plane[top + 5 * width:]
            block = acc[(image * bands + band) * out_w:]
            for x in range(out_w):
                x00, x01, x02 = r0[x], r0[x + 1], r0[x + 2]
                x10, x11, x12 = r1[x], r1[x + 1], r1[x + 2]
                x20, x21, x22 = r2[x], r2[x + 1], r2[x + 2]
                x30, x31, x32 = r3[x], r3[x + 1], r3[x + 2]
                x40, x41, x42 = r4[x], r4[x + 1], r4[x + 2]
                x50, x51, x52 = r5[x], r5[x + 1], r5[x + 2]
                block[x] += (a0 * x00 + a1 * x01 + a2 * x02 + a3 * x10 + a4 * x11
                             + a5 * x12 + a6 * x20 + a7 * x21 + a8 * x22)
                block[x + SLAB] += (a0 * x10 + a1 * x11 + a2 * x12 + a3 * x20 + a4 * x21
                                    + a5 * x22 + a6 * x30 + a7 * x31 + a8 * x32)
                block[x + 2 * SLAB] += (a0 * x20 + a1 * x21 + a2 * x22 + a3 * x30 + a4 * x31
                                        + a5 * x32 + a6 * x40 + a7 * x41 + a8 * x42)
                block[x + 3 * SLAB] += (a0 * x30 + a1 * x31 + a2 * x32 + a3 * x40 + a4 * x41
                                        + a5 * x42 + a6 * x50 + a7 * x51 + a8 * x52)
                block[x + 4 * SLAB] += (b0 * x00 + b1 * x01 + b2 * x02 + b3 * x10 + b4 * x11
                                        + b5 * x12 + b6 * x20 + b7 * x21 + b8 * x22)
                block[x + 5 * SLAB] += (b0 * x10 + b1 * x11 + b2 * x12 + b3 * x20 + b4 * x21
                                        + b5 * x22 + b6 * x30 + b7 * x31 + b8 * x32)
                block[x + 6 * SLAB] += (b0 * x20 + b1 * x21 + b2 * x22 + b3 * x30 + b4 * x31
                                        + b5 * x32 + b6 * x40 + b7 * x41 + b8 * x42)
                block[x + 7 * SLAB] += (b0 * x30 + b1 * x31 + b2 * x32 + b3 * x40 + b4 * x41
                                        + b5 * x42 + b6 * x50 + b7 * x51 + b8 * x52)
                block[x + 8 * SLAB] += (c0 * x00 + c1 * x01 + c2 * x02 + c3 * x10 + c4 * x11
                                        + c5 * x12 + c6 * x20 + c7 * x21 + c8 * x22)
                block[x + 9 * SLAB] += (c0 * x10 + c1 * x11 + c2 * x12 + c3 * x20 + c4 * x21
                                        + c5 * x22 + c6 * x30 + c7 * x31 + c8 * x32)
                block[x + 10 * SLAB] += (c0 * x20 + c1 * x21 + c2 * x22 + c3 * x30 + c4 * x31
                                         + c5 * x32 + c6 * x40 + c7 * x41 + c8 * x42)
                block[x + 11 * SLAB] += (c0 * x30 + c1 * x31 + c2 * x32 + c3 * x40 + c4 * x41
                                         + c5 * x42 + c6 * x50 + c7 * x51 + c8 * x52)
                block[x + 12 * SLAB] += (d0 * x00 + d1 * x01 + d2 * x02 + d3 * x10 + d4 * x11
                                         + d5 * x12 + d6 * x20 + d7 * x21 + d8 * x22)
                block[x + 13 * SLAB] += (d0 * x10 + d1 * x11 + d2 * x12 + d3 * x20 + d4 * x21
                                         + d5 * x22 + d6 * x30 + d7 * x31 + d8 * x32)
                block[x + 14 * SLAB] += (d0 * x20 + d1 * x21 + d2 * x22 + d3 * x30 + d4 * x31
                                         + d5 * x32 + d6 * x40 + d7 * x41 + d8 * x42)
                block[x + 15 * SLAB] += (d0 * x30 + d1 * x31 + d2 * x32 + d3 * x40 + d4 * x41
                                         + d5 * x42 + d6 * x50 + d7 * x51 + d8 * x52)


@njit(cache=True, fastmath=FASTMATH)
def _taps4_2x2(plane, weight, o, c, start, width, length, acc):
    """_taps4 for a 2x2 kernel."""
    r0 = plane[start:]
    r1 = plane[start + width:]
    w = weight
    a0, a1, a2, a3 = w[o, c, 0, 0], w[o, c, 0, 1], w[o, c, 1, 0], w[o, c, 1, 1]
    b0, b1, b2, b3 = w[o + 1, c, 0, 0], w[o + 1, c, 0, 1], w[o + 1, c, 1, 0], w[o + 1, c, 1, 1]
    c0, c1, c2, c3 = w[o + 2, c, 0, 0], w[o + 2, c, 0, 1], w[o + 2, c, 1, 0], w[o + 2, c, 1, 1]
    d0, d1, d2, d3 = w[o + 3, c, 0, 0], w[o + 3, c, 0, 1], w[o + 3, c, 1, 0], w[o + 3, c, 1, 1]
    for q in range(length):
        x0, x1, x2, x3 = r0[q], r0[q + 1], r1[q], r1[q + 1]
        acc[q] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
        acc[q + CHUNK] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3
        acc[q + 2 * CHUNK] += c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3
        acc[q + 3 * CHUNK] += d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3


@njit(cache=True, fastmath=FASTMATH)
def _taps1_2x2(plane, weight, o, c, start, width, length, acc):
    r0 = plane[start:]
    r1 = plane[start + width:]
    a0, a1, a2, a3 = weight[o, c, 0, 0], weight[o, c, 0, 1], weight[o, c, 1, 0], weight[o, c, 1, 1]
    for q in range(length):
        acc[q] += a0 * r0[q] + a1 * r0[q + 1] + a2 * r1[q] + a3 * r1[q + 1]


@njit(cache=True, fastmath=FASTMATH)
def weight_row_sums(grads, o, offset, tap0, tap1, tap2, length, grad_weight, c, i):
    """grad_weight[o + k, c, i, j] += sum_q grads[o + k, offset + q] * tap_j[q], k < 4, j < 3:
    one kernel row of 4 channels' 3x3 weight gradient, 12 sums in one pass over q.

    Each pass loads 3 input and 4 gradient vectors per 12 FMAs, and its 12 sums fit in
    AVX2's 16 vector registers; 2 channels x 9 taps (18 sums) at once spill there:
    AMD EPYC Zen 3, 1 thread, batch 8, 16 -> 16 at 64x64 4.4 -> 1.9 ms, 32 -> 32 at 32x32
    6.3 -> 2.7 ms, 64 -> 64 at 16x16 7.4 -> 3.1 ms. conv_stride2 uses it with taps on phases."""
    ga, gb = grads[o, offset:], grads[o + 1, offset:]
    gc, gd = grads[o + 2, offset:], grads[o + 3, offset:]
    zero = grad_weight.dtype.type(0)
    a0 = a1 = a2 = b0 = b1 = b2 = c0 = c1 = c2 = d0 = d1 = d2 = zero
    for q in range(length):
        x0, x1, x2 = tap0[q], tap1[q], tap2[q]
        u = ga[q]
        a0 += u * x0; a1 += u * x1; a2 += u * x2                                    # noqa: E702
        u = gb[q]
        b0 += u * x0; b1 += u * x1; b2 += u * x2                                    # noqa: E702
        u = gc[q]
        c0 += u * x0; c1 += u * x1; c2 += u * x2                                    # noqa: E702
        u = gd[q]
        d0 += u * x0; d1 += u * x1; d2 += u * x2                                    # noqa: E702
    gw = grad_weight
    gw[o, c, i, 0] += a0; gw[o, c, i, 1] += a1; gw[o, c, i, 2] += a2                # noqa: E702
    gw[o + 1, c, i, 0] += b0; gw[o + 1, c, i, 1] += b1; gw[o + 1, c, i, 2] += b2    # noqa: E702
    gw[o + 2, c, i, 0] += c0; gw[o + 2, c, i, 1] += c1; gw[o + 2, c, i, 2] += c2    # noqa: E702
    gw[o + 3, c, i, 0] += d0; gw[o + 3, c, i, 1] += d1; gw[o + 3, c, i, 2] += d2    # noqa: E702


@njit(cache=True, fastmath=FASTMATH)
def _weight_taps1(ga, plane, width, length, grad_weight, o, c):
    r0 = plane
    r1 = plane[width:]
    r2 = plane[2 * width:]
    zero = plane.dtype.type(0)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = zero
    for q in range(length):
        u = ga[q]
        a0 += u * r0[q]; a1 += u * r0[q + 1]; a2 += u * r0[q + 2]                 # noqa: E702
        a3 += u * r1[q]; a4 += u * r1[q + 1]; a5 += u * r1[q + 2]                 # noqa: E702
        a6 += u * r2[q]; a7 += u * r2[q + 1]; a8 += u * r2[q + 2]                 # noqa: E702
    gw = grad_weight
    gw[o, c, 0, 0] += a0; gw[o, c, 0, 1] += a1; gw[o, c, 0, 2] += a2              # noqa: E702
    gw[o, c, 1, 0] += a3; gw[o, c, 1, 1] += a4; gw[o, c, 1, 2] += a5              # noqa: E702
    gw[o, c, 2, 0] += a6; gw[o, c, 2, 1] += a7; gw[o, c, 2, 2] += a8              # noqa: E702


@njit(cache=True, fastmath=FASTMATH)
def _weight_rows4_2x2(grads, o, offset, plane, width, length, grad_weight, c):
    """grad_weight[o + k, c, i, j] += sum_q grads[o + k, offset + q] * plane[q + i * width + j],
    k < 4, 2x2: as weight_row_sums, a pass of 8 sums per kernel row (all 16 at once spilled
    in AVX2 code: 1.15-1.4x slower on Zen 3)."""
    ga, gb = grads[o, offset:], grads[o + 1, offset:]
    gc, gd = grads[o + 2, offset:], grads[o + 3, offset:]
    zero = plane.dtype.type(0)
    gw = grad_weight
    for i in range(2):
        row = plane[i * width:]
        a0 = a1 = b0 = b1 = c0 = c1 = d0 = d1 = zero
        for q in range(length):
            x0, x1 = row[q], row[q + 1]
            u = ga[q]
            a0 += u * x0; a1 += u * x1                                              # noqa: E702
            u = gb[q]
            b0 += u * x0; b1 += u * x1                                              # noqa: E702
            u = gc[q]
            c0 += u * x0; c1 += u * x1                                              # noqa: E702
            u = gd[q]
            d0 += u * x0; d1 += u * x1                                              # noqa: E702
        gw[o, c, i, 0] += a0; gw[o, c, i, 1] += a1                                  # noqa: E702
        gw[o + 1, c, i, 0] += b0; gw[o + 1, c, i, 1] += b1                          # noqa: E702
        gw[o + 2, c, i, 0] += c0; gw[o + 2, c, i, 1] += c1                          # noqa: E702
        gw[o + 3, c, i, 0] += d0; gw[o + 3, c, i, 1] += d1                          # noqa: E702


@njit(cache=True, fastmath=FASTMATH)
def _weight_taps1_2x2(ga, plane, width, length, grad_weight, o, c):
    r0 = plane
    r1 = plane[width:]
    zero = plane.dtype.type(0)
    a0 = a1 = a2 = a3 = zero
    for q in range(length):
        u = ga[q]
        a0 += u * r0[q]; a1 += u * r0[q + 1]; a2 += u * r1[q]; a3 += u * r1[q + 1]  # noqa: E702
    grad_weight[o, c, 0, 0] += a0
    grad_weight[o, c, 0, 1] += a1
    grad_weight[o, c, 1, 0] += a2
    grad_weight[o, c, 1, 1] += a3


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def weight_grad(planes, grads, offset, groups, width, length, grad_weight):
    """grad_weight[o, c, i, j] = sum_n sum_q grads[n, o, offset + q] * planes[n, c', q + i * width + j],
    q < length, c' the input channel c of o's group; 3x3 or 2x2 kernels.

    grads holds the output gradient with row pitch `width` and zeros wherever q is not an
    output pixel (the columns past the output width; with several images side by side
    per plane, the rows between them), so the flattened sum skips those; planes as for conv.

    Parallel over blocks (plane, group, 4 output channels), each summing into its own
    slice of per-plane partial gradients, which are then added plane after plane: the
    same sums in the same order at any thread count."""
    out_channels, in_per_group = grad_weight.shape[0], grad_weight.shape[1]
    three = grad_weight.shape[2] == 3
    unit = 4
    out_per_group = out_channels // groups
    n_planes = planes.shape[0]
    units = (out_per_group + unit - 1) // unit
    partial = np.zeros((n_planes,) + grad_weight.shape, dtype=grad_weight.dtype)
    for block in prange(n_planes * groups * units):     # plane outermost: a thread's planes stay in L2
        n = block // (groups * units)
        g = block // units % groups
        first = g * out_per_group + block % units * unit
        end = min(first + unit, (g + 1) * out_per_group)
        o = first
        if end - first == unit:
            for q0 in range(0, length, WEIGHT_SPAN):      # see WEIGHT_SPAN
                span = min(WEIGHT_SPAN, length - q0)
                for c in range(in_per_group):
                    plane = planes[n, g * in_per_group + c, q0:]
                    if three:
                        for i in range(3):
                            row = plane[i * width:]
                            weight_row_sums(grads[n], o, offset + q0, row, row[1:], row[2:], span, partial[n], c, i)
                    else:
                        _weight_rows4_2x2(grads[n], o, offset + q0, plane, width, span, partial[n], c)
            o = end
        while o < end:
            for c in range(in_per_group):
                plane = planes[n, g * in_per_group + c]
                if three:
                    _weight_taps1(grads[n, o, offset:], plane, width, length, partial[n], o, c)
                else:
                    _weight_taps1_2x2(grads[n, o, offset:], plane, width, length, partial[n], o, c)
            o += 1
    sum_planes(partial, grad_weight)


@njit(cache=True, parallel=True)
def sum_planes(partial, total):
    """total = partial[0] + partial[1] + ..., added in that order (parallel over elements)."""
    flat_total = total.reshape(total.size)
    if partial.shape[0] == 0:       # an empty batch
        flat_total[:] = 0
        return
    flat_partial = partial.reshape(partial.shape[0], total.size)
    for e in prange(total.size):
        value = flat_partial[0, e]
        for p in range(1, flat_partial.shape[0]):
            value += flat_partial[p, e]
        flat_total[e] = value


# ---- stride 2 as stride 1: space-to-depth --------------------------------------------------
# A stride-2 convolution with a kernel of at most 4x4 is a stride-1 2x2 convolution over
# the 4 phases of the padded input, xpad[2m + a, 2j + b] for a, b in {0, 1}, stacked as
# channels c * 4 + a * 2 + b, with weight[o, c, 2u + a, 2v + b] as the 2x2 phase weights.
# Its input gradient is the matching full 2x2 correlation, put back by depth_to_space.

@njit(cache=True, parallel=True)
def space_to_depth(x, planes, top, left, rows, width):
    """planes[n, c * 4 + a * 2 + b, m * width + j] = xpad[n, c, 2m + a, 2j + b] for m < rows,
    j < width, with xpad = x zero-padded by top rows and left columns. Like pad_planes,
    only the positions inside x are written: the rest of the reused buffer stays zero.

    One pass per input row: its even and odd columns go to the two column phases in one
    loop, which LLVM vectorises as an interleaved load (a loop per phase reading every
    other element ran scalar: 1.0 ms for (8, 32, 64, 64), now about 0.4)."""
    n_images, channels, height, in_width = x.shape
    even_phase, odd_phase = left % 2, 1 - left % 2          # column phase of x columns 2k, 2k + 1
    even_shift, odd_shift = left // 2, (left + 1) // 2      # and their phase column minus k
    pairs = max(0, min(in_width // 2, width - odd_shift, width - even_shift))
    for block in prange(n_images * channels):
        n, c = block // channels, block % channels
        for y in range(height):
            a, m = (y + top) % 2, (y + top) // 2
            if m >= rows:
                break
            source = x[n, c, y]
            evens = planes[n, c * 4 + a * 2 + even_phase, m * width + even_shift:]
            odds = planes[n, c * 4 + a * 2 + odd_phase, m * width + odd_shift:]
            for k in range(pairs):
                evens[k] = source[2 * k]
                odds[k] = source[2 * k + 1]
            for column in range(2 * pairs, in_width):        # an odd width's last column; clipped columns
                j = (column + left) // 2
                if j < width:
                    planes[n, c * 4 + a * 2 + (column + left) % 2, m * width + j] = source[column]


@njit(cache=True, parallel=True)
def depth_to_space(phases, top, left, bias, out):
    """out[n, c, y, x] = bias[c] + phases[n, c * 4 + a * 2 + b, m, j] where y + top = 2m + a
    and x + left = 2j + b; bias[c] alone where (m, j) falls outside the phase planes. Each
    output row is filled from its two column phases in one interleaving loop (as
    space_to_depth); the bias rides along (for (8, 64, 33, 33) phases -> (8, 16, 64, 64),
    0.31 / 0.22 ms at 1 / 2 threads with a separate NumPy pass, 0.17 / 0.09 ms fused)."""
    n_images, channels, height, width = out.shape
    rows, columns = phases.shape[2], phases.shape[3]
    even_phase, odd_phase = left % 2, 1 - left % 2
    even_shift, odd_shift = left // 2, (left + 1) // 2
    pairs = max(0, min(width // 2, columns - odd_shift, columns - even_shift))
    for block in prange(n_images * channels):
        n, c = block // channels, block % channels
        shift = bias[c]
        for y in range(height):
            m, a = (y + top) // 2, (y + top) % 2
            target = out[n, c, y]
            if m >= rows:
                target[:] = shift
                continue
            evens = phases[n, c * 4 + a * 2 + even_phase, m, even_shift:]
            odds = phases[n, c * 4 + a * 2 + odd_phase, m, odd_shift:]
            for k in range(pairs):
                target[2 * k] = evens[k] + shift
                target[2 * k + 1] = odds[k] + shift
            for x in range(2 * pairs, width):
                j, b = (x + left) // 2, (x + left) % 2
                target[x] = (phases[n, c * 4 + a * 2 + b, m, j] if j < columns else 0) + shift
