"""Numba kernels: kernels/cpu (njit) and kernels/cuda (cuda.jit) hold modules of the
same names (conv, norm, pool) whose host functions take the same arguments. The
functions below pick the module for the device an array lives on.

The CUDA modules are imported only when a CuPy array arrives, so the CPU path never
imports numba.cuda (nor needs a GPU or CuPy)."""
from gradflow import backend
from gradflow.kernels.cpu import conv as cpu_conv, norm as cpu_norm, pool as cpu_pool


def conv_kernels(array):
    """gradflow.kernels.cpu.conv or gradflow.kernels.cuda.conv, for `array`'s device."""
    if backend.is_cuda_array(array):
        from gradflow.kernels.cuda import conv as cuda_conv
        return cuda_conv
    return cpu_conv


def norm_kernels(array):
    """gradflow.kernels.cpu.norm or gradflow.kernels.cuda.norm, for `array`'s device."""
    if backend.is_cuda_array(array):
        from gradflow.kernels.cuda import norm as cuda_norm
        return cuda_norm
    return cpu_norm


def pool_kernels(array):
    """gradflow.kernels.cpu.pool or gradflow.kernels.cuda.pool, for `array`'s device."""
    if backend.is_cuda_array(array):
        from gradflow.kernels.cuda import pool as cuda_pool
        return cuda_pool
    return cpu_pool
