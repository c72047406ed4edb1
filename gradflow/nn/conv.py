"""Conv2d and ConvTranspose2d with PyTorch's arguments, weight layouts and default init."""

from gradflow import functional as F
from gradflow.nn import init
from gradflow.nn.module import Module
from gradflow.nn.utils import _new_parameter as new_parameter
from gradflow.ops.arguments import pair

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, transposed,
                 output_padding, groups, bias, padding_mode, device=None, dtype=None):
        super().__init__()
        if groups <= 0:
            raise ValueError(f"groups must be a positive integer, got {groups}")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups (in_channels={in_channels}, groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels must be divisible by groups (out_channels={out_channels}, groups={groups})")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {set(_PADDING_MODES)}, "
                             f"but got padding_mode='{padding_mode}'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.transposed = transposed
        self.output_padding = output_padding
        self.groups = groups
        self.padding_mode = padding_mode
        # F.pad's (left, right, top, bottom) for padding='same' and non-zero padding modes.
        if isinstance(padding, str):
            self._reversed_padding_repeated_twice = [0, 0] * len(kernel_size)
            if padding == "same":
                for i, (d, k) in enumerate(zip(reversed(dilation), reversed(kernel_size))):
                    total = d * (k - 1)
                    self._reversed_padding_repeated_twice[2 * i:2 * i + 2] = [total // 2, total - total // 2]
        else:
            self._reversed_padding_repeated_twice = [p for p in reversed(padding) for _ in range(2)]
        if transposed:
            shape = (in_channels, out_channels // groups, *kernel_size)
        else:
            shape = (out_channels, in_channels // groups, *kernel_size)
        self.weight = new_parameter(shape, device, dtype)
        if bias:
            self.bias = new_parameter((out_channels,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.default_layer_init_(self.weight, self.bias)

    def extra_repr(self):
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * len(self.kernel_size):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += ", dilation={dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += ", output_padding={output_padding}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        return s.format(**self.__dict__)


class Conv2d(_ConvNd):
    """2-d convolution over NCHW input; weight (out_channels, in_channels/groups, kH, kW)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        name = type(self).__name__
        super().__init__(in_channels, out_channels, pair(kernel_size, "kernel_size", name, minimum=1),
                         pair(stride, "stride", name, minimum=1),
                         padding if isinstance(padding, str) else pair(padding, "padding", name, minimum=0),
                         pair(dilation, "dilation", name, minimum=1), False, (0, 0), groups, bias, padding_mode,
                         device, dtype)

    def _conv_padding(self, input):
        """(input padded beforehand if needed, the symmetric padding left for the conv itself)."""
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return input, (0, 0)
        if self.padding == "valid":
            return input, (0, 0)
        if self.padding == "same":
            # An even kernel needs one more row/column after than before; pad that part first.
            (left, right, top, bottom) = self._reversed_padding_repeated_twice
            if right != left or bottom != top:
                input = F.pad(input, [0, right - left, 0, bottom - top])
            return input, (top, left)
        return input, self.padding

    def forward(self, input):
        input, padding = self._conv_padding(input)
        return F.conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class ConvTranspose2d(_ConvNd):
    """Transposed 2-d convolution; weight (in_channels, out_channels/groups, kH, kW)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d does not accept padding={padding!r}; give the padding as integers")
        if padding_mode != "zeros":
            raise ValueError('Only "zeros" padding mode is supported for ConvTranspose2d')
        name = type(self).__name__
        super().__init__(in_channels, out_channels, pair(kernel_size, "kernel_size", name, minimum=1),
                         pair(stride, "stride", name, minimum=1), pair(padding, "padding", name, minimum=0),
                         pair(dilation, "dilation", name, minimum=1), True,
                         pair(output_padding, "output_padding", name, minimum=0), groups, bias, padding_mode,
                         device, dtype)

    def _output_padding(self, input, output_size):
        """The output_padding that makes the output `output_size` (H, W), as PyTorch computes it."""
        if output_size is None:
            return self.output_padding
        output_size = list(output_size)
        if len(output_size) == input.ndim:
            output_size = output_size[-2:]
        if len(output_size) != 2:
            raise ValueError(f"ConvTranspose2D: for {input.ndim}D input, output_size must have 2 or "
                             f"{input.ndim} elements (got {len(output_size)})")
        min_sizes = [(input.shape[d - 2] - 1) * self.stride[d] - 2 * self.padding[d]
                     + self.dilation[d] * (self.kernel_size[d] - 1) + 1 for d in range(2)]
        max_sizes = [min_sizes[d] + self.stride[d] - 1 for d in range(2)]
        for size, low, high in zip(output_size, min_sizes, max_sizes):
            if not low <= size <= high:
                raise ValueError(f"requested an output size of {output_size}, but valid sizes range from "
                                 f"{min_sizes} to {max_sizes} (for an input of {list(input.shape[-2:])})")
        return tuple(output_size[d] - min_sizes[d] for d in range(2))

    def forward(self, input, output_size=None):
        output_padding = self._output_padding(input, output_size)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                  self.groups, self.dilation)
