"""Convolution host functions (CUDA), the same three as gradflow.kernels.cpu.conv:

    conv2d(x, weight, bias, stride, padding, dilation, groups)                  -> y
    conv_transpose2d(x, weight, bias, stride, padding, dilation, groups, out_hw) -> y
    conv2d_weight_grad(x, grad_out, kernel_hw, stride, padding, dilation, groups) -> grad_weight

(see there for the argument conventions). im2col and col2im are numba.cuda kernels with
grid-stride loops over the elements they write, gathers only: no float atomics, deterministic, and
col2im sums the taps in the same (i, j) order as the CPU kernel. GEMMs are xp.matmul
(cuBLAS through cupy). Kernels launch on cupy's current stream (launch.Kernel).

Under NUMBA_ENABLE_CUDASIM=1 the same code runs on numpy arrays in Numba's simulator
(launch.xp_of gives numpy there), which is how CI tests it without a GPU.
"""
from numba import cuda

from gradflow.kernels.conv_common import (add_bias, is_pointwise, output_size, pointwise_conv2d,
                                           pointwise_conv_transpose2d, pointwise_weight_grad)
from gradflow.kernels.cuda import launch

COLUMN_BYTES = 256 << 20     # im2col buffer per chunk of images, to bound device memory


@launch.kernel
def _im2col_kernel(x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
                   out_h, out_w, cols):
    """cols[n, (c * KH + i) * KW + j, oy * OW + ox] = x[n, c, oy * SH - PT + i * DH, ox * SW - PL + j * DW]."""
    n_images, channels, height, width = x.shape
    for index in range(cuda.grid(1), n_images * channels * kernel_h * kernel_w * out_h * out_w, cuda.gridsize(1)):
        _im2col_one(x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
                    out_h, out_w, cols, index)


@cuda.jit(device=True)
def _im2col_one(x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
                out_h, out_w, cols, index):
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    ox = index % out_w
    rest = index // out_w
    oy = rest % out_h
    rest //= out_h
    j = rest % kernel_w
    rest //= kernel_w
    i = rest % kernel_h
    rest //= kernel_h
    c = rest % channels
    n = rest // channels
    y = oy * stride_h - pad_top + i * dilation_h
    x_pos = ox * stride_w - pad_left + j * dilation_w
    row = (c * kernel_h + i) * kernel_w + j
    if 0 <= y < height and 0 <= x_pos < width:
        cols[n, row, oy * out_w + ox] = x[n, c, y, x_pos]
    else:
        cols[n, row, oy * out_w + ox] = 0


@launch.kernel
def _col2im_kernel(cols, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
                   out_h, out_w, zero, x):
    """x[n, c, y, x] = sum of the cols entries im2col reads from it, taps in (i, j) order.

    `zero` is a scalar of the arrays' dtype: the sum runs in that dtype, as on the CPU."""
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        _col2im_one(cols, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
                    out_h, out_w, zero, x, index)


@cuda.jit(device=True)
def _col2im_one(cols, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
                out_h, out_w, zero, x, index):
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    x_pos = index % width
    rest = index // width
    y = rest % height
    rest //= height
    c = rest % channels
    n = rest // channels
    total = zero
    for i in range(kernel_h):
        from_top = y + pad_top - i * dilation_h       # = oy * stride_h for the output row oy
        if from_top < 0 or from_top % stride_h != 0 or from_top // stride_h >= out_h:
            continue
        oy = from_top // stride_h
        for j in range(kernel_w):
            from_left = x_pos + pad_left - j * dilation_w
            if from_left < 0 or from_left % stride_w != 0 or from_left // stride_w >= out_w:
                continue
            total += cols[n, (c * kernel_h + i) * kernel_w + j, oy * out_w + from_left // stride_w]
    x[n, c, y, x_pos] = total


def im2col(x, kernel_hw, stride, padding, dilation, out_hw, cols):
    kernel_h, kernel_w = kernel_hw
    _im2col_kernel(launch.blocks(cols.size), launch.GEOMETRY.threads,
                   x, kernel_h, kernel_w, stride[0], stride[1], padding[0][0], padding[1][0],
                   dilation[0], dilation[1], out_hw[0], out_hw[1], cols)


def col2im(cols, kernel_hw, stride, padding, dilation, out_hw, x):
    kernel_h, kernel_w = kernel_hw
    _col2im_kernel(launch.blocks(x.size), launch.GEOMETRY.threads,
                   cols, kernel_h, kernel_w, stride[0], stride[1], padding[0][0], padding[1][0],
                   dilation[0], dilation[1], out_hw[0], out_hw[1], x.dtype.type(0), x)


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    xp = launch.xp_of(x)
    x, weight = xp.ascontiguousarray(x), xp.ascontiguousarray(weight)
    n, _, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h = output_size(height, kernel_h, stride[0], padding[0], dilation[0])
    out_w = output_size(width, kernel_w, stride[1], padding[1], dilation[1])
    if is_pointwise(weight.shape[2:], padding):
        return pointwise_conv2d(x, weight, bias, stride, groups, (out_h, out_w))
    out = xp.empty((n, out_channels, out_h, out_w), dtype=x.dtype)
    w = weight.reshape(groups, out_channels // groups, -1)
    for n0, m, cols in _column_chunks(xp, x, weight, out_h, out_w):
        im2col(x[n0:n0 + m], (kernel_h, kernel_w), stride, padding, dilation, (out_h, out_w), cols)
        xp.matmul(w, cols.reshape(m, groups, w.shape[2], -1),
                  out=out[n0:n0 + m].reshape(m, groups, out_channels // groups, out_h * out_w))
    return add_bias(out, bias)


def conv_transpose2d(x, weight, bias, stride, padding, dilation, groups, out_hw):
    xp = launch.xp_of(x)
    x, weight = xp.ascontiguousarray(x), xp.ascontiguousarray(weight)
    n, _, in_h, in_w = x.shape
    out_channels, per_group_in, kernel_h, kernel_w = weight.shape
    channels = per_group_in * groups
    height, width = out_hw
    if is_pointwise(weight.shape[2:], padding):
        return pointwise_conv_transpose2d(x, weight, bias, stride, groups, out_hw)
    out = xp.empty((n, channels, height, width), dtype=x.dtype)
    w_t = weight.reshape(groups, out_channels // groups, -1).transpose(0, 2, 1)
    for n0, m, cols in _column_chunks(xp, out, weight, in_h, in_w):
        g = x[n0:n0 + m].reshape(m, groups, out_channels // groups, in_h * in_w)
        xp.matmul(w_t, g, out=cols.reshape(m, groups, w_t.shape[1], in_h * in_w))
        col2im(cols, (kernel_h, kernel_w), stride, padding, dilation, (in_h, in_w), out[n0:n0 + m])
    return add_bias(out, bias)


def conv2d_weight_grad(x, grad_out, kernel_hw, stride, padding, dilation, groups):
    xp = launch.xp_of(x)
    x, grad_out = xp.ascontiguousarray(x), xp.ascontiguousarray(grad_out)
    n, in_channels, _, _ = x.shape
    _, out_channels, out_h, out_w = grad_out.shape
    kernel_h, kernel_w = kernel_hw
    shape = (out_channels, in_channels // groups, kernel_h, kernel_w)
    if is_pointwise(kernel_hw, padding):
        return pointwise_weight_grad(x, grad_out, stride, groups)
    g_all = grad_out.reshape(n, groups, out_channels // groups, out_h * out_w)
    grad_weight = xp.zeros((groups, out_channels // groups, shape[1] * kernel_h * kernel_w), dtype=x.dtype)
    for n0, m, cols in _column_chunks(xp, x, xp.empty(shape, dtype=x.dtype), out_h, out_w):
        im2col(x[n0:n0 + m], kernel_hw, stride, padding, dilation, (out_h, out_w), cols)
        c = cols.reshape(m, groups, grad_weight.shape[2], out_h * out_w)
        grad_weight += xp.matmul(g_all[n0:n0 + m], c.transpose(0, 1, 3, 2)).sum(axis=0)
    return grad_weight.reshape(shape)


def _column_chunks(xp, image, weight, out_h, out_w):
    """(first image, image count, cols buffer) per chunk of images; one buffer for all chunks."""
    n, channels = image.shape[:2]
    rows = channels * weight.shape[2] * weight.shape[3]
    per_image = rows * out_h * out_w * image.dtype.itemsize
    chunk = max(1, min(n, COLUMN_BYTES // max(1, per_image)))
    cols = xp.empty((chunk, rows, out_h * out_w), dtype=image.dtype)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        yield n0, m, cols[:m]
