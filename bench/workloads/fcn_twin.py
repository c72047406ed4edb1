"""The README's FCN (models/fcn.py) written in PyTorch, parameter for parameter.

Our FCN's state_dict (or best.safetensors) loads into `torch_fcn(...)` by key, and the
two compute the same function for inputs whose height and width are multiples of 32
(the twin has no pad-and-crop). The tests check that (tests/models/test_fcn.py), and
bench/time_to_accuracy.py trains the pair side by side.
"""
import torch


class TorchGroupNormReLU(torch.nn.GroupNorm):
    """relu(GroupNorm(x)): models.layers.GroupNormReLU's twin."""

    def forward(self, x):
        return torch.relu(super().forward(x))


class TorchBatchNormReLU(torch.nn.BatchNorm2d):
    """relu(BatchNorm2d(x)): models.layers.BatchNormReLU's twin."""

    def forward(self, x):
        return torch.relu(super().forward(x))


def torch_fcn(num_classes, width, norm):
    """FCN-8s with models.fcn.FCN's layers and names; norm "group" (one channel per group) or "batch"."""
    nn = torch.nn

    def block(cin, cout, count):
        layers = []
        for i in range(count):
            norm_layer = TorchGroupNormReLU(cout, cout) if norm == "group" else TorchBatchNormReLU(cout)
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), norm_layer]
        return nn.Sequential(*layers, nn.MaxPool2d(2))

    class TorchFCN(nn.Module):
        def __init__(self):
            super().__init__()
            w = [width, 2 * width, 4 * width, 8 * width, 8 * width]
            self.stages = nn.ModuleList(block(i, o, c) for i, o, c in zip([3] + w[:4], w, (2, 2, 2, 2, 2)))
            self.score8, self.score16, self.score32 = (nn.Conv2d(c, num_classes, 1) for c in (w[2], w[3], w[4]))
            self.up32 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
            self.up16 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
            self.up8 = nn.ConvTranspose2d(num_classes, num_classes, 16, 8, 4, bias=False)

        def forward(self, x):
            feats = []
            for stage in self.stages:
                x = stage(x)
                feats.append(x)
            s = self.up32(self.score32(feats[4])) + self.score16(feats[3])
            s = self.up16(s) + self.score8(feats[2])
            return self.up8(s)

    return TorchFCN()
