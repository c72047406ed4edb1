"""Convolution rows: the shapes of the convolution targets."""
from bench.workloads.opcase import OpSpec, op_cases, randn


def _conv_inputs(x_shape, w_shape, bias):
    def make(rng):
        fan_in = w_shape[1] * w_shape[2] * w_shape[3]
        return {"x": randn(rng, *x_shape), "w": randn(rng, *w_shape, scale=fan_in ** -0.5),
                "b": randn(rng, bias, scale=0.1)}
    return make


SPECS = [
    OpSpec("conv2d_3x3", "conv2d 3x3 pad 1, x (8,32,64,64) -> 32 ch", ("conv2d",),
           _conv_inputs((8, 32, 64, 64), (32, 32, 3, 3), 32), ("x", "w", "b"),
           lambda F, t: F.conv2d(t["x"], t["w"], t["b"], stride=1, padding=1)),
    OpSpec("conv2d_3x3_s2", "conv2d 3x3 stride 2 pad 1, x (8,32,64,64) -> 64 ch", ("conv2d",),
           _conv_inputs((8, 32, 64, 64), (64, 32, 3, 3), 64), ("x", "w", "b"),
           lambda F, t: F.conv2d(t["x"], t["w"], t["b"], stride=2, padding=1)),
    # conv_transpose2d weights are (in, out/groups, kH, kW), as in PyTorch
    OpSpec("conv_transpose2d_k4s2", "conv_transpose2d k4 s2 p1, x (8,32,32,32) -> 16 ch",
           ("conv_transpose2d",),
           _conv_inputs((8, 32, 32, 32), (32, 16, 4, 4), 16), ("x", "w", "b"),
           lambda F, t: F.conv_transpose2d(t["x"], t["w"], t["b"], stride=2, padding=1)),
]


def cases(settings=None):
    return [c for spec in SPECS for c in op_cases(spec)]
