"""Peak memory of one FCN-bench training step, each framework in its own fresh process.

CPU: resident set size. The probe imports the framework, records RSS, builds the
network and runs two warm-up steps (kernels loaded, gradients and momentum allocated);
then it resets the kernel's peak-RSS mark (/proc/self/clear_refs, Linux) and runs one
step. The row is that peak over the post-import RSS (median of 3 steps): weights,
gradients, momentum, the batch, cached buffers, loaded kernels and activations; the
note gives the part the step itself adds over the state between steps. glibc keeps
freed blocks and would hide the peak, so the probe runs with MALLOC_MMAP_THRESHOLD_ /
MALLOC_TRIM_THRESHOLD_ at 128 KiB: large arrays are mapped and unmapped, and RSS
follows live memory (both sides alike).
GPU: gradflow = CuPy's default memory pool after free_all_blocks() then one step
(pool.total_bytes(): its high-water mark); PyTorch = torch.cuda.max_memory_allocated()
after reset_peak_memory_stats(). Both count arrays only, not the CUDA context or code.

  python -m bench.workloads.memory --framework gradflow --norm gn --batch 8 --device cpu
"""
import argparse
import gc
import os
import re
import statistics
import threading
import time

from bench.harness import Case, NotAvailable, gradflow_sync, torch_sync
from bench.probe import emit, probe_error, run_probe

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
MB = 1024 * 1024


def _status_kb(field):
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


class PeakRSS:
    """Peak RSS over a block: the kernel's high-water mark, or a 0.5 ms sampler as fallback."""

    def __init__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.exact = True
        except OSError:
            self.exact = False

    def __enter__(self):
        if self.exact:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return self
        import psutil
        proc, self._peak, self._stop = psutil.Process(), 0, threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, proc.memory_info().rss)
                time.sleep(0.0005)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.exact:
            self.peak = _status_kb("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak = self._peak


def _import_framework(framework, norm):
    """Import everything the step uses, so the baseline holds the libraries but no data."""
    if framework == "gradflow":
        import gradflow.nn  # noqa: F401
        import gradflow.optim  # noqa: F401
        from bench.sides import gradflow_functional
        gradflow_functional("conv2d", "conv_transpose2d", "max_pool2d", "cross_entropy",
                            "group_norm" if norm == "gn" else "batch_norm")
    else:
        import torch.nn  # noqa: F401
        import torch.optim  # noqa: F401


def measure(framework, norm, batch, device, size=64, repeats=3):
    """Peak memory of steady-state steps: `footprint` over the process after imports
    (weights, gradients, momentum, batch, cached buffers, loaded kernels, activations)
    and `transient` over the state between steps (what the step itself allocates)."""
    from bench.workloads.fcn_net import GradflowStep, TorchStep
    _import_framework(framework, norm)
    gc.collect()
    rss_imports = _status_kb("VmRSS") * 1024 if device == "cpu" else 0
    if framework == "gradflow":
        step = GradflowStep(norm, batch, device, size)
        sync = gradflow_sync(device)
    else:
        from bench.sides import torch_setup
        torch_setup(device, int(os.environ.get("OMP_NUM_THREADS", "1")))
        step = TorchStep(norm, batch, device, size)
        sync = torch_sync(device)
    for _ in range(2):
        step()
    sync()
    footprint, transient, resident = [], [], 0
    for _ in range(repeats):
        gc.collect()
        if device == "cpu":
            resident = _status_kb("VmRSS") * 1024
            with PeakRSS() as p:
                step()
            peak = p.peak
            base = rss_imports
        elif framework == "gradflow":
            from gradflow import backend
            pool = backend.cupy_module().get_default_memory_pool()
            pool.free_all_blocks()
            resident = pool.used_bytes()
            step()
            sync()
            peak, base = pool.total_bytes(), 0      # the pool only ever holds arrays
        else:
            import torch
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()
            step()
            sync()
            peak, base = torch.cuda.max_memory_allocated(), 0
        footprint.append(peak - base)
        transient.append(peak - resident)
    result = {"footprint_mb": statistics.median(footprint) / MB, "transient_mb": statistics.median(transient) / MB,
              "between_steps_mb": (resident - rss_imports) / MB}
    if device == "cpu":
        result["after_imports_mb"] = rss_imports / MB
        result["method"] = "VmHWM" if PeakRSS().exact else "psutil sampling"
    return result


def memory_rows(norm, batch, settings):
    env = MALLOC_ENV if settings.device == "cpu" else {}
    args = ["--norm", norm, "--batch", batch, "--device", settings.device]
    gf = probe_error(run_probe("memory", ["--framework", "gradflow", *args], env))
    th = probe_error(run_probe("memory", ["--framework", "torch", *args], env))
    name = f"memory/fcn_{norm}_b{batch}"
    total = "RSS peak over the process after imports" if settings.device == "cpu" else "allocator peak"
    rows = []
    for suffix, key, description, note in (
            ("step", "transient_mb", "peak of one train step over the state kept between steps",
             f"between steps {gf['between_steps_mb']:.0f} / {th['between_steps_mb']:.0f} MB"),
            ("total", "footprint_mb", f"{total} during a train step",
             "incl. lazily loaded kernels/libraries" if settings.device == "cpu" else "arrays only")):
        rows.append({"name": f"{name}/{suffix}", "description": description,
                     "gradflow": {"median": gf[key], "n": 1}, "torch": {"median": th[key], "n": 1},
                     "ratio": gf[key] / max(th[key], 1e-9), "note": note,
                     "gradflow_detail": gf, "torch_detail": th})
    return rows


def cases(settings):
    batch = 8
    return [Case(f"memory/fcn_{norm}_b{batch}",
                 f"peak memory of one FCN-bench {norm.upper()} train step, batch {batch}, over steady state",
                 lambda s, norm=norm: memory_rows(norm, batch, s), kind="probe", unit="MB",
                 first_thread_only=True)
            for norm in ("gn", "bn")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--framework", choices=["gradflow", "torch"], required=True)
    parser.add_argument("--norm", choices=["gn", "bn"], default="gn")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = parser.parse_args()
    try:
        emit(measure(a.framework, a.norm, a.batch, a.device))
    except NotAvailable as exc:
        emit({"not_available": str(exc)})
