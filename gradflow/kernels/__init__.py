"""Numba kernels: kernels/cpu (njit) and kernels/cuda (cuda.jit) hold modules of the
same names whose host functions take the same arguments; ``for_array`` picks one."""
import importlib

from gradflow import backend


def for_array(array, name):
    """The kernel module `name` for the device `array` lives on."""
    target = "cuda" if backend.is_cuda_array(array) else "cpu"
    return importlib.import_module(f"gradflow.kernels.{target}.{name}")
