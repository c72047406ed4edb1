"""Array-module-generic pieces of the CPU and CUDA conv kernels (numpy or cupy arrays)."""
from gradflow import backend


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


def add_bias(out, bias):
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out
