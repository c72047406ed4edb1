"""2-D convolution and transposed convolution, as PyTorch's F.conv2d and F.conv_transpose2d.

Inputs are NCHW (or CHW, unbatched), conv2d weights (O, C / groups, KH, KW) and
conv_transpose2d weights (C_in, C_out / groups, KH, KW), as in PyTorch. The two ops are
adjoint: conv2d's input gradient is a transposed convolution and conv_transpose2d's is
a convolution, so both run on the same three kernels (gradflow.kernels.{cpu,cuda}.conv).

Bad arguments raise TypeError (wrong type or dtype), ValueError (invalid value of a
stride, padding, dilation, groups or output_padding argument) or RuntimeError (tensors
whose shapes do not fit together, as PyTorch), each naming the numbers involved.
"""
import numbers

import numpy as np

from gradflow.autograd import Function
from gradflow.kernels import conv_kernels
from gradflow.ops.arguments import pair
from gradflow.tensor import Tensor

FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.args = stride, padding, dilation, groups
        return conv_kernels(x).conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        kernels = conv_kernels(grad)
        grad_x = grad_weight = grad_bias = None
        if need_x:
            grad_x = kernels.conv_transpose2d(grad, weight, None, stride, padding, dilation, groups, x.shape[2:])
        if need_weight:
            grad_weight = kernels.conv2d_weight_grad(x, grad, weight.shape[2:], stride, padding, dilation, groups)
        if need_bias:
            grad_bias = _sum_over_pixels(grad)
        return grad_x, grad_weight, grad_bias, None, None, None, None


class ConvTranspose2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, out_hw):
        ctx.save_for_backward(x, weight)
        ctx.args = stride, padding, dilation, groups
        return conv_kernels(x).conv_transpose2d(x, weight, bias, stride, padding, dilation, groups, out_hw)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        kernels = conv_kernels(grad)
        grad_x = grad_weight = grad_bias = None
        if need_x:
            grad_x = kernels.conv2d(grad, weight, None, stride, padding, dilation, groups)
            # output_padding >= stride (allowed when dilation > stride) adds output pixels
            # that no input pixel reaches: the convolution then returns extra rows/columns
            grad_x = grad_x[:, :, :x.shape[2], :x.shape[3]]
        if need_weight:   # the weight gradient of the conv2d whose input gradient this op is
            grad_weight = kernels.conv2d_weight_grad(grad, x, weight.shape[2:], stride, padding, dilation, groups)
        if need_bias:
            grad_bias = _sum_over_pixels(grad)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


def _sum_over_pixels(grad):
    n, channels = grad.shape[:2]
    # contiguous last-axis sums first: faster and more accurate than one sum over (0, 2, 3)
    return grad.reshape(n, channels, grad.shape[2] * grad.shape[3]).sum(axis=2).sum(axis=0)   # (-1 fails when n == 0)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution. padding: int, pair, "valid" or "same" (stride 1 only; for an even
    total padding the extra row/column goes bottom/right, as PyTorch)."""
    name = "conv2d"
    x, weight, bias, unbatched = _check_tensors(name, x, weight, bias)
    stride = pair(stride, "stride", name, minimum=1)
    dilation = pair(dilation, "dilation", name, minimum=1)
    groups = _groups(name, groups)
    out_channels, per_group, kernel_h, kernel_w = weight.shape
    channels, height, width = x.shape[1:]
    _check_nonzero(name, x, weight)
    _check_groups(name, groups, out_channels, "output", weight)
    _check_groups(name, groups, channels, "input", weight)
    if channels != per_group * groups:
        raise RuntimeError(f"{name}: the input has {channels} channels, but weight of shape {weight.shape} "
                           f"with groups={groups} expects {per_group} x {groups} = {per_group * groups}")
    _check_bias(name, bias, out_channels)
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0), (0, 0))
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{name}: padding='same' is not supported for strided convolutions "
                                 f"(stride={stride})")
            pads = tuple(_same_padding(k, d) for k, d in zip((kernel_h, kernel_w), dilation))
        else:
            raise ValueError(f"{name}: invalid padding string {padding!r}, should be one of 'valid' or 'same'")
    else:
        ph, pw = pair(padding, "padding", name, minimum=0)
        pads = ((ph, ph), (pw, pw))
    padded = (height + sum(pads[0]), width + sum(pads[1]))
    span = (dilation[0] * (kernel_h - 1) + 1, dilation[1] * (kernel_w - 1) + 1)
    if padded[0] < span[0] or padded[1] < span[1]:
        raise RuntimeError(f"{name}: padded input size per channel ({padded[0]} x {padded[1]}) is smaller "
                           f"than the dilated kernel ({span[0]} x {span[1]}): kernel size can't be greater "
                           f"than the actual input size")
    out = Conv2d.apply(x, weight, bias, stride, pads, dilation, groups)
    return out.squeeze(0) if unbatched else out


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution ("deconvolution"): the input gradient of conv2d with the same weight."""
    name = "conv_transpose2d"
    x, weight, bias, unbatched = _check_tensors(name, x, weight, bias)
    stride = pair(stride, "stride", name, minimum=1)
    dilation = pair(dilation, "dilation", name, minimum=1)
    if isinstance(padding, str):
        raise TypeError(f"{name}: padding must be an int or a pair of ints, got {padding!r} "
                        f"(string padding exists for conv2d only)")
    padding = pair(padding, "padding", name, minimum=0)
    output_padding = pair(output_padding, "output_padding", name, minimum=0)
    groups = _groups(name, groups)
    in_channels, per_group, kernel_h, kernel_w = weight.shape
    channels, height, width = x.shape[1:]
    _check_nonzero(name, x, weight)
    _check_groups(name, groups, in_channels, "input", weight)
    if channels != in_channels:
        raise RuntimeError(f"{name}: the input has {channels} channels, but weight of shape {weight.shape} "
                           f"expects {in_channels} (its first dimension)")
    _check_bias(name, bias, per_group * groups)
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= max(s, d):
            raise ValueError(f"{name}: output_padding {output_padding} must be smaller than either "
                             f"stride {stride} or dilation {dilation} in each dimension")
    out_hw = tuple((size - 1) * s - 2 * p + d * (k - 1) + op + 1 for size, s, p, d, k, op in
                   zip((height, width), stride, padding, dilation, (kernel_h, kernel_w), output_padding))
    if min(out_hw) < 1:
        raise RuntimeError(f"{name}: input size per channel ({height} x {width}) gives an output of size "
                           f"({out_hw[0]} x {out_hw[1]}), which is too small: reduce the padding {padding}")
    pads = ((padding[0], padding[0]), (padding[1], padding[1]))
    out = ConvTranspose2d.apply(x, weight, bias, stride, pads, dilation, groups, out_hw)
    return out.squeeze(0) if unbatched else out


# ---- argument checks ------------------------------------------------------------------

def _check_tensors(name, x, weight, bias):
    for label, t in (("input", x), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {label} must be a Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{name}: bias must be a Tensor or None, got {type(bias).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating point input (float32 or float64), got {x.dtype}")
    for label, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{name}: input dtype ({x.dtype}) and {label} dtype ({t.dtype}) should be the same")
    if weight.ndim != 4:
        raise RuntimeError(f"{name}: expected a 4D weight, got shape {weight.shape}")
    if x.ndim not in (3, 4):
        raise RuntimeError(f"{name}: expected a 3D (unbatched) or 4D (batched) input, got {x.ndim}D "
                           f"input of shape {x.shape}")
    unbatched = x.ndim == 3
    return (x.unsqueeze(0) if unbatched else x), weight, bias, unbatched


def _check_nonzero(name, x, weight):
    if 0 in weight.shape:
        raise RuntimeError(f"{name}: weight of shape {weight.shape} has a zero-size dimension")
    if 0 in x.shape[1:]:
        raise RuntimeError(f"{name}: input of shape {x.shape} has a zero-size channel or spatial dimension")


def _check_groups(name, groups, channels, side, weight):
    if channels % groups:
        raise RuntimeError(f"{name}: groups={groups} does not divide the {channels} {side} channels "
                           f"(weight shape {weight.shape})")


def _check_bias(name, bias, channels):
    if bias is not None and bias.shape != (channels,):
        raise RuntimeError(f"{name}: bias must have shape ({channels},) for {channels} output channels, "
                           f"got {bias.shape}")


def _groups(name, groups):
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"{name}: groups must be an int, got {type(groups).__name__}")
    if groups < 1:
        raise ValueError(f"{name}: groups must be positive, got {groups}")
    return int(groups)


def _same_padding(kernel, dilation):
    """PyTorch's padding='same': total d*(k-1), the odd one out at the end (bottom/right)."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2
