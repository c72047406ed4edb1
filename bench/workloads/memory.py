"""Peak memory of one FCN-bench training step, each framework in its own fresh process.

CPU: resident set size. After two warm-up steps (kernels compiled, gradients and
momentum buffers allocated) the probe records RSS, resets the kernel's peak-RSS mark
(/proc/self/clear_refs, Linux) and runs one step; the row is the peak over that
baseline (median of 3 steps). glibc keeps freed blocks and would hide the peak, so
the probe runs with MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ at 128 KiB:
large arrays are mapped and unmapped, and RSS follows live memory (both sides alike).
GPU: gradflow = growth of CuPy's default memory pool during the step (after
free_all_blocks); PyTorch = torch.cuda.max_memory_allocated() over the step's start.

  python -m bench.workloads.memory --framework gradflow --norm gn --batch 8 --device cpu
"""
import argparse
import gc
import os
import re
import statistics
import threading
import time

from bench.harness import Case, NotLanded, gradflow_sync, torch_sync
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


def measure(framework, norm, batch, device, size=64, repeats=3):
    from bench.workloads.fcn_net import GradflowStep, TorchStep
    rss_start = _status_kb("VmRSS") * 1024 if device == "cpu" else 0
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
    peaks, resident = [], 0
    for _ in range(repeats):
        gc.collect()
        if device == "cpu":
            resident = _status_kb("VmRSS") * 1024
            with PeakRSS() as p:
                step()
            peaks.append(p.peak - resident)
        elif framework == "gradflow":
            from gradflow import backend
            pool = backend.cupy_module().get_default_memory_pool()
            pool.free_all_blocks()
            resident = pool.used_bytes()
            step()
            sync()
            peaks.append(pool.total_bytes() - resident)
        else:
            import torch
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()
            step()
            sync()
            peaks.append(torch.cuda.max_memory_allocated() - resident)
    result = {"step_peak_mb": statistics.median(peaks) / MB, "resident_mb": resident / MB}
    if device == "cpu":
        result["state_mb"] = (resident - rss_start) / MB   # model, grads, momentum, batch, caches
        result["method"] = "VmHWM" if PeakRSS().exact else "psutil sampling"
    return result


def memory_rows(norm, batch, settings):
    env = MALLOC_ENV if settings.device == "cpu" else {}
    args = ["--norm", norm, "--batch", batch, "--device", settings.device]
    gf = probe_error(run_probe("memory", ["--framework", "gradflow", *args], env))
    th = probe_error(run_probe("memory", ["--framework", "torch", *args], env))
    unit_note = "RSS" if settings.device == "cpu" else "GPU pool"
    return [{"gradflow": {"median": gf["step_peak_mb"], "n": 1}, "torch": {"median": th["step_peak_mb"], "n": 1},
             "ratio": gf["step_peak_mb"] / max(th["step_peak_mb"], 1e-9),
             "note": f"{unit_note} step peak over resident {gf['resident_mb']:.0f} / {th['resident_mb']:.0f} MB",
             "gradflow_detail": gf, "torch_detail": th}]


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
    except NotLanded as exc:
        emit({"not_landed": str(exc)})
