#!/usr/bin/env python
"""Per-launch cost of gradflow's CUDA kernels against a CuPy elementwise kernel.

    python bench/gpu_launch.py [--calls 2000] [--out launch.json]
    NUMBA_ENABLE_CUDASIM=1 python bench/gpu_launch.py --calls 3   # no GPU: checks the script only

Every row launches a tiny kernel (y = 2x + 1 on 1024 float32) `--calls` times back to
back and synchronises once, so the time per call is the host-side launch cost:

    cupy.ElementwiseKernel               the reference: CuPy's own launch
    gradflow launch.Kernel               explicit signature, DeviceView arguments, direct launch
    numba kernel[grid, block, stream]    Numba's public call on CuPy arrays (typeof + as_cuda_array)
    gradflow max_pool2d_forward (1,1,4,4) a real op: allocation, window tables (cached views), launch
    gradflow batch_norm_train_forward    a real op of three launches (partial moments, combine, normalise)

Prints a table with each row's ratio to CuPy's launch, and which launch path the
kernels took (launch.fast_path()).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gradflow import backend  # noqa: E402  first: its np.row_stack alias lets numba.cuda import
from numba import cuda  # noqa: E402
from gradflow.kernels.cuda import launch, norm, pool  # noqa: E402
from gradflow.ops import pool as pool_ops  # noqa: E402

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _affine(x, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = 2 * x[i] + 1


def _per_call(fn, calls, sync):
    fn()                 # compile / warm up
    sync()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def measure(calls):
    gpu = backend.cuda_available()
    if not gpu and not SIMULATOR:
        raise SystemExit(f"no GPU ({backend._probe_cuda()[1]}); run with NUMBA_ENABLE_CUDASIM=1 to check the script")
    xp = backend.cupy_module() if gpu else np
    sync = (lambda: xp.cuda.get_current_stream().synchronize()) if gpu else (lambda: None)
    x = xp.arange(1024, dtype=xp.float32)
    y = xp.empty_like(x)
    kernel = launch.Kernel(_affine)
    rows = {}
    if gpu:
        elementwise = xp.ElementwiseKernel("float32 x", "float32 y", "y = 2 * x + 1", "gradflow_bench_affine")
        rows["cupy.ElementwiseKernel"] = _per_call(lambda: elementwise(x, y), calls, sync)
    rows["gradflow launch.Kernel"] = _per_call(lambda: kernel(4, 256, x, y), calls, sync)
    expected = 2 * backend.to_numpy(x) + 1
    if not np.array_equal(backend.to_numpy(y), expected):
        raise AssertionError("launch.Kernel computed a wrong result")
    if gpu:
        rows["numba kernel[grid, block, stream]"] = _per_call(
            lambda: kernel.dispatcher[4, 256, launch.stream()](x, y), calls, sync)
    image = xp.asarray(np.random.default_rng(0).standard_normal((1, 1, 4, 4)).astype(np.float32))
    device = "cuda" if gpu else "cpu"
    rows_table = [pool_ops.sliding_windows(4, 2, 2, 0, device=device)] * 2
    rows["gradflow max_pool2d_forward (1,1,4,4)"] = _per_call(
        lambda: pool.max_pool2d_forward(image, *rows_table), calls, sync)
    features = xp.asarray(np.random.default_rng(1).standard_normal((2, 4, 16)).astype(np.float32))
    ones, zeros = xp.ones(4, dtype=xp.float32), xp.zeros(4, dtype=xp.float32)
    rows["gradflow batch_norm_train_forward (3 launches)"] = _per_call(
        lambda: norm.batch_norm_train_forward(features, ones, zeros, 1e-5), calls, sync)
    return rows, launch.fast_path()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="launches per timed sample")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    rows, (fast, why) = measure(args.calls)
    reference = rows.get("cupy.ElementwiseKernel")
    print(f"launch path: {'direct' if fast else 'public'} ({why}); {args.calls} calls a sample, best of 3"
          + ("; SIMULATOR: these times mean nothing" if SIMULATOR else ""))
    print(f"{'row':48s} {'us/call':>9s} {'x CuPy':>7s}")
    for name, seconds in rows.items():
        ratio = f"{seconds / reference:7.2f}" if reference else "    n/a"
        print(f"{name:48s} {seconds * 1e6:9.1f} {ratio}")
    if args.out:
        Path(args.out).write_text(json.dumps({"calls": args.calls, "fast_path": fast, "why": why,
                                              "simulator": SIMULATOR,
                                              "us_per_call": {k: v * 1e6 for k, v in rows.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
