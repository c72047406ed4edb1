"""First-call cost of the FCN-bench step: Numba compile with a cold and with a warm cache.

Each measurement is a fresh process. Cold: NUMBA_CACHE_DIR (and CUPY_CACHE_DIR) point
at a new empty folder; warm: a second process with the same folders. The probe times
`import`, then for GN and BN (batch 8) building the model plus its first train step,
and the median of 3 further steps; the row is
    import + sum over GN, BN of (build + first step - steady step)
i.e. everything a user waits for beyond steady-state training. PyTorch's column is
the same quantity for torch (no JIT; its first call initialises oneDNN / cuDNN).

  python -m bench.workloads.compile --framework gradflow --device cpu
"""
import time

START = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402

from bench.harness import Case, NotAvailable, gradflow_sync, torch_sync  # noqa: E402
from bench.probe import emit, probe_error, run_probe  # noqa: E402

NORMS = ("gn", "bn")


def measure(framework, device, batch):
    if framework == "gradflow":
        import gradflow.nn  # noqa: F401
        sync = gradflow_sync(device)
    else:
        import torch  # noqa: F401  (threads: OMP_NUM_THREADS, inherited from the worker)
        sync = torch_sync(device)
    result = {"import_s": time.perf_counter() - START, "first_s": {}, "steady_s": {}}
    from bench.workloads.fcn_net import GradflowStep, TorchStep
    for norm in NORMS:
        t0 = time.perf_counter()
        step = GradflowStep(norm, batch, device) if framework == "gradflow" else TorchStep(norm, batch, device)
        step()
        sync()
        result["first_s"][norm] = time.perf_counter() - t0
        steady = []
        for _ in range(3):
            t0 = time.perf_counter()
            step()
            sync()
            steady.append(time.perf_counter() - t0)
        result["steady_s"][norm] = statistics.median(steady)
    result["overhead_s"] = result["import_s"] + sum(
        result["first_s"][n] - result["steady_s"][n] for n in NORMS)
    return result


def compile_rows(settings, batch=8):
    cache = tempfile.mkdtemp(prefix="gradflow-bench-cache-")
    env = {"NUMBA_CACHE_DIR": os.path.join(cache, "numba"), "CUPY_CACHE_DIR": os.path.join(cache, "cupy")}
    args = ["--device", settings.device, "--batch", batch]
    th = probe_error(run_probe("compile", ["--framework", "torch", *args]))
    cold = probe_error(run_probe("compile", ["--framework", "gradflow", *args], env))
    warm = probe_error(run_probe("compile", ["--framework", "gradflow", *args], env))
    rows = []
    for label, gf in (("cold", cold), ("warm", warm)):
        rows.append({"name": f"compile/fcn_step_{label}",
                     "description": f"import + first-call overhead of the FCN-bench GN and BN steps, "
                                    f"{label} Numba cache",
                     "gradflow": {"median": gf["overhead_s"], "n": 1},
                     "torch": {"median": th["overhead_s"], "n": 1},
                     "ratio": gf["overhead_s"] / max(th["overhead_s"], 1e-9),
                     "note": f"import {gf['import_s']:.1f} s vs {th['import_s']:.1f} s",
                     "gradflow_detail": gf, "torch_detail": th})
    return rows


def cases(settings):
    return [Case("compile/fcn_step", "first-call overhead, cold and warm Numba cache",
                 compile_rows, kind="probe", unit="s", first_thread_only=True)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", choices=["gradflow", "torch"], required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    a = parser.parse_args()
    try:
        emit(measure(a.framework, a.device, a.batch))
    except NotAvailable as exc:
        emit({"not_available": str(exc)})
