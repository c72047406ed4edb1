"""Convolution host functions (CPU). gradflow.kernels.cuda.conv has the same three.

    conv2d(x, weight, bias, stride, padding, dilation, groups)                  -> y
    conv_transpose2d(x, weight, bias, stride, padding, dilation, groups, out_hw) -> y
    conv2d_weight_grad(x, grad_out, kernel_hw, stride, padding, dilation, groups) -> grad_weight

Arrays are NCHW, `weight` is conv2d's (O, C / groups, KH, KW) in all three, `bias` is
(O,) or None, stride and dilation are (h, w) pairs and padding is ((top, bottom),
(left, right)). conv_transpose2d is the adjoint of conv2d in its input (conv2d's input
gradient) and produces an image of size out_hw; conv2d is likewise the input gradient
of conv_transpose2d. So one set of kernels serves both ops in both directions.

Each function picks a path by shape, by measurement on the 2-vCPU AVX-512 machine:
  * 1x1 without padding: a plain batched matmul (never im2col);
  * 3x3, stride 1, dilation 1, padding <= 2: direct kernels (conv_direct), about 2-3x
    faster than im2col + BLAS;
  * everything else: im2col / col2im (Numba) around NumPy's matmul, a few images at a
    time so the column buffer stays cache-sized.
Large scratch buffers are reused between calls: a fresh multi-megabyte array costs
about 1 ms per 4 MB in page faults here.
"""
import threading

import numpy as np

from gradflow.kernels.cpu import conv_direct, im2col as columns

COLUMN_BYTES = 2 << 20       # im2col buffer per chunk of images (about the L2 size)
_local = threading.local()


def output_size(size, kernel, stride, pads, dilation):
    return (size + pads[0] + pads[1] - dilation * (kernel - 1) - 1) // stride + 1


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    n, _, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h = output_size(height, kernel_h, stride[0], padding[0], dilation[0])
    out_w = output_size(width, kernel_w, stride[1], padding[1], dilation[1])
    if _is_pointwise(weight, padding):
        out = _pointwise(x[:, :, :out_h * stride[0]:stride[0], :out_w * stride[1]:stride[1]], weight, groups,
                         transpose=False)
        return _add_bias(out.reshape(n, out_channels, out_h, out_w), bias)
    (top, bottom), (left, right) = padding
    if _is_direct(weight.shape[2:], stride, padding, dilation, width + left + right):
        planes = _padded_planes("x", x, top, left, height + top + bottom, width + left + right)
        out = np.empty((n, out_channels, out_h, out_w), dtype=x.dtype)
        conv_direct.conv3x3(planes, weight, _bias_or_zeros(bias, out_channels, x.dtype), groups,
                            width + left + right, out)
        return out
    out = np.empty((n, out_channels, out_h, out_w), dtype=x.dtype)
    cols, chunk, per_group = _columns(x, weight, groups, out_h, out_w)
    w = weight.reshape(groups, out_channels // groups, per_group)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        c = cols[:m]
        columns.im2col(x[n0:n0 + m], kernel_h, kernel_w, stride[0], stride[1], padding[0][0], padding[1][0],
                       dilation[0], dilation[1], out_h, out_w, c)
        np.matmul(w, c.reshape(m, groups, per_group, out_h * out_w),
                  out=out[n0:n0 + m].reshape(m, groups, out_channels // groups, out_h * out_w))
    return _add_bias(out, bias)


def conv_transpose2d(x, weight, bias, stride, padding, dilation, groups, out_hw):
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    n, _, in_h, in_w = x.shape                       # conv2d's output side
    _, per_group_in, kernel_h, kernel_w = weight.shape
    channels = per_group_in * groups
    height, width = out_hw
    if _is_pointwise(weight, padding):
        cols = _pointwise(x, weight, groups, transpose=True).reshape(n, channels, in_h, in_w)
        if stride == (1, 1) and (height, width) == (in_h, in_w):
            return _add_bias(cols, bias)
        out = np.zeros((n, channels, height, width), dtype=x.dtype)
        out[:, :, :in_h * stride[0]:stride[0], :in_w * stride[1]:stride[1]] = cols
        return _add_bias(out, bias)
    (top, bottom), (left, right) = padding
    if _is_direct(weight.shape[2:], stride, padding, dilation, width + 2):
        # input gradient of a stride-1 conv: the same conv over the gradient padded by
        # 2 - padding, with flipped weights and their channel axes swapped
        planes = _padded_planes("grad", x, 2 - top, 2 - left, height + 2, width + 2)
        flipped = _flip_weight(weight, groups)
        out = np.empty((n, channels, height, width), dtype=x.dtype)
        conv_direct.conv3x3(planes, flipped, _bias_or_zeros(bias, channels, x.dtype), groups, width + 2, out)
        return out
    out = np.empty((n, channels, height, width), dtype=x.dtype)
    cols, chunk, per_group = _columns(out, weight, groups, in_h, in_w)
    out_per_group = weight.shape[0] // groups
    w_t = weight.reshape(groups, out_per_group, per_group).transpose(0, 2, 1)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        c = cols[:m]
        np.matmul(w_t, x[n0:n0 + m].reshape(m, groups, out_per_group, in_h * in_w),
                  out=c.reshape(m, groups, per_group, in_h * in_w))
        columns.col2im(c, kernel_h, kernel_w, stride[0], stride[1], padding[0][0], padding[1][0],
                       dilation[0], dilation[1], in_h, in_w, out[n0:n0 + m])
    return _add_bias(out, bias)


def conv2d_weight_grad(x, grad_out, kernel_hw, stride, padding, dilation, groups):
    x, grad_out = np.ascontiguousarray(x), np.ascontiguousarray(grad_out)
    n, in_channels, height, width = x.shape
    _, out_channels, out_h, out_w = grad_out.shape
    kernel_h, kernel_w = kernel_hw
    per_group_in = in_channels // groups
    shape = (out_channels, per_group_in, kernel_h, kernel_w)
    if tuple(kernel_hw) == (1, 1) and padding == ((0, 0), (0, 0)):
        xs = x[:, :, :out_h * stride[0]:stride[0], :out_w * stride[1]:stride[1]]
        xs = np.ascontiguousarray(xs).reshape(n, groups, per_group_in, -1)
        g = grad_out.reshape(n, groups, out_channels // groups, -1)
        return np.matmul(g, xs.transpose(0, 1, 3, 2)).sum(axis=0).reshape(shape)
    (top, bottom), (left, right) = padding
    padded_w = width + left + right
    if _is_direct(kernel_hw, stride, padding, dilation, padded_w):
        planes = _padded_planes("x", x, top, left, height + top + bottom, padded_w)
        grads = _padded_planes("grad_rows", grad_out, 0, 0, out_h, padded_w)   # row pitch of planes
        grad_weight = np.empty(shape, dtype=x.dtype)
        conv_direct.conv3x3_weight_grad(planes, grads, 0, groups, padded_w, out_h, grad_weight)
        return grad_weight
    cols, chunk, per_group = _columns(x, np.empty(shape, dtype=x.dtype), groups, out_h, out_w)
    grad_weight = np.zeros((groups, out_channels // groups, per_group), dtype=x.dtype)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        c = cols[:m]
        columns.im2col(x[n0:n0 + m], kernel_h, kernel_w, stride[0], stride[1], padding[0][0], padding[1][0],
                       dilation[0], dilation[1], out_h, out_w, c)
        g = grad_out[n0:n0 + m].reshape(m, groups, out_channels // groups, out_h * out_w)
        grad_weight += np.matmul(g, c.reshape(m, groups, per_group, out_h * out_w).transpose(0, 1, 3, 2)).sum(axis=0)
    return grad_weight.reshape(shape)


# ---- paths ---------------------------------------------------------------------------

def _is_pointwise(weight, padding):
    return weight.shape[2:] == (1, 1) and padding == ((0, 0), (0, 0))


def _is_direct(kernel_hw, stride, padding, dilation, padded_width):
    return (tuple(kernel_hw) == (3, 3) and stride == (1, 1) and dilation == (1, 1)
            and all(p <= 2 for pads in padding for p in pads) and padded_width <= conv_direct.CHUNK)


def _pointwise(x, weight, groups, transpose):
    """1x1 convolution as one batched matmul per group: (N, G, C/G, pixels) in, same out."""
    n = x.shape[0]
    out_channels, per_group_in = weight.shape[:2]
    w = weight.reshape(groups, out_channels // groups, per_group_in)
    if transpose:
        w = w.transpose(0, 2, 1)
    x = np.ascontiguousarray(x)
    return np.matmul(w, x.reshape(n, groups, w.shape[2], -1))


def _flip_weight(weight, groups):
    """(O, C/G, 3, 3) -> (C, O/G, 3, 3): spatially flipped, input and output channels swapped per group."""
    out_channels, per_group_in = weight.shape[:2]
    w = weight.reshape(groups, out_channels // groups, per_group_in, 3, 3)[:, :, :, ::-1, ::-1]
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4)).reshape(groups * per_group_in, -1, 3, 3)


def _bias_or_zeros(bias, channels, dtype):
    return np.zeros(channels, dtype=dtype) if bias is None else np.ascontiguousarray(bias)


def _add_bias(out, bias):
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


# ---- reused buffers --------------------------------------------------------------------

def _scratch(key, shape, dtype):
    """A zeroed buffer on first use, then the same one for the same key (per thread)."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    key = key + (tuple(shape), np.dtype(dtype).str)
    buffer = buffers.get(key)
    if buffer is None:
        if len(buffers) >= 32:          # many shapes (tests): keep memory bounded
            buffers.clear()
        buffer = buffers[key] = np.zeros(shape, dtype=dtype)
    return buffer


def _padded_planes(name, x, top, left, padded_h, padded_w):
    """x copied into zero-padded planes (N, C, padded_h * padded_w + 2), flattened per plane.

    Keyed by the whole geometry: only the interior is ever written, so the border
    stays zero across reuses. The 2 extra elements are read by the taps of the last
    row's dropped columns."""
    n, channels, height, width = x.shape
    planes = _scratch(("planes", name, top, left, height, width, padded_w),
                      (n, channels, padded_h * padded_w + 2), x.dtype)
    conv_direct.pad_planes(x, planes, top, left, padded_w)
    return planes


def _columns(image, weight, groups, out_h, out_w):
    """The im2col buffer for a chunk of images, the chunk size, and rows per group."""
    n, channels = image.shape[:2]
    per_group = (channels // groups) * weight.shape[2] * weight.shape[3]
    per_image = channels * weight.shape[2] * weight.shape[3] * out_h * out_w
    chunk = max(1, min(n, COLUMN_BYTES // max(1, per_image * image.dtype.itemsize)))
    cols = _scratch(("cols",), (chunk, channels * weight.shape[2] * weight.shape[3], out_h * out_w), image.dtype)
    return cols, chunk, per_group
