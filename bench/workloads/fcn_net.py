"""The FCN-bench network and its training step, written once for both frameworks.

gradflow.nn and torch.nn share class names and arguments, so `make_fcn_bench(nn, ...)`
builds the same network from either; parameter names match (`enc1.0.weight`, ...),
which is how the gradflow copy receives PyTorch's initial weights.

Architecture: input (B,3,H,W), 5 classes.
  enc1: conv3x3(3->16)+norm+ReLU, conv3x3(16->16)+norm+ReLU, maxpool2      (GN: 4 groups)
  enc2: the same with 32 channels                                           (GN: 8 groups)
  enc3: the same with 64 channels                                           (GN: 8 groups)
  score3 = conv1x1(64->5)(enc3), up3 = conv_transpose(5->5, k4, s2, p1)
  s = up3(score3) + conv1x1(32->5)(enc2); s = up2(s) + conv1x1(16->5)(enc1)
  logits = up1(s) (conv_transpose k4 s2 p1) at input resolution
Loss: cross-entropy (mean). Optimiser: SGD lr 0.01, momentum 0.9.
One step = zero_grad, forward, loss, backward, step.
"""
import numpy as np

CLASSES = 5
IN_CHANNELS = 3


def make_fcn_bench(nn, norm="gn", classes=CLASSES):
    if norm not in ("gn", "bn"):
        raise ValueError(f"norm must be 'gn' or 'bn', got {norm!r}")

    def norm_layer(channels, groups):
        return nn.GroupNorm(groups, channels) if norm == "gn" else nn.BatchNorm2d(channels)

    def block(cin, cout, groups):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), norm_layer(cout, groups), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1), norm_layer(cout, groups), nn.ReLU(),
            nn.MaxPool2d(2))

    class FCNBench(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = block(IN_CHANNELS, 16, 4)
            self.enc2 = block(16, 32, 8)
            self.enc3 = block(32, 64, 8)
            self.score3 = nn.Conv2d(64, classes, 1)
            self.score2 = nn.Conv2d(32, classes, 1)
            self.score1 = nn.Conv2d(16, classes, 1)
            self.up3 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1)
            self.up2 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1)
            self.up1 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(e1)
            e3 = self.enc3(e2)
            s = self.up3(self.score3(e3)) + self.score2(e2)
            s = self.up2(s) + self.score1(e1)
            return self.up1(s)

    return FCNBench()


def batch_arrays(batch, size=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, IN_CHANNELS, size, size)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=(batch, size, size)).astype(np.int64)
    return x, y


class TorchStep:
    """PyTorch side: network, SGD, one batch on `device`; call it for one training step."""

    def __init__(self, norm, batch, device, size=64, seed=0):
        import torch
        torch.manual_seed(seed)
        self.torch = torch
        self.net = make_fcn_bench(torch.nn, norm).to(device)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        x, y = batch_arrays(batch, size, seed)
        self.x = torch.tensor(x, device=device)
        self.y = torch.tensor(y, device=device)
        self.loss_fn = torch.nn.functional.cross_entropy

    def weights(self):
        return {name: p.detach().cpu().numpy() for name, p in self.net.named_parameters()}

    def __call__(self):
        self.opt.zero_grad()
        loss = self.loss_fn(self.net(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss


class GradflowStep:
    """gradflow side; `weights` (name -> array) overrides gradflow's own initialisation."""

    def __init__(self, norm, batch, device, size=64, seed=0, weights=None):
        from bench.sides import gradflow_functional, gradflow_module
        import gradflow as gf
        from gradflow import backend
        nn = gradflow_module("gradflow.nn", "Module", "Sequential", "Conv2d", "ConvTranspose2d",
                             "GroupNorm" if norm == "gn" else "BatchNorm2d", "ReLU", "MaxPool2d")
        optim = gradflow_module("gradflow.optim", "SGD")
        F = gradflow_functional("conv2d", "conv_transpose2d", "max_pool2d", "cross_entropy",
                                "group_norm" if norm == "gn" else "batch_norm")
        gf.manual_seed(seed)
        self.gf = gf
        net = make_fcn_bench(nn, norm)
        moved = net.to(device)
        self.net = moved if moved is not None else net
        if weights is not None:
            params = dict(self.net.named_parameters())
            if set(params) != set(weights):
                raise RuntimeError(f"parameter names differ: gradflow-only {sorted(set(params) - set(weights))}, "
                                   f"torch-only {sorted(set(weights) - set(params))}")
            for name, value in weights.items():
                p = params[name]
                if tuple(p.shape) != value.shape:
                    raise RuntimeError(f"{name}: gradflow shape {tuple(p.shape)} vs torch {value.shape}")
                p.data[...] = backend.to_device(value.astype(p.data.dtype), device)
        self.opt = optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        x, y = batch_arrays(batch, size, seed)
        self.x = gf.tensor(x, device=device)
        self.y = gf.tensor(y, device=device)
        self.loss_fn = F.cross_entropy

    def __call__(self):
        self.opt.zero_grad()
        loss = self.loss_fn(self.net(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def graph_size(self):
        """Autograd nodes recorded by one forward + loss (the ops a step launches, roughly)."""
        loss = self.loss_fn(self.net(self.x), self.y)
        seen, stack = set(), [loss._ctx]
        while stack:
            ctx = stack.pop()
            if ctx is None or id(ctx) in seen:
                continue
            seen.add(id(ctx))
            stack.extend(e[0] for e in ctx.edges if type(e) is tuple)
        return len(seen)
