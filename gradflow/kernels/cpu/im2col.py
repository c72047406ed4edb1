"""im2col / col2im (CPU, Numba): the general convolution path, any kernel, stride,
padding and dilation. The GEMMs around them are NumPy's BLAS (gradflow.kernels.cpu.conv).

Layout, for a chunk of images x (N, C, H, W) and an output of OH x OW pixels:

    cols[n, (c * KH + i) * KW + j, oy * OW + ox] = x[n, c, oy * SH - PT + i * DH, ox * SW - PL + j * DW]

and zero where that index falls outside the image. PT and PL are the top and left
paddings; the bottom and right ones only show in OH and OW. The rows of one group's
channels are adjacent, so cols.reshape(N, groups, -1, OH * OW) feeds one batched matmul.

col2im is the adjoint, written as a gather: every image row is computed on its own by
summing the column entries that land on it, taps in increasing (i, j) order. No element
is written by two different loop iterations, so the result is deterministic, and the
CUDA kernel of the same name (one thread per pixel, same tap order) matches it.
"""
from numba import njit, prange


@njit(cache=True)
def valid_outputs(offset, stride, size, out_size):
    """The range [lo, hi) of output positions o with 0 <= o * stride + offset < size."""
    lo = -(offset // stride)                      # ceil(-offset / stride), floor division
    hi = (size - 1 - offset) // stride + 1
    lo = min(max(lo, 0), out_size)
    hi = min(max(hi, lo), out_size)
    return lo, hi


@njit(cache=True, parallel=True)
def im2col(x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
           out_h, out_w, cols):
    n_images, channels, height, width = x.shape
    for block in prange(n_images * channels):      # parallel over (image, channel): disjoint rows of cols
        n, c = block // channels, block % channels
        for i in range(kernel_h):
            y_offset = i * dilation_h - pad_top
            oy_lo, oy_hi = valid_outputs(y_offset, stride_h, height, out_h)
            for j in range(kernel_w):
                x_offset = j * dilation_w - pad_left
                ox_lo, ox_hi = valid_outputs(x_offset, stride_w, width, out_w)
                row = cols[n, (c * kernel_h + i) * kernel_w + j]
                row[:oy_lo * out_w] = 0                 # rows above the image
                row[oy_hi * out_w:] = 0                 # rows below it
                for oy in range(oy_lo, oy_hi):
                    segment = row[oy * out_w:(oy + 1) * out_w]
                    source = x[n, c, oy * stride_h + y_offset]
                    segment[:ox_lo] = 0
                    segment[ox_hi:] = 0
                    for ox in range(ox_lo, ox_hi):
                        segment[ox] = source[ox * stride_w + x_offset]


@njit(cache=True, parallel=True)
def col2im(cols, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
           out_h, out_w, x):
    """x[n, c, y, :] = sum over taps (i, j) of the cols entries im2col would have read from it."""
    n_images, channels, height, width = x.shape
    for block in prange(n_images * channels):      # parallel over (image, channel): disjoint planes of x
        n, c = block // channels, block % channels
        for y in range(height):
            target = x[n, c, y]
            target[:] = 0
            for i in range(kernel_h):
                from_top = y + pad_top - i * dilation_h    # = oy * stride_h for the output row oy
                if from_top < 0 or from_top % stride_h != 0 or from_top // stride_h >= out_h:
                    continue
                oy = from_top // stride_h
                for j in range(kernel_w):
                    x_offset = j * dilation_w - pad_left
                    ox_lo, ox_hi = valid_outputs(x_offset, stride_w, width, out_w)
                    source = cols[n, (c * kernel_h + i) * kernel_w + j, oy * out_w:(oy + 1) * out_w]
                    for ox in range(ox_lo, ox_hi):
                        target[ox * stride_w + x_offset] += source[ox]
