"""Which of many arrays hold a NaN or an Inf? (CUDA, Numba), without a host read.

One launch per chunk of up to CHUNK arrays of one dtype (blockIdx.y picks the array,
a grid-stride loop covers it); each block ORs its threads' findings
(syncthreads_or) into its own cell of a (arrays, blocks) flag table, and one
reduction over the blocks gives a bool per array, on the device. Used for the fused
finiteness check of a training step: the flags are read back later, with the loss.
"""
import math

from numba import cuda

from gradflow.kernels.cuda import launch

CHUNK = 32     # arrays per launch (each 1-D array argument is 7 machine words of the argument block)


@launch.kernel
def _nonfinite_chunk(arrays, first, flags):
    j = cuda.blockIdx.y
    values = arrays[j]
    found = 0
    for i in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, values.size,
                   cuda.gridDim.x * cuda.blockDim.x):
        if not math.isfinite(values[i]):
            found = 1
    found = cuda.syncthreads_or(found)
    if cuda.threadIdx.x == 0:
        flags[first + j, cuda.blockIdx.x] = found


@launch.kernel
def _nonfinite_one(values, row, flags):
    found = 0
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        if not math.isfinite(values[i]):
            found = 1
    found = cuda.syncthreads_or(found)
    if cuda.threadIdx.x == 0:
        flags[row, cuda.blockIdx.x] = found


per_array_reason = None     # why chunked launches are off (see kernels/cuda/optim.py), None: on


def nonfinite_each(arrays):
    """(len(arrays),) bool device array: does arrays[k] (a device array) hold NaN or Inf?"""
    xp = launch.xp_of(arrays[0])
    flat = [xp.ascontiguousarray(a).reshape(-1) for a in arrays]
    launches, start = [], 0
    while start < len(flat):       # runs of one dtype, at most CHUNK long
        stop = start + 1
        while stop < len(flat) and stop - start < CHUNK and flat[stop].dtype == flat[start].dtype:
            stop += 1
        launches.append((start, stop, launch.blocks(max(a.size for a in flat[start:stop]))))
        start = stop
    flags = xp.zeros((len(flat), max(grid for _, _, grid in launches)), dtype=xp.int32)
    global per_array_reason
    for start, stop, grid in launches:
        if per_array_reason is None:
            pad = xp.empty(0, dtype=flat[start].dtype)
            chunk = tuple(flat[start:stop]) + (pad,) * (CHUNK - (stop - start))
            try:
                _nonfinite_chunk((grid, stop - start), launch.GEOMETRY.threads, chunk, start, flags)
                continue
            except Exception as exc:      # fails at compile time, before anything ran
                per_array_reason = f"{type(exc).__name__}: {exc}"
        for k in range(start, stop):
            _nonfinite_one(launch.blocks(flat[k].size), launch.GEOMETRY.threads, flat[k], k, flags)
    return flags.any(axis=1)
