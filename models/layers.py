"""Building blocks shared by the models: conv3x3-norm-ReLU and the norm factory.

The norm and the ReLU after it run as one op (group_norm_relu / batch_norm_relu:
the ReLU inside the norm kernels, forward and backward). Measured side by side in
one process on the 2-core development machine (loaded, best of interleaved
runs): a width-8 U-Net training step at batch 16 took 0.89 s fused against
0.95 s as two ops, the FCN's 1.05 s against 1.15 s; a (16, 8, 64, 64) group norm
+ ReLU 3.4 ms against 4.2 ms.
"""
import gradflow.nn as nn
from gradflow.ops.norm import batch_norm_relu, group_norm_relu

NORMS = ("group", "batch")


def group_count(channels, channels_per_group=1):
    """GroupNorm groups for ``channels``.

    One channel per group (instance-style normalisation with learned affine) by
    default, by measurement: on shapes, where every image has its own random
    colours, an FCN with 1 channel per group reached val mIoU 0.66 after 8000
    images where 4 channels per group reached 0.34 and 1 group (layer-norm
    style) 0.33; per-channel statistics remove each image's colour cast, so the
    net learns outlines sooner. (BatchNorm: 0.66.)
    """
    channels_per_group = max(1, min(channels_per_group, channels))
    while channels % channels_per_group:
        channels_per_group -= 1
    return channels // channels_per_group


class GroupNormReLU(nn.GroupNorm):
    """relu(GroupNorm(x)) as one fused op; GroupNorm's parameters and state_dict keys."""

    def forward(self, input):
        return group_norm_relu(input, self.num_groups, self.weight, self.bias, self.eps)


class BatchNormReLU(nn.BatchNorm2d):
    """relu(BatchNorm2d(x)) as one fused op; BatchNorm2d's parameters, buffers and state_dict keys."""

    def forward(self, input):
        return batch_norm_relu(*self._batch_norm_arguments(input))


def norm_relu_layer(norm, channels):
    """The norm and the ReLU after it, fused."""
    if norm == "group":
        return GroupNormReLU(group_count(channels), channels)
    if norm == "batch":
        return BatchNormReLU(channels)
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def conv_norm_relu(in_channels, out_channels, norm):
    """3x3 conv (no bias: the norm's shift replaces it), then norm + ReLU."""
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), norm_relu_layer(norm, out_channels)]


def conv_block(in_channels, out_channels, norm, convs=2):
    """``convs`` conv-norm-ReLU layers as one Sequential (keys 0.weight, 1.weight, 1.bias, 2.weight, ...)."""
    layers = []
    for i in range(convs):
        layers += conv_norm_relu(in_channels if i == 0 else out_channels, out_channels, norm)
    return nn.Sequential(*layers)


def pad_to_multiple(x, multiple):
    """Zero-pad H and W (bottom/right) up to a multiple of ``multiple``; returns (padded, (H, W))."""
    import gradflow.nn.functional as F
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, (h, w)


def check_input(x, in_channels, model):
    if x.ndim != 4:
        raise ValueError(f"{model} expects input (N, C, H, W), got shape {x.shape}")
    if x.shape[1] != in_channels:
        raise ValueError(f"{model} was built for {in_channels} input channels, got input of shape {x.shape}")
