"""Small functional helpers built from core ops: relu, sigmoid, tanh, linear, pad."""
from gradflow import backend
from gradflow.autograd import Function


def relu(x, inplace=False):
    return x.relu()


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def linear(x, weight, bias=None):
    """y = x W^T + b, with weight (out_features, in_features) as PyTorch."""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input has {x.shape[-1]} features but weight {weight.shape} expects {weight.shape[1]}")
    out = x @ weight.transpose(0, 1)
    return out if bias is None else out + bias


class ConstantPad(Function):
    @staticmethod
    def forward(ctx, a, widths, value):
        ctx.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, a.shape))
        return backend.get_array_module(a).pad(a, widths, constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.slices], None, None


def pad(x, pad, mode="constant", value=0.0):
    """PyTorch's F.pad for constant mode: `pad` lists (left, right) pairs from the last dim back."""
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected an even number of values for at most {x.ndim} dims, got {pad}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding {pad} is not supported")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return ConstantPad.apply(x, tuple(widths), value)
