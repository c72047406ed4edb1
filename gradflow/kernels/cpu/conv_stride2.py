"""Direct 3x3 stride-2 convolution (CPU, Numba), on the space-to-depth phases of the input.

With the padded input split into its 4 phases P_ab[m, j] = xpad[2m + a, 2j + b]
(conv_direct.space_to_depth, channel c * 4 + a * 2 + b), a stride-2 tap (i, j) of output
(y, x) reads P_{i%2, j%2}[y + i // 2, x + j // 2]: a stride-1 access. So the same
flattened-plane kernels as conv_direct apply (see there for why they are fast), with the
9 taps spread over 4 planes and every tap doing real work. Running the phases through the
2x2 kernel instead multiplies 7 of 16 taps by zero: measured 20% slower than im2col.
"""
import numpy as np
from numba import njit, prange

from gradflow.kernels.cpu.conv_direct import (CHUNK, FASTMATH, WEIGHT_SPAN, _aligned_empty, even_chunks, sum_planes,
                                             taps3x3, weight_row_sums)


@njit(cache=True, fastmath=FASTMATH)
def _taps4(phases, weight, o, c, start, width, length, acc):
    """acc[k * CHUNK + q] += sum_ij weight[o + k, c, i, j] * (tap (i, j) of position start + q), k < 4.

    phases: the 4 phase planes of one input channel, (4, L)."""
    e0 = phases[0, 0, start:]               # P00, rows m and m + 1: taps (0,0) (0,2) and (2,0) (2,2)
    e1 = phases[0, 0, start + width:]
    f0 = phases[0, 1, start:]               # P01: taps (0,1) and (2,1)
    f1 = phases[0, 1, start + width:]
    g0 = phases[0, 2, start:]               # P10: taps (1,0) (1,2)
    h0 = phases[0, 3, start:]               # P11: tap (1,1)
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = taps3x3(weight, o, c)
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = taps3x3(weight, o + 1, c)
    c0, c1, c2, c3, c4, c5, c6, c7, c8 = taps3x3(weight, o + 2, c)
    d0, d1, d2, d3, d4, d5, d6, d7, d8 = taps3x3(weight, o + 3, c)
    for q in range(length):
        x0, x1, x2 = e0[q], f0[q], e0[q + 1]
        x3, x4, x5 = g0[q], h0[q], g0[q + 1]
        x6, x7, x8 = e1[q], f1[q], e1[q + 1]
        acc[q] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4 + a5 * x5 + a6 * x6 + a7 * x7 + a8 * x8
        acc[q + CHUNK] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4 + b5 * x5 + b6 * x6 + b7 * x7 + b8 * x8
        acc[q + 2 * CHUNK] += (c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3 + c4 * x4 + c5 * x5
                               + c6 * x6 + c7 * x7 + c8 * x8)
        acc[q + 3 * CHUNK] += (d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3 + d4 * x4 + d5 * x5
                               + d6 * x6 + d7 * x7 + d8 * x8)


@njit(cache=True, fastmath=FASTMATH)
def _taps1(phases, weight, o, c, start, width, length, acc):
    e0 = phases[0, 0, start:]
    e1 = phases[0, 0, start + width:]
    f0 = phases[0, 1, start:]
    f1 = phases[0, 1, start + width:]
    g0 = phases[0, 2, start:]
    h0 = phases[0, 3, start:]
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = taps3x3(weight, o, c)
    for q in range(length):
        acc[q] += (a0 * e0[q] + a1 * f0[q] + a2 * e0[q + 1] + a3 * g0[q] + a4 * h0[q] + a5 * g0[q + 1]
                   + a6 * e1[q] + a7 * f1[q] + a8 * e1[q + 1])


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def conv(phases, weight, bias, groups, width, out):
    """out[n, o, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * xpad[n, c', 2y + i, 2x + j].

    phases (N, C, 4, L): space_to_depth of the padded input with row pitch `width` =
    OW + 1 and at least OH + 1 rows (plus 1 element); weight (O, C / groups, 3, 3).
    Parallel over blocks (image, chunk of rows, group, up to 4 channels), each writing
    its own outputs."""
    n_images, out_channels, out_h, out_w = out.shape
    in_per_group = weight.shape[1]
    out_per_group = out_channels // groups
    row_chunks, rows_per_chunk = even_chunks(out_h, CHUNK // width)
    channel_blocks = (out_per_group + 3) // 4
    for block in prange(n_images * row_chunks * groups * channel_blocks):
        o_block = block % channel_blocks
        g = block // channel_blocks % groups
        y0 = block // (channel_blocks * groups) % row_chunks * rows_per_chunk
        n = block // (channel_blocks * groups * row_chunks)
        rows = min(rows_per_chunk, out_h - y0)
        length = rows * width
        start = y0 * width
        o = g * out_per_group + 4 * o_block
        count = min(4, (g + 1) * out_per_group - o)
        acc = _aligned_empty(4 * CHUNK, phases.dtype)
        for k in range(count):
            acc[k * CHUNK:k * CHUNK + length] = bias[o + k]
        for c in range(in_per_group):
            planes = phases[n, g * in_per_group + c:]
            if count == 4:
                _taps4(planes, weight, o, c, start, width, length, acc)
            else:
                for k in range(count):
                    _taps1(planes, weight, o + k, c, start, width, length, acc[k * CHUNK:])
        for k in range(count):
            for r in range(rows):
                begin = k * CHUNK + r * width
                out[n, o + k, y0 + r, :] = acc[begin:begin + out_w]


# ---- input gradient: the adjoint, a gather into the 4 phases of the padded input
# (measured 3.3-4.1 ms for the bench/ stride-2 workload, col2im + BLAS 4.5)

PHASE_CHUNK = 1024     # 2 channels x 4 phases x 1024 float32 = 32 KB of accumulators, in L1


@njit(cache=True, fastmath=FASTMATH)
def _adjoint_taps2(rows, weight, o, c, start, width, length, acc):
    """For input channels c, c + 1 (k) and phases ab: acc[(k * 4 + ab) * PHASE_CHUNK + q] +=
    sum over the taps (i, j) of phase ab of weight[o, c + k, i, j] * grad[o, m - i // 2, x - j // 2].

    rows: the output gradient of channel o zero-padded by 1 on every side, flattened with
    pitch `width`; position q = m * width + x of the phase planes reads it at q, q + 1
    (row m - 1 of the gradient) and q + width, q + width + 1 (row m)."""
    r0 = rows[start:]
    r1 = rows[start + width:]
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = taps3x3(weight, o, c)
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = taps3x3(weight, o, c + 1)
    P = PHASE_CHUNK
    for q in range(length):
        u, v = r1[q + 1], r1[q]          # gradient row m:     taps i in {0, 1} at column x and x - 1
        s, t = r0[q + 1], r0[q]          # gradient row m - 1: taps i = 2
        acc[q] += a0 * u + a2 * v + a6 * s + a8 * t
        acc[q + P] += a1 * u + a7 * s
        acc[q + 2 * P] += a3 * u + a5 * v
        acc[q + 3 * P] += a4 * u
        acc[q + 4 * P] += b0 * u + b2 * v + b6 * s + b8 * t
        acc[q + 5 * P] += b1 * u + b7 * s
        acc[q + 6 * P] += b3 * u + b5 * v
        acc[q + 7 * P] += b4 * u


@njit(cache=True, fastmath=FASTMATH)
def _adjoint_taps2x2(rows_a, rows_b, weight, o, c, start, width, length, acc):
    """_adjoint_taps2 for output channels o and o + 1 at once: half the accumulator traffic
    (measured 5-20% faster)."""
    r0 = rows_a[start:]
    r1 = rows_a[start + width:]
    s0 = rows_b[start:]
    s1 = rows_b[start + width:]
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = taps3x3(weight, o, c)
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = taps3x3(weight, o, c + 1)
    c0, c1, c2, c3, c4, c5, c6, c7, c8 = taps3x3(weight, o + 1, c)
    d0, d1, d2, d3, d4, d5, d6, d7, d8 = taps3x3(weight, o + 1, c + 1)
    P = PHASE_CHUNK
    for q in range(length):
        u, v, s, t = r1[q + 1], r1[q], r0[q + 1], r0[q]
        u2, v2, s2, t2 = s1[q + 1], s1[q], s0[q + 1], s0[q]
        acc[q] += a0 * u + a2 * v + a6 * s + a8 * t + c0 * u2 + c2 * v2 + c6 * s2 + c8 * t2
        acc[q + P] += a1 * u + a7 * s + c1 * u2 + c7 * s2
        acc[q + 2 * P] += a3 * u + a5 * v + c3 * u2 + c5 * v2
        acc[q + 3 * P] += a4 * u + c4 * u2
        acc[q + 4 * P] += b0 * u + b2 * v + b6 * s + b8 * t + d0 * u2 + d2 * v2 + d6 * s2 + d8 * t2
        acc[q + 5 * P] += b1 * u + b7 * s + d1 * u2 + d7 * s2
        acc[q + 6 * P] += b3 * u + b5 * v + d3 * u2 + d5 * v2
        acc[q + 7 * P] += b4 * u + d4 * u2


@njit(cache=True, fastmath=FASTMATH)
def _adjoint_taps1(rows, weight, o, c, start, width, length, acc):
    r0 = rows[start:]
    r1 = rows[start + width:]
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = taps3x3(weight, o, c)
    P = PHASE_CHUNK
    for q in range(length):
        u, v = r1[q + 1], r1[q]
        s, t = r0[q + 1], r0[q]
        acc[q] += a0 * u + a2 * v + a6 * s + a8 * t
        acc[q + P] += a1 * u + a7 * s
        acc[q + 2 * P] += a3 * u + a5 * v
        acc[q + 3 * P] += a4 * u


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def phase_grad(grads, weight, groups, width, out):
    """out[n, c, ab, m, x]: the gradient of the phase planes of conv's input, from the output
    gradient zero-padded by 1 on every side (grads (N, O, L), row pitch `width` = OW + 2).
    out (N, C, 4, OH + 1, OW + 1); depth_to_space turns it into the input gradient.
    Parallel over blocks (image, chunk of rows, group, 2 input channels), each summing
    over the output channels in order into its own outputs."""
    n_images, channels, _, out_h, out_w = out.shape
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    out_per_group = out_channels // groups
    row_chunks, rows_per_chunk = even_chunks(out_h, PHASE_CHUNK // width)
    channel_blocks = (in_per_group + 1) // 2
    for block in prange(n_images * row_chunks * groups * channel_blocks):
        c = 2 * (block % channel_blocks)
        g = block // channel_blocks % groups
        y0 = block // (channel_blocks * groups) % row_chunks * rows_per_chunk
        n = block // (channel_blocks * groups * row_chunks)
        rows = min(rows_per_chunk, out_h - y0)
        length = rows * width
        start = y0 * width
        count = min(2, in_per_group - c)
        acc = _aligned_empty(8 * PHASE_CHUNK, grads.dtype)
        acc[:] = 0
        group_end = (g + 1) * out_per_group
        for o in range(g * out_per_group, group_end, 2):
            if count == 2 and o + 1 < group_end:
                _adjoint_taps2x2(grads[n, o], grads[n, o + 1], weight, o, c, start, width, length, acc)
                continue
            for oo in range(o, min(o + 2, group_end)):
                if count == 2:
                    _adjoint_taps2(grads[n, oo], weight, oo, c, start, width, length, acc)
                else:
                    _adjoint_taps1(grads[n, oo], weight, oo, c, start, width, length, acc)
        for k in range(count):
            for phase in range(4):
                for r in range(rows):
                    begin = (k * 4 + phase) * PHASE_CHUNK + r * width
                    out[n, g * in_per_group + c + k, phase, y0 + r, :] = acc[begin:begin + out_w]


# ---- weight gradient --------------------------------------------------------------------

@njit(cache=True, fastmath=FASTMATH)
def _weight_taps1(ga, phases, width, length, grad_weight, o, c):
    e0 = phases[0]
    e1 = phases[0, width:]
    f0 = phases[1]
    f1 = phases[1, width:]
    g0 = phases[2]
    h0 = phases[3]
    zero = phases.dtype.type(0)
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = zero
    for q in range(length):
        u = ga[q]
        a0 += u * e0[q]; a1 += u * f0[q]; a2 += u * e0[q + 1]                     # noqa: E702
        a3 += u * g0[q]; a4 += u * h0[q]; a5 += u * g0[q + 1]                     # noqa: E702
        a6 += u * e1[q]; a7 += u * f1[q]; a8 += u * e1[q + 1]                     # noqa: E702
    gw = grad_weight
    gw[o, c, 0, 0] += a0; gw[o, c, 0, 1] += a1; gw[o, c, 0, 2] += a2              # noqa: E702
    gw[o, c, 1, 0] += a3; gw[o, c, 1, 1] += a4; gw[o, c, 1, 2] += a5              # noqa: E702
    gw[o, c, 2, 0] += a6; gw[o, c, 2, 1] += a7; gw[o, c, 2, 2] += a8              # noqa: E702


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def weight_grad(phases, grads, groups, width, out_h, grad_weight):
    """grad_weight[o, c, i, j] = sum_n sum_q grads[n, o, q] * (tap (i, j) of position q in
    phases[n, c']), q < out_h * width; grads with row pitch `width` = OW + 1 and zeros in
    the last column of each row. Parallel over blocks (image, group, 4 output channels)
    into per-image partial gradients, added image after image (conv_direct.weight_grad)."""
    out_channels, in_per_group = grad_weight.shape[0], grad_weight.shape[1]
    out_per_group = out_channels // groups
    length = out_h * width
    n_images = phases.shape[0]
    units = (out_per_group + 3) // 4
    partial = np.zeros((n_images,) + grad_weight.shape, dtype=grad_weight.dtype)
    for block in prange(n_images * groups * units):
        n = block // (groups * units)
        g = block // units % groups
        o = g * out_per_group + 4 * (block % units)
        end = min(o + 4, (g + 1) * out_per_group)
        if end - o == 4:
            for q0 in range(0, length, WEIGHT_SPAN):     # spans: see conv_direct.WEIGHT_SPAN
                span = min(WEIGHT_SPAN, length - q0)
                for c in range(in_per_group):
                    planes = phases[n, g * in_per_group + c]
                    # kernel row i reads phases 2 (i % 2) and 2 (i % 2) + 1 from phase row i // 2,
                    # taps (even[q], odd[q], even[q + 1])
                    for i in range(3):
                        even = planes[2 * (i % 2), (i // 2) * width + q0:]
                        odd = planes[2 * (i % 2) + 1, (i // 2) * width + q0:]
                        weight_row_sums(grads[n], o, q0, even, odd, even[1:], span, partial[n], c, i)
        else:
            for c in range(in_per_group):
                for k in range(o, end):
                    _weight_taps1(grads[n, k], phases[n, g * in_per_group + c], width, length, partial[n], k, c)
    sum_planes(partial, grad_weight)
