#!/usr/bin/env python
"""Environment report and Numba-CUDA smoke test, the first stages of bench/gpu_check.sh.

    python bench/gpu_smoke.py env     # versions, GPU, gradflow's view of CUDA, NVVM and libdevice
    python bench/gpu_smoke.py numba   # a Numba kernel on a CuPy array on CuPy's stream,
                                      # every gradflow.kernels.cuda module imports, one op
                                      # on both devices, which launch path the kernels take
    python bench/gpu_smoke.py probe   # MODULE=1/0 lines: which optional packages import
    python bench/gpu_smoke.py gpu-test-files   # test files holding gpu tests whose imports all work

Without a GPU, `numba` runs under Numba's CUDA simulator (set NUMBA_ENABLE_CUDASIM=1
before starting Python) on NumPy arrays: that checks this script, not the GPU.
Exit status 1 when a check fails.
"""
import ast
import importlib
import importlib.metadata
import os
import pkgutil
import platform
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gradflow.backend  # noqa: E402,F401  first: its np.row_stack alias lets numba.cuda import on NumPy >= 2.5
from numba import cuda  # noqa: E402  module level: the simulator swaps `cuda` in a kernel's globals


def _version(*dists):
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return "not installed"


def env():
    print(f"python {platform.python_version()} at {sys.executable}; platform {platform.platform()}")
    for label, dists in (("numpy", ["numpy"]), ("numba", ["numba"]), ("numba-cuda", ["numba-cuda"]),
                         ("cupy", ["cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"]),
                         ("torch", ["torch"]), ("pytest", ["pytest"]), ("hypothesis", ["hypothesis"])):
        print(f"{label:11s} {_version(*dists)}")
    import gradflow
    print(f"gradflow from {Path(gradflow.__file__).parent}")
    print(f"gradflow.cuda.is_available() = {gradflow.cuda.is_available()}; "
          f"why_unavailable() = {gradflow.cuda.why_unavailable()}")
    try:
        import cupy
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        print(f"cupy: CUDA runtime {rt.runtimeGetVersion()}, driver {rt.driverGetVersion()}, "
              f"{rt.getDeviceCount()} device(s); device 0: {name}, "
              f"{props['totalGlobalMem'] / 2**30:.1f} GiB, compute capability {props['major']}.{props['minor']}, "
              f"{props['multiProcessorCount']} SMs")
    except Exception as exc:
        print(f"cupy: {type(exc).__name__}: {exc}")
    try:
        import torch
        print(f"torch {torch.__version__}: CUDA {torch.version.cuda}, available {torch.cuda.is_available()}"
              + (f", {torch.cuda.get_device_name(0)}, cuDNN {torch.backends.cudnn.version()}"
                 if torch.cuda.is_available() else ""))
    except Exception as exc:
        print(f"torch: {type(exc).__name__}: {exc}")
    for key, value in nvvm_report().items():
        print(f"{key:11s} {'NOT FOUND' if value is None else value}")
    keys = ("NUMBA_CACHE_DIR", "CUPY_CACHE_DIR", "PYTHONPATH", "NUMBA_ENABLE_CUDASIM", "CUDA_VISIBLE_DEVICES",
            "NUMBA_CUDA_USE_NVIDIA_BINDING", "HYPOTHESIS_PROFILE")
    print("env: " + ", ".join(f"{k}={os.environ[k]}" for k in keys if k in os.environ))
    return True


def _add_index(a):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] += i


PROBED = ("numpy", "numba", "numba.cuda", "cupy", "torch", "pytest", "hypothesis", "matplotlib", "tqdm", "mpi4py")


def probe():
    """One MODULE=1 (imports) or MODULE=0 line per optional package, for the shell to read."""
    for name in PROBED:
        try:
            importlib.import_module(name)
            ok = 1
        except Exception:        # a broken install raises anything, not only ImportError
            ok = 0
        print(f"{name.replace('.', '_')}={ok}")
    return True


def gpu_test_files():
    """Test files with gpu-marked tests whose module-level imports all resolve here
    (a missing optional package must not abort the whole gpu-test stage)."""
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text()
        if "mark.gpu" not in text and "cuda_available()" not in text:
            continue
        missing = [name for name in _top_level_imports(ast.parse(text)) if not _importable(name)]
        if missing:
            print(f"skipping {path.relative_to(ROOT)}: missing {', '.join(missing)}", file=sys.stderr)
        else:
            print(path.relative_to(ROOT))
    return True


def _top_level_imports(tree):
    """Absolute module-level imports of a parsed file (first name of each)."""
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module.split(".")[0]


def _importable(name):
    if name in ("tests", "gradflow", "models", "bench"):
        return True
    try:
        importlib.import_module(name)
        return True
    except Exception:
        return False


def nvvm_report():
    """Where Numba finds NVVM and libdevice (what every kernel compile needs)."""
    found = {}
    try:
        from numba.cuda import cuda_paths
        paths = cuda_paths.get_cuda_paths()
        for key in ("nvvm", "libdevice"):
            entry = paths.get(key)
            found[key] = f"{entry.info} (by {entry.by})" if entry is not None and entry.info else None
    except Exception as exc:
        found["paths"] = f"unknown ({type(exc).__name__}: {exc})"
    try:
        from numba.cuda.cudadrv import nvvm
        nvvm.NVVM()
        found["nvvm_loads"] = "yes"
    except Exception as exc:
        found["nvvm_loads"] = f"no ({type(exc).__name__}: {exc})"
    return found


def _check(label, fn):
    try:
        detail = fn()
        print(f"ok    {label}" + (f": {detail}" if detail else ""))
        return True
    except Exception:
        print(f"FAIL  {label}")
        traceback.print_exc()
        return False


def numba_checks():
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    import numpy as np
    import gradflow
    real_gpu = gradflow.cuda.is_available()
    if not real_gpu and not simulator:
        print(f"no GPU ({gradflow.cuda.why_unavailable()}); run with NUMBA_ENABLE_CUDASIM=1 to check the script")
        return False
    print("mode: " + ("real GPU" if real_gpu else "Numba CUDA simulator (no GPU; checks the script only)"))
    results = []
    if real_gpu:
        results.append(_check("numba.cuda.detect()", lambda: cuda.detect() and None))

    def kernel_on_cupy_stream():
        from gradflow.kernels.cuda import launch

        xp = launch.xp_of(np.empty(0)) if simulator else gradflow.backend.cupy_module()
        a = xp.ones(1000, dtype=np.float32)
        launch.Kernel(_add_index)(launch.blocks(a.size), launch.GEOMETRY.threads, a)
        gradflow.cuda.synchronize()
        got = gradflow.backend.to_numpy(a)
        expected = 1 + np.arange(1000, dtype=np.float32)
        if not np.array_equal(got, expected):
            raise AssertionError(f"kernel result wrong: {got[:5]} ... expected {expected[:5]} ...")
        return "1000 elements on " + ("CuPy's current stream" if real_gpu else "the simulator")
    results.append(_check("Numba kernel launched through gradflow.kernels.cuda.launch", kernel_on_cupy_stream))

    def launch_path():
        from gradflow.kernels.cuda import launch
        ok, why = launch.fast_path()
        if real_gpu and not ok:
            raise AssertionError(f"kernels fall back to the slow launch: {why}")
        return why
    results.append(_check("launch path", launch_path))

    import gradflow.kernels.cuda as kernel_package
    for module in pkgutil.iter_modules(kernel_package.__path__):
        name = f"gradflow.kernels.cuda.{module.name}"
        results.append(_check(f"import {name}", lambda name=name: importlib.import_module(name) and None))

    if real_gpu:
        def conv_both_devices():
            import gradflow.functional as F
            rng = np.random.default_rng(0)
            x, w = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3))
            cpu = F.conv2d(gradflow.tensor(x), gradflow.tensor(w), padding=1).numpy()
            gpu = F.conv2d(gradflow.tensor(x, device="cuda"), gradflow.tensor(w, device="cuda"), padding=1)
            err = float(np.abs(gpu.numpy() - cpu).max())
            if err > 1e-10:
                raise AssertionError(f"conv2d float64 cuda vs cpu differ by {err:.3g}")
            return f"conv2d float64 max difference {err:.1e}"
        results.append(_check("F.conv2d on cuda equals cpu", conv_both_devices))

        def chunked_kernels():
            from gradflow import transfer
            from gradflow.kernels.cuda import finite, optim as cuda_optim
            params = [gradflow.nn.Parameter(gradflow.ones(3, 4, device="cuda")) for _ in range(3)]
            for p in params:
                p.grad = gradflow.ones(3, 4, device="cuda")
            gradflow.optim.Adam(params).step()
            flags = transfer.to_host(transfer.nonfinite_each([p.data for p in params]))
            reasons = [r for r in (cuda_optim.per_tensor_reason, finite.per_array_reason) if r]
            if reasons or flags.any():
                raise AssertionError(f"tuple-indexed kernels fell back to one launch per tensor: {reasons}")
            return "optimizer and finiteness kernels launch per chunk of tensors"
        results.append(_check("chunked optimizer / finiteness kernels", chunked_kernels))
    return all(results)


if __name__ == "__main__":
    commands = {"env": env, "numba": numba_checks, "probe": probe, "gpu-test-files": gpu_test_files}
    what = sys.argv[1] if len(sys.argv) > 1 else "env"
    if what not in commands:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(commands)}")
    ok = commands[what]()
    sys.exit(0 if ok else 1)
