"""Stride-s convolutions with 2s x 2s kernels as stride-1 2x2 convolutions over the s * s
space-to-depth phases of the input (CPU).

The phases of the padded input are P_ab[m, j] = xpad[s m + a, s j + b] for a, b < s, stacked
as channels c * s * s + a * s + b. Output (y, x) of the stride-s convolution reads
xpad[s y + i, s x + j] = P_{i % s, j % s}[y + i // s, x + j // s], so with the phase weights
weight[o, c, s u + a, s v + b] -> [o, c * s * s + a * s + b, u, v] (u, v < 2) it is a 2x2
stride-1 convolution over the phases: conv_direct's kernels. The transposed convolution
(the input gradient) is the full 2x2 correlation of the gradient with those weights, one
plane per phase, which depth_to_space interleaves back into the image. FCN's upsamplers
are such kernels: k4 s2 (phases of conv_direct.space_to_depth) and k16 s8 (here: its
forward+backward at batch 16, 4 channels, 8x8 -> 64x64 took 8.1 ms through im2col + BLAS).
"""
import numpy as np
from numba import njit, prange

from gradflow.kernels.cpu import conv_direct


def phase_weight(weight, factor):
    """(O, C, KH, KW), KH, KW <= 2 * factor -> (O, C * factor**2, 2, 2):
    [o, (c * factor + a) * factor + b, u, v] = weight[o, c, factor * u + a, factor * v + b]."""
    out_channels, channels, kernel_h, kernel_w = weight.shape
    size = 2 * factor
    padded = np.zeros((out_channels, channels, size, size), dtype=weight.dtype)
    padded[:, :, :kernel_h, :kernel_w] = weight
    phases = padded.reshape(out_channels, channels, 2, factor, 2, factor).transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(phases).reshape(out_channels, factor * factor * channels, 2, 2)


def unphase_weight(phases, factor, kernel_h, kernel_w):
    """The inverse of phase_weight (so it maps a phase-weight gradient to the weight gradient)."""
    out_channels, channels = phases.shape[0], phases.shape[1] // (factor * factor)
    w = phases.reshape(out_channels, channels, factor, factor, 2, 2).transpose(0, 1, 4, 2, 5, 3)   # (o, c, u, a, v, b)
    return np.ascontiguousarray(w.reshape(out_channels, channels, 2 * factor, 2 * factor)[:, :, :kernel_h, :kernel_w])


def space_to_depth(x, planes, factor, top, left, rows, width):
    """planes[n, (c * factor + a) * factor + b, m * width + j] = xpad[n, c, factor m + a, factor j + b]
    for m < rows, j < width, xpad = x zero-padded by top rows and left columns. Only the
    positions inside x are written (the caller's buffer holds the zeros)."""
    if factor == 2:
        conv_direct.space_to_depth(x, planes, top, left, rows, width)
    else:
        _space_to_depth(x, planes, factor, top, left, rows, width)


def depth_to_space(phases, factor, top, left, bias, out):
    """out[n, c, y, x] = bias[c] + phases[n, (c * factor + a) * factor + b, m, j] where
    y + top = factor m + a and x + left = factor j + b; bias[c] alone where (m, j) falls
    outside the phase planes."""
    if factor == 2:
        conv_direct.depth_to_space(phases, top, left, bias, out)
    else:
        _depth_to_space(phases, factor, top, left, bias, out)


# The general kernels: one element at a time (factor 2 has vectorised ones in conv_direct).

@njit(cache=True, parallel=True)
def _space_to_depth(x, planes, factor, top, left, rows, width):
    n_images, channels, height, in_width = x.shape
    for block in prange(n_images * channels):
        n, c = block // channels, block % channels
        for y in range(height):
            a, m = (y + top) % factor, (y + top) // factor
            if m >= rows:
                break
            source = x[n, c, y]
            first = (c * factor + a) * factor
            for column in range(in_width):
                j = (column + left) // factor
                if j >= width:
                    break
                planes[n, first + (column + left) % factor, m * width + j] = source[column]


@njit(cache=True, parallel=True)
def _depth_to_space(phases, factor, top, left, bias, out):
    n_images, channels, height, width = out.shape
    rows, columns = phases.shape[2], phases.shape[3]
    for block in prange(n_images * channels):
        n, c = block // channels, block % channels
        shift = bias[c]
        for y in range(height):
            a, m = (y + top) % factor, (y + top) // factor
            target = out[n, c, y]
            if m >= rows:
                target[:] = shift
                continue
            first = (c * factor + a) * factor
            for x in range(width):
                j = (x + left) // factor
                target[x] = (phases[n, first + (x + left) % factor, m, j] if j < columns else 0) + shift
