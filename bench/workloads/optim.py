"""Optimizer rows: one update of the FCN's parameters (width 16, 21 classes: 39 tensors,
0.72 M float32 values), gradflow's fused kernels against torch.optim with foreach=True."""
import numpy as np

from bench.harness import Case, Pair, rel_diff
from bench.sides import gradflow_module, torch_setup

WIDTH, CLASSES = 16, 21
CASES = [   # row name, optimizer class, options (the same for both engines)
    ("optim_sgd_nesterov", "SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    ("optim_adam", "Adam", dict(lr=1e-3)),
    ("optim_adamw_amsgrad", "AdamW", dict(lr=1e-3, weight_decay=1e-2, amsgrad=True)),
]


def _arrays():
    from models.factories import build_model
    shapes = [tuple(p.shape) for p in build_model("fcn", CLASSES, width=WIDTH).parameters()]
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [(rng.standard_normal(s) * 1e-2).astype(np.float32) for s in shapes]
    return values, grads


def step_pair(name, kwargs, settings):
    import torch
    gf = gradflow_module("gradflow", "tensor")
    optim = gradflow_module("gradflow.optim", name)
    torch_setup(settings.device, settings.threads)
    values, grads = _arrays()
    ours = [gf.nn.Parameter(gf.tensor(v, device=settings.device)) for v in values]
    theirs = [torch.nn.Parameter(torch.tensor(v, device=settings.device)) for v in values]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = gf.tensor(g, device=settings.device), torch.tensor(g, device=settings.device)
    ours_step = getattr(optim, name)(ours, **kwargs).step
    theirs_step = getattr(torch.optim, name)(theirs, foreach=True, **kwargs).step

    def check():
        for _ in range(3):
            ours_step()
            theirs_step()
        diffs = [rel_diff(gf.backend.to_numpy(p.data), q.detach().cpu().numpy()) for p, q in zip(ours, theirs)]
        return {"max_rel_diff": max(diffs), "tolerance": 1e-5}

    return Pair(ours_step, theirs_step, check)


def cases(settings=None):
    return [Case(f"{row}/step", f"{name}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) update of the FCN's "
                 f"parameters (width {WIDTH}, {CLASSES} classes), vs torch foreach",
                 lambda s, name=name, kwargs=kwargs: step_pair(name, kwargs, s))
            for row, name, kwargs in CASES]
