"""What the numbers were measured on: CPU, GPU, library versions, thread settings."""
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_KEYS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
            "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_THREADING_LAYER", "GLIBC_TUNABLES",
            "NUMBA_CACHE_DIR", "GRADFLOW_DEVICE", "CUDA_VISIBLE_DEVICES",
            "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")      # PyTorch held to AVX2, say


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        model = fields.get("Model name", "?")
        extra = [f"{fields.get('CPU(s)', '?')} logical CPUs"]
        if "L2 cache" in fields:
            extra.append(f"L2 {fields['L2 cache']}")
        if "Hypervisor vendor" in fields:
            extra.append(f"{fields['Hypervisor vendor']} VM")
        return f"{model} ({', '.join(extra)})"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions():
    out = {"python": platform.python_version()}
    for name, dists in (("numpy", ["numpy"]), ("numba", ["numba"]), ("numba-cuda", ["numba-cuda"]),
                        ("torch", ["torch"]), ("cupy", ["cupy", "cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x"]),
                        ("threadpoolctl", ["threadpoolctl"])):
        out[name] = next((v for v in map(_version, dists) if v), None)
    try:
        import torch
        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    except ImportError:
        pass
    return out


def git_commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def thread_info():
    info = {}
    try:
        import numba
        info["numba_threads"] = numba.get_num_threads()    # starts the pool, so the layer is known
        info["numba_threading_layer"] = numba.threading_layer()
    except ImportError:
        pass
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import numpy  # noqa: F401  (load BLAS so threadpoolctl can see it)
        from threadpoolctl import threadpool_info
        info["blas"] = [{k: p.get(k) for k in ("internal_api", "num_threads", "version", "architecture")}
                        for p in threadpool_info()]
    except ImportError:
        pass
    return info


def gpu_info():
    info = {}
    try:
        from gradflow import backend
        if backend.cuda_available():
            cupy = backend.cupy_module()
            props = cupy.cuda.runtime.getDeviceProperties(0)
            name = props["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else name
            info["gpu_memory_gb"] = round(props["totalGlobalMem"] / 2**30, 1)
            info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
            info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        else:
            info["gpu"] = None
            info["why_no_gpu"] = backend._probe_cuda()[1]
    except Exception as exc:   # report, never fail the benchmark over a description
        info["gpu_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import torch
        if torch.cuda.is_available():
            info["torch_gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def _loadavg():
    """1/5/15-minute load: other processes on a shared machine distort timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def describe(device):
    info = {"cpu": cpu_model(), "platform": platform.platform(), "versions": versions(),
            "gradflow_commit": git_commit(), "threads": thread_info(),
            "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
            "loadavg_at_start": _loadavg()}
    if device == "cuda":
        info.update(gpu_info())
    return info
