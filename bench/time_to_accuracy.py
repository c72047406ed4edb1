#!/usr/bin/env python
"""Seconds of training until val mIoU reaches a target, gradflow and PyTorch side by side.

    python bench/time_to_accuracy.py                       # 1 and 2 threads, target 0.85
    python bench/time_to_accuracy.py --threads 1 --max-seconds 120
    python bench/run.py --time-to-accuracy                 # the same, after run.py's tables

The same FCN-bench network (bench/workloads/fcn_net.py, 4 classes) starts from the same
weights (PyTorch's initialisation, copied into gradflow), is fed the same batches of the
built-in shapes dataset (64x64) in the same order, and is trained with the same
optimiser (Adam, lr 3e-3) by both engines, one step of each in turn, so the machine's
load hits both alike. Only the training steps are timed; every --eval-every steps each
engine's val mIoU is measured (untimed), and an engine stops once it reaches the target.
One process per thread count, its thread pools sized before numpy is imported.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--target", type=float, default=0.85, help="val mIoU to reach (default 0.85)")
    p.add_argument("--norm", choices=("gn", "bn"), default="gn")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=50, help="steps between val mIoU measurements")
    p.add_argument("--max-seconds", type=float, default=600.0, help="training seconds per engine before giving up")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    if not args.thread_counts or min(args.thread_counts) < 1:
        p.error(f"--threads needs counts >= 1, got {args.threads!r}")
    return args


def _arrays(dataset):
    import numpy as np
    images, masks = zip(*(dataset[i] for i in range(len(dataset))))
    return np.stack(images), np.stack(masks)


class Engine:
    """One side: network, optimiser, train-step timing and val mIoU."""

    def __init__(self, name, net, optimizer, step, predict):
        self.name, self.net, self.optimizer = name, net, optimizer
        self.step, self.predict = step, predict
        self.train_seconds, self.steps, self.reached, self.curve = 0.0, 0, None, []


def build_engines(classes, norm, lr):
    import numpy as np
    import torch

    import gradflow as gf
    import gradflow.functional as F
    from bench.workloads.fcn_net import make_fcn_bench

    torch.manual_seed(0)
    torch_net = make_fcn_bench(torch.nn, norm, classes=classes)
    gf_net = make_fcn_bench(gf.nn, norm, classes=classes)
    gf_params = dict(gf_net.named_parameters())
    for name, p in torch_net.named_parameters():
        gf_params[name].data[...] = p.detach().numpy()
    torch_opt = torch.optim.Adam(torch_net.parameters(), lr=lr)
    gf_opt = gf.optim.Adam(gf_net.parameters(), lr=lr)

    def torch_step(x, y):
        torch_opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch_net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        torch_opt.step()
        return float(loss.detach())

    def gf_step(x, y):
        gf_opt.zero_grad()
        loss = F.cross_entropy(gf_net(gf.tensor(x)), gf.tensor(y))
        loss.backward()
        gf_opt.step()
        return float(loss.item())

    def torch_predict(x):
        torch_net.eval()
        with torch.no_grad():
            out = torch_net(torch.from_numpy(x)).numpy()
        torch_net.train()
        return out

    def gf_predict(x):
        gf_net.eval()
        with gf.no_grad():
            out = gf_net(gf.tensor(x)).numpy()
        gf_net.train()
        return np.asarray(out)

    return [Engine("gradflow", gf_net, gf_opt, gf_step, gf_predict),
            Engine("torch", torch_net, torch_opt, torch_step, torch_predict)]


def val_miou(engine, val_x, val_y, classes, batch=50):
    from gradflow.metrics import ConfusionMatrix
    matrix = ConfusionMatrix(classes)
    for i in range(0, len(val_x), batch):
        matrix.update(engine.predict(val_x[i:i + batch]).argmax(axis=1), val_y[i:i + batch])
    return matrix.compute()["miou"]


def worker(args):
    import numpy as np
    import torch

    from gradflow.data import get_splits
    threads = args.thread_counts[0]
    torch.set_num_threads(threads)
    train, val = get_splits("shapes", image_size=64, seed=0, train_size=args.train_size, val_size=args.val_size)
    train_x, train_y = _arrays(train)
    val_x, val_y = _arrays(val)
    classes = train.num_classes
    engines = build_engines(classes, args.norm, args.lr)
    order = np.random.default_rng(0)
    batches_per_epoch = len(train_x) // args.batch
    step = 0
    permutation = order.permutation(len(train_x))
    while any(e.reached is None and e.train_seconds < args.max_seconds for e in engines):
        if step and step % batches_per_epoch == 0:
            permutation = order.permutation(len(train_x))
        index = permutation[(step % batches_per_epoch) * args.batch:(step % batches_per_epoch + 1) * args.batch]
        x, y = train_x[index], train_y[index]
        step += 1
        for engine in engines:            # one step each, in turn: the load hits both alike
            if engine.reached is not None or engine.train_seconds >= args.max_seconds:
                continue
            start = time.perf_counter()
            engine.step(x, y)
            engine.train_seconds += time.perf_counter() - start
            engine.steps += 1
            if engine.steps % args.eval_every == 0:
                miou = val_miou(engine, val_x, val_y, classes)
                engine.curve.append((engine.steps, round(engine.train_seconds, 2), round(miou, 4)))
                if miou >= args.target:
                    engine.reached = engine.train_seconds
                print(f"[{threads} thr] {engine.name:8s} step {engine.steps:5d}: {engine.train_seconds:7.1f} s of "
                      f"training, val mIoU {engine.curve[-1][2]:.3f}", flush=True)
    result = {"threads": threads, "loadavg": list(os.getloadavg()),
              "engines": {e.name: {"seconds_to_target": e.reached, "steps": e.steps,
                                   "train_seconds": round(e.train_seconds, 2), "curve": e.curve} for e in engines}}
    with open(args.worker, "w") as f:
        json.dump(result, f)


def report_lines(args, results):
    lines = [f"\ntime to val mIoU {args.target} (FCN-bench {args.norm.upper()}, shapes 64x64, batch {args.batch}, "
             f"Adam {args.lr:g}, same weights and batches; seconds of training steps)",
             "threads  gradflow s (steps)    torch s (steps)       gf/torch  load average"]
    for r in results:
        g, t = r["engines"]["gradflow"], r["engines"]["torch"]

        def cell(e):
            return (f"{e['seconds_to_target']:.1f} ({e['steps']})" if e["seconds_to_target"] is not None
                    else f">{e['train_seconds']:.0f} (not reached)")
        ratio = (f"{g['seconds_to_target'] / t['seconds_to_target']:.2f}x"
                 if g["seconds_to_target"] and t["seconds_to_target"] else "-")
        lines.append(f"{r['threads']:<8} {cell(g):<21} {cell(t):<21} {ratio:<9} {r['loadavg'][0]:.2f}")
    return lines


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    results = []
    for threads in args.thread_counts:
        env = dict(os.environ, **{k: str(threads) for k in THREAD_ENV})
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        fd, path = tempfile.mkstemp(prefix="gradflow-tta-", suffix=".json")
        os.close(fd)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", path, "--threads", str(threads),
               "--target", str(args.target), "--norm", args.norm, "--batch", str(args.batch), "--lr", str(args.lr),
               "--train-size", str(args.train_size), "--val-size", str(args.val_size),
               "--eval-every", str(args.eval_every), "--max-seconds", str(args.max_seconds)]
        subprocess.run(cmd, env=env, cwd=ROOT, check=True)
        with open(path) as f:
            results.append(json.load(f))
        os.unlink(path)
    for line in report_lines(args, results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
