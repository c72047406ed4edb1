"""FCN-8s for small images, and `python models/fcn.py`: train it (defaults: shapes, whatever device exists).

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation" (2015),
scaled down: a VGG-style encoder of five stages (conv3x3-norm-ReLU blocks, each
stage ending in a 2x2 max-pool) sees the image at 1/2 ... 1/32; 1x1 "score" convs
turn the 1/8, 1/16 and 1/32 feature maps into class scores; learned transposed
convolutions, initialised to bilinear interpolation, upsample the coarse scores
2x and add the finer ones (the FCN-8s skip fusion), and a last 8x transposed
conv brings the logits to the input resolution.

The score layers start at zero, so the net starts at uniform class scores and
the skips fade in as they learn (as in the paper's staged training, here at once).
"""
import os
import sys

if __package__ in (None, ""):   # run as a script: make `models` importable from the repo root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gradflow.nn as nn
from models.layers import check_input, conv_block, pad_to_multiple


class FCN(nn.Module):
    """FCN-8s: ``FCN(num_classes)(images (N, in_channels, H, W)) -> logits (N, num_classes, H, W)``.

    ``width`` is the first stage's channel count; stages have width x (1, 2, 4, 8, 8).
    ``convs`` is the number of conv-norm-ReLU layers per stage. ``norm`` is "group"
    (GroupNorm, batch-size independent; the default) or "batch". Any H, W works:
    the input is zero-padded to a multiple of 32 and the logits cropped back.
    """

    def __init__(self, num_classes, in_channels=3, width=16, norm="group", convs=(2, 2, 2, 2, 2)):
        super().__init__()
        if num_classes < 1 or in_channels < 1 or width < 1:
            raise ValueError(f"FCN needs positive num_classes, in_channels and width, got "
                             f"{num_classes}, {in_channels}, {width}")
        if len(convs) != 5:
            raise ValueError(f"FCN has five encoder stages; convs must list five counts, got {convs}")
        self.num_classes, self.in_channels = num_classes, in_channels
        widths = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        stages, channels = [], in_channels
        for out_channels, count in zip(widths, convs):
            block = conv_block(channels, out_channels, norm, count)
            block.append(nn.MaxPool2d(2))
            stages.append(block)
            channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.score8 = nn.Conv2d(widths[2], num_classes, 1)
        self.score16 = nn.Conv2d(widths[3], num_classes, 1)
        self.score32 = nn.Conv2d(widths[4], num_classes, 1)
        self.up32 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
        self.up16 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
        self.up8 = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4, bias=False)
        for score in (self.score8, self.score16, self.score32):
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
        for up in (self.up32, self.up16, self.up8):
            nn.init.bilinear_upsampling_(up.weight)

    def forward(self, x):
        check_input(x, self.in_channels, "FCN")
        x, (h, w) = pad_to_multiple(x, 32)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        scores = self.up32(self.score32(features[4])) + self.score16(features[3])   # 1/16
        scores = self.up16(scores) + self.score8(features[2])                         # 1/8
        logits = self.up8(scores)
        if logits.shape[-2:] != (h, w):
            logits = logits[:, :, :h, :w]
        return logits


if __name__ == "__main__":
    from models.cli import main
    sys.exit(main(default_model="fcn"))
