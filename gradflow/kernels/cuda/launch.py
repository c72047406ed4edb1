"""Launch helpers shared by the CUDA kernels: stream, grid size, array module."""
import os

import numpy as np
from numba import cuda

from gradflow import backend

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
THREADS = 256
_streams = {}


def stream():
    """A Numba stream for cupy's current stream, so Numba and CuPy work stays ordered."""
    if SIMULATOR:
        return cuda.stream()          # the simulator has no default_stream(); streams are no-ops there
    ptr = backend.current_stream_ptr()
    s = _streams.get(ptr)
    if s is None:
        s = _streams[ptr] = cuda.external_stream(ptr)
    return s


def blocks(n, threads=THREADS):
    return max(1, (n + threads - 1) // threads)


def xp_of(array):
    """numpy under the simulator (kernels run on host arrays there), else cupy."""
    return np if SIMULATOR else backend.get_array_module(array)


def device_array(array):
    """A zero-copy Numba view of a cupy array (the numpy array under the simulator).

    sync=False: we launch on cupy's current stream, so Numba need not synchronise
    on the array's stream (NUMBA_CUDA_ARRAY_INTERFACE_SYNC) before each launch."""
    if SIMULATOR:
        return array
    return cuda.as_cuda_array(array, sync=False)
