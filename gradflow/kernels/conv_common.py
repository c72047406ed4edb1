"""The parts of the CPU and CUDA conv host functions that are plain array code (numpy
or cupy arrays alike): output sizes and the 1x1 convolution, which is a matmul."""
from gradflow import backend


def output_size(size, kernel, stride, pads, dilation):
    """conv2d's output length along one axis; pads = (before, after)."""
    return (size + pads[0] + pads[1] - dilation * (kernel - 1) - 1) // stride + 1


def is_pointwise(kernel_hw, padding):
    """A 1x1 kernel without padding: one matmul per group, whatever the stride."""
    return tuple(kernel_hw) == (1, 1) and padding == ((0, 0), (0, 0))


def pointwise(x, weight, groups, transpose):
    """1x1 convolution as one batched matmul per group: (N, G, C/G, pixels) in, same out."""
    xp = backend.get_array_module(x)
    n = x.shape[0]
    out_channels, per_group_in = weight.shape[:2]
    w = weight.reshape(groups, out_channels // groups, per_group_in)
    if transpose:
        w = w.transpose(0, 2, 1)
    x = xp.ascontiguousarray(x)
    return xp.matmul(w, x.reshape(n, groups, w.shape[2], -1))


def pointwise_conv2d(x, weight, bias, stride, groups, out_hw):
    """conv2d with a 1x1 kernel and no padding: the strided pixels times the weight."""
    out_h, out_w = out_hw
    xs = x[:, :, :out_h * stride[0]:stride[0], :out_w * stride[1]:stride[1]]
    out = pointwise(xs, weight, groups, transpose=False)
    return add_bias(out.reshape(x.shape[0], weight.shape[0], out_h, out_w), bias)


def pointwise_conv_transpose2d(x, weight, bias, stride, groups, out_hw):
    """conv_transpose2d with a 1x1 kernel and no padding: the transposed product,
    spread over every stride-th pixel of the output (zeros elsewhere)."""
    xp = backend.get_array_module(x)
    n, _, in_h, in_w = x.shape
    channels = weight.shape[1] * groups
    cols = pointwise(x, weight, groups, transpose=True).reshape(n, channels, in_h, in_w)
    if tuple(stride) == (1, 1) and tuple(out_hw) == (in_h, in_w):
        return add_bias(cols, bias)
    out = xp.zeros((n, channels) + tuple(out_hw), dtype=x.dtype)
    out[:, :, :in_h * stride[0]:stride[0], :in_w * stride[1]:stride[1]] = cols
    return add_bias(out, bias)


def pointwise_weight_grad(x, grad_out, stride, groups):
    """conv2d_weight_grad for a 1x1 kernel without padding: (O, C / groups, 1, 1)."""
    xp = backend.get_array_module(x)
    n, in_channels = x.shape[:2]
    _, out_channels, out_h, out_w = grad_out.shape
    per_group_in = in_channels // groups
    xs = xp.ascontiguousarray(x[:, :, :out_h * stride[0]:stride[0], :out_w * stride[1]:stride[1]])
    xs = xs.reshape(n, groups, per_group_in, out_h * out_w)
    g = xp.ascontiguousarray(grad_out).reshape(n, groups, out_channels // groups, out_h * out_w)
    return xp.matmul(g, xs.transpose(0, 1, 3, 2)).sum(axis=0).reshape(out_channels, per_group_in, 1, 1)


def add_bias(out, bias):
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out
