"""Device detection and the array module: the one place that imports cupy.

A tensor's data is a numpy.ndarray on "cpu" and a cupy.ndarray on "cuda".
Ops are written once over ``xp = get_array_module(array)``.
"""
import os
import functools

import numpy as np

DEVICES = ("cpu", "cuda")

if not hasattr(np, "row_stack"):
    # NumPy 2.5 removed np.row_stack, but numba-cuda (0.30 and older) still registers an
    # overload for it when numba.cuda is imported; without this alias that import fails.
    np.row_stack = np.vstack


@functools.lru_cache(maxsize=None)
def _probe_cuda():
    """Return (cupy module or None, reason it is unusable or None)."""
    if os.environ.get("GRADFLOW_DEVICE", "").lower() == "cpu":
        return None, "GRADFLOW_DEVICE=cpu disables CUDA"
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return None, "NUMBA_ENABLE_CUDASIM=1 (the CUDA simulator is not a GPU)"
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything
        return None, f"cupy is not importable ({type(exc).__name__}: {exc}); install gradflow[gpu]"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "cupy found no CUDA device"
        cupy.zeros(1, dtype=cupy.float32).sum().item()
    except Exception as exc:
        return None, f"CUDA device not usable ({type(exc).__name__}: {exc})"
    return cupy, None


def cuda_available():
    return _probe_cuda()[0] is not None


def cupy_module():
    """The cupy module; raises a RuntimeError saying why CUDA is unusable."""
    cupy, reason = _probe_cuda()
    if cupy is None:
        raise RuntimeError(f"CUDA requested but not available: {reason}")
    return cupy


def default_device():
    wanted = os.environ.get("GRADFLOW_DEVICE", "cpu").lower() or "cpu"
    if wanted not in DEVICES:
        raise ValueError(f"GRADFLOW_DEVICE must be 'cpu' or 'cuda', got {wanted!r}")
    if wanted == "cuda":
        cupy_module()
    return wanted


def check_device(device):
    """Normalise a device spec ('cpu', 'cuda', 'cuda:0', None) to 'cpu'/'cuda'."""
    if device is None:
        return default_device()
    name = str(device).lower()
    if name.startswith("cuda"):
        name = "cuda"
    if name not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")
    if name == "cuda":
        cupy_module()
    return name


def is_cuda_array(array):
    return type(array).__module__.startswith("cupy")


def device_of(array):
    return "cuda" if is_cuda_array(array) else "cpu"


def get_array_module(array):
    if is_cuda_array(array):
        return _probe_cuda()[0]
    return np


def xp_for(device):
    return cupy_module() if device == "cuda" else np


def to_device(array, device):
    """Move an array to 'cpu' or 'cuda' (no copy when it is already there)."""
    if device == "cuda":
        cupy = cupy_module()
        return array if is_cuda_array(array) else cupy.asarray(array)
    return to_numpy(array)


def to_numpy(array):
    """A NumPy array (the array itself on the CPU); a device copy goes through gradflow.transfer."""
    if is_cuda_array(array):
        from gradflow import transfer
        return transfer.to_host(array)
    return array


def current_stream_ptr():
    """Pointer of cupy's current stream, so Numba kernels launch on it."""
    return cupy_module().cuda.get_current_stream().ptr
