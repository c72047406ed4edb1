"""Confusion-matrix counting (CUDA, Numba), without a host read.

A grid-stride loop over the pixels adds one to counts[target, pred] per counted pixel.
The adds are integer atomics: their sum does not depend on the order they land in, so
the counts are exact and deterministic (the no-atomics rule is about float sums).
Pixels with an id outside [0, C) set a flag instead (target: bad[0], pred: bad[1]);
the caller reads the flags later, with the matrix.
"""
from numba import cuda

from gradflow.kernels.cuda import launch


@launch.kernel
def _count_pairs(pred, target, num_classes, ignore_index, use_ignore, counts, bad):
    for i in range(cuda.grid(1), target.size, cuda.gridsize(1)):
        t = target[i]
        if use_ignore and t == ignore_index:
            continue
        p = pred[i]
        if t < 0 or t >= num_classes:
            bad[0] = 1
        elif p < 0 or p >= num_classes:
            bad[1] = 1
        else:
            cuda.atomic.add(counts, t * num_classes + p, 1)


def count_pairs(pred, target, num_classes, ignore_index, counts):
    """Add the (target, pred) pairs of two int64 1-D device arrays into counts (int64,
    C*C); returns the int32 (2,) flags: [a target id out of range, a pred id out of range]."""
    xp = launch.xp_of(target)
    bad = xp.zeros(2, dtype=xp.int32)
    if target.size:
        _count_pairs(launch.blocks(target.size), launch.GEOMETRY.threads, pred, target, int(num_classes),
                     int(ignore_index if ignore_index is not None else 0), ignore_index is not None, counts, bad)
    return bad
