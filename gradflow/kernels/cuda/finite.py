"""Is any value of many arrays NaN or Inf? (CUDA, Numba), without a host read.

One launch per chunk of up to CHUNK arrays of one dtype (blockIdx.y picks the array,
a grid-stride loop covers it); each block ORs its threads' findings
(syncthreads_or) into its own slot of a flag array, and one reduction of that array
gives the answer as a 0-d device bool. Used for the fused finiteness check of a
training step: the flag is read back later, together with the loss.
"""
import math

from numba import cuda

from gradflow.kernels.cuda import launch
from gradflow.kernels.cuda.optim import CHUNK


@launch.kernel
def _nonfinite_chunk(arrays, flags):
    j = cuda.blockIdx.y
    values = arrays[j]
    found = 0
    for i in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, values.size,
                   cuda.gridDim.x * cuda.blockDim.x):
        if not math.isfinite(values[i]):
            found = 1
    found = cuda.syncthreads_or(found)
    if cuda.threadIdx.x == 0:
        flags[j * cuda.gridDim.x + cuda.blockIdx.x] = found


def any_nonfinite(arrays):
    """0-d bool device array: True when some element of `arrays` (device arrays) is NaN or Inf."""
    xp = launch.xp_of(arrays[0])
    launches = []
    by_dtype = {}
    for a in arrays:
        if a.size:
            by_dtype.setdefault(a.dtype, []).append(xp.ascontiguousarray(a).reshape(-1))
    for dtype, flat in by_dtype.items():
        pad = xp.empty(0, dtype=dtype)
        for start in range(0, len(flat), CHUNK):
            chunk = flat[start:start + CHUNK]
            launches.append((tuple(chunk) + (pad,) * (CHUNK - len(chunk)), len(chunk),
                             launch.blocks(max(a.size for a in chunk))))
    flags = xp.zeros(max(1, sum(count * grid for _, count, grid in launches)), dtype=xp.int32)
    offset = 0
    for chunk, count, grid in launches:
        _nonfinite_chunk((grid, count), launch.GEOMETRY.threads, chunk, flags[offset:offset + count * grid])
        offset += count * grid
    return flags.any()
