"""Convolution host functions (CPU). gradflow.kernels.cuda.conv has the same three.

    conv2d(x, weight, bias, stride, padding, dilation, groups)                  -> y
    conv_transpose2d(x, weight, bias, stride, padding, dilation, groups, out_hw) -> y
    conv2d_weight_grad(x, grad_out, kernel_hw, stride, padding, dilation, groups) -> grad_weight

Arrays are NCHW, `weight` is conv2d's (O, C / groups, KH, KW) in all three, `bias` is
(O,) or None, stride and dilation are (h, w) pairs and padding is ((top, bottom),
(left, right)). conv_transpose2d is the adjoint of conv2d in its input (conv2d's input
gradient) and produces an image of size out_hw; conv2d is likewise the input gradient
of conv_transpose2d. So one set of kernels serves both ops in both directions.

Each function picks a path by shape (_path), by measurement on the 2-vCPU AVX-512
development machine (single thread, forward+backward of the bench/ conv workloads):
  * 1x1 without padding: a plain batched matmul (never im2col);
  * 3x3, stride 1, dilation 1, padding <= 2: direct kernels (conv_direct), 2.9x faster
    than im2col + BLAS; for outputs of at most GEMM_PIXELS pixels, one GEMM per chunk
    of images (conv_gemm), 1.7-2.8x faster than the direct kernels there;
  * 2s x 2s, stride s (conv_transpose2d k4 s2 p1, k16 s8 p4 and their adjoints): a 2x2
    direct conv over the s * s space-to-depth phases of the input (conv_phases), 2x
    faster than im2col + BLAS at k4 s2;
  * 3x3, stride 2: direct kernels on the same phases (conv_stride2), 1.2x faster;
  * everything else: im2col / col2im (Numba) around NumPy's matmul, a few images at a
    time so the column buffer stays cache-sized, laid out so that a chunk is one GEMM.
Scratch buffers (padded planes, phases, columns) are reused between calls, keyed by
geometry: filling a fresh 38 MB array took 2.8 ms here, a reused one 1.0 ms.

Every Numba kernel here runs in parallel over blocks fixed by the shapes alone (images,
rows, channels); weight gradients sum per-image partial results in image order, so the
bits are the same at any thread count (gradflow.threads). The matmuls of the 1x1 and
im2col paths run in BLAS on one thread (gradflow.threads says why), between the kernels.
"""
import collections
import threading
import weakref

import numpy as np

from gradflow.kernels.conv_common import (add_bias, is_pointwise, output_size, pointwise_conv2d,
                                           pointwise_conv_transpose2d, pointwise_weight_grad)
from gradflow.threads import parallel
from gradflow.kernels.cpu import conv_direct, conv_gemm, conv_phases, conv_stride2, im2col as columns

COLUMN_BYTES = 2 << 20       # im2col buffer per chunk of images (about the L2 size)
SCRATCH_BYTES = 256 << 20    # reused padded planes, phases and columns kept per thread
IMAGES_SLOT = 8192           # 3x3 weight gradient: images side by side up to this many plane elements
_local = threading.local()


@parallel
def conv2d(x, weight, bias, stride, padding, dilation, groups):
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    n, _, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h = output_size(height, kernel_h, stride[0], padding[0], dilation[0])
    out_w = output_size(width, kernel_w, stride[1], padding[1], dilation[1])
    (top, bottom), (left, right) = padding
    path = _path(weight.shape[2:], stride, padding, dilation, (out_h, out_w))
    if path == "pointwise":
        return pointwise_conv2d(x, weight, bias, stride, groups, (out_h, out_w))
    out = np.empty((n, out_channels, out_h, out_w), dtype=x.dtype)
    if path == "direct":
        planes = _padded_planes("x", x, top, left, height + top + bottom, width + left + right)
        conv_direct.conv(planes, weight, _bias_or_zeros(bias, out_channels, x.dtype), groups,
                         width + left + right, out)
        return out
    if path == "gemm":
        planes = _padded_planes("x", x, top, left, height + top + bottom, width + left + right)
        conv_gemm.conv(planes, weight, _bias_or_zeros(bias, out_channels, x.dtype), groups,
                       width + left + right, out)
        return out
    if path == "phases":
        planes = _phase_planes("x", x, top, left, out_h + 1, out_w + 1, stride[0])
        conv_direct.conv(planes, conv_phases.phase_weight(weight, stride[0]),
                         _bias_or_zeros(bias, out_channels, x.dtype), groups, out_w + 1, out)
        return out
    if path == "stride2":
        planes = _phase_planes("x", x, top, left, out_h + 1, out_w + 1, 2).reshape(n, x.shape[1], 4, -1)
        conv_stride2.conv(planes, weight, _bias_or_zeros(bias, out_channels, x.dtype), groups, out_w + 1, out)
        return out
    chunk, per_group = _column_chunk(x, (kernel_h, kernel_w), groups, out_h * out_w)
    w = weight.reshape(groups, out_channels // groups, per_group)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        cols = _image_columns(x[n0:n0 + m], (kernel_h, kernel_w), out_h * out_w)
        columns.im2col(x[n0:n0 + m], kernel_h, kernel_w, stride[0], stride[1], top, left,
                       dilation[0], dilation[1], out_h, out_w, cols.transpose(1, 0, 2))
        product = np.matmul(w, cols.reshape(groups, per_group, m * out_h * out_w))
        _unfold(product.reshape(out_channels, -1), out[n0:n0 + m])
    return add_bias(out, bias)


@parallel
def conv_transpose2d(x, weight, bias, stride, padding, dilation, groups, out_hw):
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    n, _, in_h, in_w = x.shape                       # conv2d's output side
    _, per_group_in, kernel_h, kernel_w = weight.shape
    channels = per_group_in * groups
    height, width = out_hw
    (top, bottom), (left, right) = padding
    path = _path(weight.shape[2:], stride, padding, dilation, (in_h, in_w))
    if path == "pointwise":
        return pointwise_conv_transpose2d(x, weight, bias, stride, groups, out_hw)
    out = np.empty((n, channels, height, width), dtype=x.dtype)
    if path == "direct":
        # input gradient of a stride-1 conv: the same conv over the gradient padded by
        # 2 - padding, with flipped weights and their channel axes swapped
        planes = _padded_planes("grad", x, 2 - top, 2 - left, height + 2, width + 2)
        conv_direct.conv(planes, _flip_weight(weight, groups), _bias_or_zeros(bias, channels, x.dtype), groups,
                         width + 2, out)
        return out
    if path == "gemm":
        planes = _padded_planes("grad", x, 2 - top, 2 - left, height + 2, width + 2)
        conv_gemm.conv(planes, _flip_weight(weight, groups), _bias_or_zeros(bias, channels, x.dtype), groups,
                       width + 2, out)
        return out
    if path == "phases":
        # the full 2x2 correlation of the gradient with the phase weights is the gradient
        # of every phase plane; depth_to_space puts the phases back into the image
        factor = stride[0]
        planes = _padded_planes("grad", x, 1, 1, in_h + 2, in_w + 2)
        phases = _scratch(("phase_grad",), (n, factor * factor * channels, in_h + 1, in_w + 1), x.dtype)
        conv_direct.conv(planes, _flip_weight(conv_phases.phase_weight(weight, factor), groups),
                         np.zeros(phases.shape[1], x.dtype), groups, in_w + 2, phases)
        conv_phases.depth_to_space(phases, factor, top, left, _bias_or_zeros(bias, channels, x.dtype), out)
        return out
    if path == "stride2":
        planes = _padded_planes("grad", x, 1, 1, in_h + 2, in_w + 2)
        phases = _scratch(("phase_grad",), (n, channels, 4, in_h + 1, in_w + 1), x.dtype)
        conv_stride2.phase_grad(planes, weight, groups, in_w + 2, phases)
        conv_direct.depth_to_space(phases.reshape(n, 4 * channels, in_h + 1, in_w + 1), top, left,
                                   _bias_or_zeros(bias, channels, x.dtype), out)
        return out
    chunk, per_group = _column_chunk(out, (kernel_h, kernel_w), groups, in_h * in_w)
    out_per_group = weight.shape[0] // groups
    w_t = weight.reshape(groups, out_per_group, per_group).transpose(0, 2, 1)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        cols = _image_columns(out[n0:n0 + m], (kernel_h, kernel_w), in_h * in_w)
        np.matmul(w_t, _fold(x[n0:n0 + m]).reshape(groups, out_per_group, m * in_h * in_w),
                  out=cols.reshape(groups, per_group, m * in_h * in_w))
        columns.col2im(cols.transpose(1, 0, 2), kernel_h, kernel_w, stride[0], stride[1], top, left,
                       dilation[0], dilation[1], in_h, in_w, out[n0:n0 + m])
    return add_bias(out, bias)


@parallel
def conv2d_weight_grad(x, grad_out, kernel_hw, stride, padding, dilation, groups):
    x, grad_out = np.ascontiguousarray(x), np.ascontiguousarray(grad_out)
    n, in_channels, height, width = x.shape
    _, out_channels, out_h, out_w = grad_out.shape
    kernel_h, kernel_w = kernel_hw
    per_group_in = in_channels // groups
    shape = (out_channels, per_group_in, kernel_h, kernel_w)
    (top, bottom), (left, right) = padding
    path = _path(kernel_hw, stride, padding, dilation, (out_h, out_w))
    if path == "pointwise":
        return pointwise_weight_grad(x, grad_out, stride, groups)
    if path == "direct":
        padded_h, padded_w = height + top + bottom, width + left + right
        slot = padded_h * padded_w + 2
        images = _images_side_by_side(n, slot)
        planes = _padded_planes("x", x, top, left, padded_h, padded_w, images, reuse=True)
        grads = _padded_planes("grad_rows", grad_out, 0, 0, padded_h, padded_w, images)   # the same layout
        grad_weight = np.empty(shape, dtype=x.dtype)
        conv_direct.weight_grad(planes, grads, 0, groups, padded_w, (images - 1) * slot + out_h * padded_w,
                                grad_weight)
        return grad_weight
    if path == "gemm":
        padded_w = width + left + right
        planes = _padded_planes("x", x, top, left, height + top + bottom, padded_w, reuse=True)
        return conv_gemm.weight_grad(planes, grad_out, kernel_hw, groups, padded_w)
    if path == "phases":
        factor = stride[0]
        planes = _phase_planes("x", x, top, left, out_h + 1, out_w + 1, factor, reuse=True)
        grads = _padded_planes("grad_rows", grad_out, 0, 0, out_h, out_w + 1)
        phase_grad = np.empty((out_channels, factor * factor * per_group_in, 2, 2), dtype=x.dtype)
        conv_direct.weight_grad(planes, grads, 0, groups, out_w + 1, out_h * (out_w + 1), phase_grad)
        return conv_phases.unphase_weight(phase_grad, factor, kernel_h, kernel_w)
    if path == "stride2":
        planes = _phase_planes("x", x, top, left, out_h + 1, out_w + 1, 2, reuse=True).reshape(n, in_channels, 4, -1)
        grads = _padded_planes("grad_rows", grad_out, 0, 0, out_h, out_w + 1)
        grad_weight = np.empty(shape, dtype=x.dtype)
        conv_stride2.weight_grad(planes, grads, groups, out_w + 1, out_h, grad_weight)
        return grad_weight
    chunk, per_group = _column_chunk(x, kernel_hw, groups, out_h * out_w)
    grad_weight = np.zeros((groups, out_channels // groups, per_group), dtype=x.dtype)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        cols = _image_columns(x[n0:n0 + m], kernel_hw, out_h * out_w)
        columns.im2col(x[n0:n0 + m], kernel_h, kernel_w, stride[0], stride[1], top, left,
                       dilation[0], dilation[1], out_h, out_w, cols.transpose(1, 0, 2))
        g = _fold(grad_out[n0:n0 + m]).reshape(groups, out_channels // groups, m * out_h * out_w)
        grad_weight += np.matmul(g, cols.reshape(groups, per_group, m * out_h * out_w).transpose(0, 2, 1))
    return grad_weight.reshape(shape)


# ---- paths ---------------------------------------------------------------------------

GEMM_PIXELS = 8 * 8          # 3x3 stride 1 up to this output size: conv_gemm


def _path(kernel_hw, stride, padding, dilation, out_hw):
    """Which implementation serves this geometry (the same for all three functions)."""
    kernel_hw = tuple(kernel_hw)
    if is_pointwise(kernel_hw, padding):
        return "pointwise"
    if dilation != (1, 1):
        return "columns"
    if (kernel_hw == (3, 3) and stride == (1, 1) and all(p <= 2 for pads in padding for p in pads)
            and out_hw[1] + 2 <= conv_direct.CHUNK):
        return "gemm" if out_hw[0] * out_hw[1] <= GEMM_PIXELS else "direct"
    if stride[0] == stride[1] >= 2 and kernel_hw == (2 * stride[0],) * 2 and out_hw[1] + 2 <= conv_direct.CHUNK:
        return "phases"
    if kernel_hw == (3, 3) and stride == (2, 2) and out_hw[1] + 2 <= conv_stride2.PHASE_CHUNK:
        return "stride2"
    return "columns"


def _flip_weight(weight, groups):
    """(O, C/G, K, K) -> (C, O/G, K, K): spatially flipped, input and output channels swapped per group."""
    out_channels, per_group_in, kernel_h, kernel_w = weight.shape
    w = weight.reshape(groups, out_channels // groups, per_group_in, kernel_h, kernel_w)[:, :, :, ::-1, ::-1]
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4)).reshape(groups * per_group_in, -1, kernel_h, kernel_w)


def _bias_or_zeros(bias, channels, dtype):
    return np.zeros(channels, dtype=dtype) if bias is None else np.ascontiguousarray(bias)


# ---- reused buffers --------------------------------------------------------------------

def _scratch(key, shape, dtype):
    """A zeroed buffer on first use, then the same one for the same key (per thread).

    Every layer of a network has its own geometries, so its own buffers (the README's FCN
    at batch 16: 33 of them, 37 MiB). Beyond SCRATCH_BYTES the least recently used go:
    dropping all of them once a count was passed re-zeroed every buffer every step there
    (3.4 ms of a 94 ms step in np.zeros alone, more in page faults)."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = collections.OrderedDict()
    key = key + (tuple(shape), np.dtype(dtype).str)
    buffer = buffers.get(key)
    if buffer is not None:
        buffers.move_to_end(key)
        return buffer
    buffer = buffers[key] = np.zeros(shape, dtype=dtype)
    total = sum(b.nbytes for b in buffers.values())
    while total > SCRATCH_BYTES and len(buffers) > 1:
        _, dropped = buffers.popitem(last=False)
        total -= dropped.nbytes
        _fill_records().pop((dropped.ctypes.data, dropped.shape), None)
    return buffer


def forget_buffers():
    """Drop the calling thread's reused buffers (and what they were filled from)."""
    _local.buffers = collections.OrderedDict()
    _local.sources = {}


def _fill_records():
    sources = getattr(_local, "sources", None)
    if sources is None:
        sources = _local.sources = {}
    return sources


def _fill_once(buffer, source, fill, reuse):
    """fill() the buffer from `source`, unless `reuse` and the buffer was last filled from
    this very array (a weight gradient right after its forward: the same input in the
    same layout). The record is a weak reference, so a new array that happens to get a
    dead one's id is not mistaken for it. The forward always refills: an input changed
    in place between a forward and its backward would make any gradient wrong anyway
    (PyTorch refuses it); here the weight gradient then uses the input the forward saw."""
    sources = _fill_records()
    key = buffer.ctypes.data, buffer.shape
    record = sources.get(key)
    if reuse and record is not None and record() is source:
        return
    fill()
    sources[key] = weakref.ref(source)


def _padded_planes(name, x, top, left, padded_h, padded_w, images=1, reuse=False):
    """x copied into zero-padded planes (N, C, padded_h * padded_w + 2), flattened per plane;
    with images > 1, (N / images, C, images * (padded_h * padded_w + 2)): that many
    images' planes side by side, for one flattened sum over all of them.

    Keyed by the whole geometry: only the interior is ever written, so the border
    stays zero across reuses. The 2 extra elements are read by the taps of the last
    row's dropped columns."""
    n, channels, height, width = x.shape
    planes = _scratch(("planes", name, top, left, height, width, padded_w),
                      (n // images, channels, images * (padded_h * padded_w + 2)), x.dtype)
    _fill_once(planes, x, lambda: conv_direct.pad_planes(x, planes, top, left, padded_w), reuse)
    return planes


def _images_side_by_side(n, slot):
    """How many images' planes the 3x3 weight gradient puts side by side (a divisor of n):
    each flattened sum ends in horizontal vector reductions (9 per output and input
    channel), which cost as much as the sum itself for a small image. Measured at batch 8,
    64 -> 64 channels: 8x8 0.81 -> 0.41 ms, 16x16 1.45 -> 1.07 ms; 32 -> 32 at 32x32
    0.97 -> 0.92 ms; at 64x64 (one image per plane with this limit) 2 or 8 images were no
    faster."""
    images = max(1, min(n, IMAGES_SLOT // slot))
    while n % images:
        images -= 1
    return images


def _phase_planes(name, x, top, left, rows, width, factor, reuse=False):
    """The factor**2 phases of x zero-padded by (top, left) as planes
    (N, factor**2 C, rows * width + 2), reused per geometry like _padded_planes."""
    n, channels, height, in_width = x.shape
    planes = _scratch(("phases", name, factor, top, left, height, in_width, rows, width),
                      (n, factor * factor * channels, rows * width + 2), x.dtype)
    _fill_once(planes, x, lambda: conv_phases.space_to_depth(x, planes, factor, top, left, rows, width), reuse)
    return planes


def _column_chunk(image, kernel_hw, groups, pixels):
    """(images per chunk, column rows per group) of the im2col paths: chunks of whole
    images whose columns fill about COLUMN_BYTES."""
    n, channels = image.shape[:2]
    kernel_size = kernel_hw[0] * kernel_hw[1]
    per_image = channels * kernel_size * pixels * image.dtype.itemsize
    return max(1, min(n, COLUMN_BYTES // max(1, per_image))), (channels // groups) * kernel_size


def _image_columns(images, kernel_hw, pixels):
    """The im2col buffer of a chunk of images (N, C, H, W), laid out (C * KH * KW, N, pixels):
    one row per tap across all the chunk's images, so the chunk is one GEMM with
    N * pixels columns. Small images made many thin GEMMs per image: at 8x8 and 4x4
    pixels, 64 -> 128 and 128 -> 128 channels, the direct kernels and per-image GEMMs
    ran at a third to a sixth of the speed of one folded GEMM."""
    rows = images.shape[1] * kernel_hw[0] * kernel_hw[1]
    size = rows * images.shape[0] * pixels
    buffer = _scratch(("cols",), (max(size, COLUMN_BYTES // images.dtype.itemsize),), images.dtype)
    return buffer[:size].reshape(rows, images.shape[0], pixels)


def _fold(images):
    """(N, C, H, W) -> (C, N * H * W), the columns' layout (a copy unless N == 1)."""
    n, channels = images.shape[:2]
    return np.ascontiguousarray(images.reshape(n, channels, -1).transpose(1, 0, 2)).reshape(channels, -1)


def _unfold(folded, images):
    """images (N, C, H, W) = folded (C, N * H * W) put back image by image."""
    n, channels = images.shape[:2]
    images.reshape(n, channels, -1)[...] = folded.reshape(channels, n, -1).transpose(1, 0, 2)
