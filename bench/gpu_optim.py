#!/usr/bin/env python
"""One optimizer update of the FCN's parameters: gradflow's fused kernels against torch.optim.

    python bench/gpu_optim.py --device cuda [--width 16] [--out optim.json]
    python bench/gpu_optim.py --device cpu

Rows: SGD (momentum, nesterov, weight decay), Adam, AdamW (amsgrad). Each is timed on
gradflow, on torch with foreach=True (its multi-tensor kernels) and foreach=False
(one tensor at a time), interleaved, after warm-up; the ratio is gradflow / torch
foreach. The FCN at width 16 with 21 classes has 39 parameter tensors, 0.72 M values.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradflow as gf  # noqa: E402
import gradflow.optim as optim  # noqa: E402
from models.factories import build_model  # noqa: E402

CASES = [
    ("SGD momentum nesterov wd", "SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    ("Adam", "Adam", dict(lr=1e-3)),
    ("AdamW amsgrad", "AdamW", dict(lr=1e-3, weight_decay=1e-2, amsgrad=True)),
]


def _fcn_shapes(width):
    return [tuple(p.shape) for p in build_model("fcn", 21, width=width).parameters()]


def _time(step, sync, repeats):
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def run(device, width, repeats):
    import torch
    shapes = _fcn_shapes(width)
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) * 1e-2 for s in shapes]
    torch_device = "cuda" if device == "cuda" else "cpu"
    if device == "cuda":
        sync_ours, sync_torch = gf.cuda.synchronize, torch.cuda.synchronize
    else:
        sync_ours = sync_torch = lambda: None
    results = []
    for label, name, kwargs in CASES:
        ours = [gf.nn.Parameter(gf.tensor(v, device=device)) for v in values]
        for p, g in zip(ours, grads):
            p.grad = gf.tensor(g, device=device)
        opt = getattr(optim, name)(ours, **kwargs)
        sides = {"gradflow": (opt.step, sync_ours)}
        for foreach in (True, False):
            theirs = [torch.nn.Parameter(torch.tensor(v, device=torch_device)) for v in values]
            for p, g in zip(theirs, grads):
                p.grad = torch.tensor(g, device=torch_device)
            topt = getattr(torch.optim, name)(theirs, foreach=foreach, **kwargs)
            sides[f"torch foreach={foreach}"] = (topt.step, sync_torch)
        for step, sync in sides.values():       # warm up: compile, first-step state
            for _ in range(3):
                step()
            sync()
        times = {side: [] for side in sides}
        for _ in range(repeats):                # interleaved, so noise hits every side alike
            for side, (step, sync) in sides.items():
                times[side].append(_time(step, sync, 1))
        row = {side: float(np.median(t)) for side, t in times.items()}
        row["ratio"] = row["gradflow"] / row["torch foreach=True"]
        results.append((label, row))
    return shapes, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    shapes, results = run(args.device, args.width, args.repeats)
    total = sum(int(np.prod(s)) for s in shapes)
    print(f"{args.device}: {len(shapes)} parameter tensors, {total / 1e6:.2f} M values, float32; "
          f"median of {args.repeats}; load {open('/proc/loadavg').read().split()[:3]}")
    print(f"{'update':26s} {'gradflow ms':>12s} {'torch foreach ms':>17s} {'torch loop ms':>14s} {'ratio':>6s}")
    for label, row in results:
        print(f"{label:26s} {row['gradflow'] * 1e3:12.3f} {row['torch foreach=True'] * 1e3:17.3f} "
              f"{row['torch foreach=False'] * 1e3:14.3f} {row['ratio']:6.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": args.device, "tensors": len(shapes), "values": total,
                                              "rows": dict(results)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
