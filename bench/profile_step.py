#!/usr/bin/env python
"""Where does a gradflow FCN-bench training step spend its time?

    python bench/profile_step.py                    # GN, batch 8, CPU, 1 thread, pyinstrument
    python bench/profile_step.py --norm bn --batch 32 --steps 10
    python bench/profile_step.py --cprofile         # cProfile instead (function call counts)
    python bench/profile_step.py --device cuda       # host-side view of the GPU step

Prints the call tree (pyinstrument) and a flat list of the hottest functions by
self time: the Numba kernels show up as the Python host functions that call them,
the BLAS calls as numpy.matmul / dot. Kernels are compiled (or loaded from Numba's
cache) in warm-up steps that are not profiled.
"""
import argparse
import os
import sys
from pathlib import Path

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--norm", choices=["gn", "bn"], default="gn")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64, help="image side (default 64)")
    p.add_argument("--steps", type=int, default=20, help="profiled steps (default 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="thread count for BLAS/Numba (default 1; set before numpy is imported)")
    p.add_argument("--cprofile", action="store_true", help="use cProfile instead of pyinstrument")
    p.add_argument("--top", type=int, default=25, help="rows of the flat hot-spot list")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for key in THREAD_ENV:             # before numpy / numba start their thread pools
        os.environ.setdefault(key, str(args.threads))
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    import time

    from bench.harness import gradflow_sync
    from bench.workloads.fcn_net import GradflowStep

    step = GradflowStep(args.norm, args.batch, args.device, args.size)
    sync = gradflow_sync(args.device)
    for _ in range(args.warmup):
        step()
    sync()

    def run():
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        return (time.perf_counter() - t0) / args.steps

    print(f"FCN-bench {args.norm.upper()} train step, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.device}, {os.environ['NUMBA_NUM_THREADS']} thread(s), {args.steps} steps profiled")
    if args.cprofile:
        import cProfile
        import pstats
        profiler = cProfile.Profile()
        per_step = profiler.runcall(run)
        print(f"{per_step * 1e3:.1f} ms per step under cProfile (profiling inflates Python-heavy code)\n")
        stats = pstats.Stats(profiler).strip_dirs()
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
        return 0
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("pyinstrument is not installed (pip install pyinstrument); use --cprofile", file=sys.stderr)
        return 2
    profiler = Profiler(interval=0.0005)
    profiler.start()
    per_step = run()
    profiler.stop()
    print(f"{per_step * 1e3:.1f} ms per step\n")
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    print(f"Hot spots by self time (top {args.top}):")
    flat = profiler.output_text(unicode=True, color=False, flat=True, flat_time="self")
    rows = [line for line in flat.splitlines() if line[:1].isdigit()]
    print("\n".join(rows[:args.top]))
    print("(Numba-compiled kernels are sampled without their Python callers, so they show up at the\n"
          " root of the tree; seconds are totals over the profiled steps.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
