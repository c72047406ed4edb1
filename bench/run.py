#!/usr/bin/env python
"""gradflow vs PyTorch, timed in the same process and run.

    python bench/run.py                      # all rows, 1 and 2 threads, CPU
    python bench/run.py --quick              # batch 8 only, fewer repeats, 1 thread (< 3 min)
    python bench/run.py --device cuda        # CuPy + Numba CUDA vs PyTorch + cuDNN
    python bench/run.py --only 'conv|fcn_gn' # rows whose name matches the regex
    python bench/run.py --list               # the rows, without running them
    python bench/run.py --time-to-accuracy   # then seconds of training to val mIoU 0.85, both engines

One worker process per thread count: thread pools (OpenBLAS, OpenMP, Numba, torch)
read their size from the environment when they start, so each count gets a fresh
process with OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS set before numpy is imported.
Inside a worker each row builds both sides from the same arrays, checks they agree,
warms up, then alternates gradflow and torch samples (ABAB...), each sample closed by
a device synchronisation. Rows report median and interquartile range.
The JSON (--out) holds the machine description and every sample statistic.
"""
import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import Settings, run_case, table_lines  # noqa: E402

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")
STABLE_MALLOC = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, FCN-bench batch 8 only, 1 thread (under 3 minutes on 2 cores)")
    p.add_argument("--threads", default=None,
                   help="comma-separated thread counts, e.g. 1,2 (default: 1,2; 1 with --quick or on cuda)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", default=None, help="JSON file (default bench/results/bench_<device>_<time>.json)")
    p.add_argument("--only", default=None, metavar="REGEX", help="run only rows whose name matches")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per side (default 15, quick 7)")
    p.add_argument("--no-probes", action="store_true", help="skip the memory and compile probes")
    p.add_argument("--stable-malloc", action="store_true",
                   help=f"set GLIBC_TUNABLES={STABLE_MALLOC} (fewer page faults, steadier numbers)")
    p.add_argument("--show", default=None, metavar="FILE.json",
                   help="print the tables of an earlier run's JSON (e.g. with --markdown) and exit")
    p.add_argument("--time-to-accuracy", action="store_true",
                   help="then train both engines to val mIoU 0.85 at each thread count (bench/time_to_accuracy.py; "
                        "minutes per count)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)   # internal: result path
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = "1" if (args.quick or args.device == "cuda") else "1,2"
    try:
        args.thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        p.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if not args.thread_counts or min(args.thread_counts) < 1:
        p.error(f"--threads needs counts >= 1, got {args.threads!r}")
    if args.only:
        try:
            re.compile(args.only)
        except re.error as exc:
            p.error(f"--only is not a valid regex: {exc}")
    return args


def selected_cases(args, settings):
    from bench.workloads import all_cases
    cases = all_cases(settings)
    if args.only:
        cases = [c for c in cases if re.search(args.only, c.name)]
    if not settings.probes:
        cases = [c for c in cases if not c.first_thread_only]
    return cases


# ---- worker: one thread count, one process ----------------------------------------------

def _write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def _short(row):
    if row["status"] != "ok":
        return f"{row['status']}: {row['note'][:100]}"
    return (f"gradflow {row['gradflow']['median']:.4g} {row['unit']}, torch {row['torch']['median']:.4g} "
            f"{row['unit']}, ratio {row['ratio']:.2f}")


def worker(args):
    threads = args.thread_counts[0]
    settings = Settings.make(args.device, args.quick, threads, probes=not args.no_probes)
    if args.repeats:
        settings.repeats = args.repeats
    import gradflow    # before anything starts Numba's pool: gradflow picks its threading layer
    if args.device == "cuda" and not gradflow.cuda.is_available():
        raise SystemExit(f"--device cuda: no usable GPU: {gradflow.cuda.why_unavailable()}")
    import torch
    torch.set_num_threads(threads)
    from bench.machine import describe
    result = {"threads": threads, "device": args.device, "machine": describe(args.device),
              "settings": dataclasses.asdict(settings), "rows": [], "complete": False}
    cases = selected_cases(args, settings)
    for i, case in enumerate(cases, 1):
        print(f"[{threads} thr {i:2d}/{len(cases)}] {case.name:28s} ", end="", flush=True)
        rows = run_case(case, settings)
        result["rows"].extend(rows)
        _write_json(args.worker, result)      # partial results survive a timeout
        print(f"({rows[0]['wall_s']:.1f} s) " + "; ".join(_short(r) for r in rows), flush=True)
    result["complete"] = True
    _write_json(args.worker, result)


# ---- orchestrator -------------------------------------------------------------------------

def _worker_env(threads, args):
    env = dict(os.environ)
    env.update({k: str(threads) for k in THREAD_ENV})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if args.stable_malloc:
        env["GLIBC_TUNABLES"] = STABLE_MALLOC
    return env


def _worker_cmd(args, threads, path, probes):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", path, "--threads", str(threads),
           "--device", args.device]
    if args.quick:
        cmd.append("--quick")
    if args.only:
        cmd += ["--only", args.only]
    if args.repeats:
        cmd += ["--repeats", str(args.repeats)]
    if not probes:
        cmd.append("--no-probes")
    return cmd


def report(args, runs, started, complete):
    machine = runs[0]["machine"] if runs else {}
    out = {"machine": machine, "device": args.device, "quick": args.quick, "threads": args.thread_counts,
           "stable_malloc": args.stable_malloc, "only": args.only, "complete": complete,
           "wall_s": round(time.time() - started, 1),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": runs}
    if args.out is None:
        results = ROOT / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        args.out = str(results / f"bench_{args.device}_{time.strftime('%Y%m%d-%H%M%S')}.json")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    _write_json(args.out, out)
    return out


def print_tables(out, markdown):
    m = out["machine"]
    v = m.get("versions", {})
    where = m.get("gpu") if out["device"] == "cuda" else m.get("cpu")
    print(f"\nMachine: {m.get('cpu')}" + (f"; GPU {m.get('gpu')}" if out["device"] == "cuda" else "")
          + f"; measured {out.get('date', '?')}")
    print("Versions: " + ", ".join(f"{k} {v[k]}" for k in ("python", "numpy", "numba", "numba-cuda", "torch", "cupy")
                                  if v.get(k)) + f"; gradflow {m.get('gradflow_commit')}")
    for run in out["runs"]:
        load = run.get("machine", {}).get("loadavg_at_start")
        print(f"\n{out['device']}, {run['threads']} thread(s), {where}"
              + (f", load average {load[0]} at start" if load else "")
              + ("" if run.get("complete") else "  [INCOMPLETE]"))
        for line in table_lines(run["rows"], markdown=markdown):
            print(line)
    for line in scaling_lines(out["runs"], markdown):
        print(line)
    print(f"\nratio = gradflow / torch (lower is better for gradflow); wall {out['wall_s']} s"
          + ("; GLIBC_TUNABLES stable-malloc settings" if out.get("stable_malloc") else ""))


def scaling_lines(runs, markdown=False):
    """Each engine's speed-up from the first thread count to each other one: median time
    at the first count / median time at the other (2.0 = twice as fast), per row."""
    if len(runs) < 2:
        return []
    base = runs[0]
    times = {r["name"]: r for r in base["rows"] if r["status"] == "ok" and r.get("unit") == "ms"}
    lines = []
    for run in runs[1:]:
        header = ("workload", f"gradflow {base['threads']}->{run['threads']} thr", f"torch {base['threads']}->"
                  f"{run['threads']} thr", f"gf/torch at {run['threads']}")
        body = []
        for row in run["rows"]:
            first = times.get(row["name"])
            if row["status"] != "ok" or first is None:
                continue
            speedups = [first[side]["median"] / row[side]["median"] for side in ("gradflow", "torch")]
            body.append((row["name"], f"{speedups[0]:.2f}x", f"{speedups[1]:.2f}x", f"{row['ratio']:.2f}x"))
        if not body:
            continue
        lines.append(f"\nscaling: time at {base['threads']} thread(s) / time at {run['threads']} "
                     f"(load average {run.get('machine', {}).get('loadavg_at_start', ['?'])[0]} at start)")
        if markdown:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in body]
        else:
            widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
            lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header] + body]
    return lines


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.show:
        with open(args.show) as f:
            print_tables(json.load(f), args.markdown)
        return 0
    if args.list:
        settings = Settings.make(args.device, args.quick, args.thread_counts[0])
        for case in selected_cases(args, settings):
            print(f"{case.name:30s} {case.unit:6s} {case.description}")
        return 0
    started = time.time()
    runs, current = [], {"path": None}

    def on_term(signum, frame):   # `timeout` sent TERM: keep what the worker has written so far
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    complete = False
    try:
        for i, threads in enumerate(args.thread_counts):
            fd, path = tempfile.mkstemp(prefix="gradflow-bench-", suffix=".json")
            os.close(fd)
            current["path"] = path
            print(f"== worker: device {args.device}, {threads} thread(s)", flush=True)
            proc = subprocess.run(_worker_cmd(args, threads, path, probes=(i == 0 and not args.no_probes)),
                                  env=_worker_env(threads, args), cwd=ROOT)
            _collect(runs, path, threads, proc.returncode)
            current["path"] = None
        complete = all(r.get("complete") for r in runs)
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted ({exc}); writing partial results", flush=True)
        if current["path"]:
            _collect(runs, current["path"], None, "interrupted")
    out = report(args, runs, started, complete)
    print_tables(out, args.markdown)
    print(f"JSON: {args.out}")
    if args.time_to_accuracy and args.device == "cpu":
        from bench import time_to_accuracy
        time_to_accuracy.main(["--threads", ",".join(str(t) for t in args.thread_counts)])
    return 0 if complete else 1


def _collect(runs, path, threads, returncode):
    try:
        with open(path) as f:
            run = json.load(f)
    except (OSError, ValueError):
        run = {"threads": threads, "machine": {}, "rows": [], "complete": False}
    run["returncode"] = returncode
    if returncode not in (0, None):
        run["complete"] = False
    runs.append(run)
    try:
        os.unlink(path)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
