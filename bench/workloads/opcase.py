"""Turn one op description into two timed rows: forward, and forward+backward.

The same `call(F, tensors)` runs on both sides: gradflow.functional and
torch.nn.functional share names and argument orders (that is the API contract).
"""
import dataclasses
from typing import Callable

import numpy as np

from bench.harness import Case, Pair, rel_diff
from bench.sides import gradflow_functional, to_gradflow, to_numpy, to_torch, torch_setup


@dataclasses.dataclass
class OpSpec:
    name: str                       # row name stem, e.g. "conv2d_3x3"
    description: str
    needs: tuple                    # gradflow.functional names the row needs
    make_inputs: Callable           # rng -> {name: numpy array}, float32 / int64
    grad: tuple                     # input names differentiated in the fwd+bwd row
    call: Callable                  # (F, {name: tensor}) -> output tensor
    tolerance: float = 1e-3         # float32 agreement flagged beyond this (relative to max)


def _both_sides(spec, settings, with_grad):
    import torch
    import gradflow as gf
    F_gf = gradflow_functional(*spec.needs)
    torch_setup(settings.device, settings.threads)
    import torch.nn.functional as F_torch
    arrays = spec.make_inputs(np.random.default_rng(0))
    needs_grad = {k: with_grad and k in spec.grad for k in arrays}
    t_gf = {k: to_gradflow(a, settings.device, needs_grad[k]) for k, a in arrays.items()}
    t_torch = {k: to_torch(a, settings.device, needs_grad[k]) for k, a in arrays.items()}
    return (gf, F_gf, t_gf), (torch, F_torch, t_torch), needs_grad


def forward_pair(spec, settings):
    (gf, F_gf, t_gf), (torch, F_torch, t_torch), _ = _both_sides(spec, settings, with_grad=False)

    def run_gf():
        with gf.no_grad():
            return spec.call(F_gf, t_gf)

    def run_torch():
        with torch.no_grad():
            return spec.call(F_torch, t_torch)

    def check():
        return {"max_rel_diff": rel_diff(to_numpy(run_gf()), to_numpy(run_torch())),
                "tolerance": spec.tolerance}

    return Pair(run_gf, run_torch, check)


def forward_backward_pair(spec, settings):
    (gf, F_gf, t_gf), (torch, F_torch, t_torch), needs_grad = _both_sides(spec, settings, with_grad=True)
    leaves = [k for k, n in needs_grad.items() if n]
    probe = spec.call(F_torch, t_torch)
    if probe.dim() == 0:
        upstream_gf = upstream_torch = None
    else:
        g = np.random.default_rng(1).standard_normal(tuple(probe.shape)).astype(np.float32)
        upstream_gf, upstream_torch = to_gradflow(g, settings.device), to_torch(g, settings.device)

    def run_gf():
        for k in leaves:
            t_gf[k].grad = None
        out = spec.call(F_gf, t_gf)
        out.backward(upstream_gf)
        return out

    def run_torch():
        for k in leaves:
            t_torch[k].grad = None
        out = spec.call(F_torch, t_torch)
        out.backward(upstream_torch)
        return out

    def check():
        diffs = [rel_diff(to_numpy(run_gf().detach()), to_numpy(run_torch()))]
        diffs += [rel_diff(to_numpy(t_gf[k].grad), to_numpy(t_torch[k].grad)) for k in leaves]
        return {"max_rel_diff": max(diffs), "tolerance": spec.tolerance}

    return Pair(run_gf, run_torch, check)


def op_cases(spec):
    return [
        Case(f"{spec.name}/fwd", spec.description + ", forward (no grad)",
             lambda settings: forward_pair(spec, settings)),
        Case(f"{spec.name}/fwd+bwd", spec.description + ", forward + backward",
             lambda settings: forward_backward_pair(spec, settings)),
    ]


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)
