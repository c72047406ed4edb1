"""Pooling rows: 2x2 max and average pooling on (8,32,64,64)."""
import numpy as np

from bench.workloads.opcase import OpSpec, op_cases


def _distinct_input(rng):
    # a permutation of evenly spaced values: no ties, so both sides pick the same maxima
    shape = (8, 32, 64, 64)
    values = np.linspace(-3, 3, num=int(np.prod(shape)), dtype=np.float32)
    return {"x": rng.permutation(values).reshape(shape)}


SPECS = [
    OpSpec("max_pool2d_2x2", "max_pool2d 2x2 on (8,32,64,64)", ("max_pool2d",), _distinct_input, ("x",),
           lambda F, t: F.max_pool2d(t["x"], 2)),
    OpSpec("avg_pool2d_2x2", "avg_pool2d 2x2 on (8,32,64,64)", ("avg_pool2d",), _distinct_input, ("x",),
           lambda F, t: F.avg_pool2d(t["x"], 2)),
]


def cases(settings=None):
    return [c for spec in SPECS for c in op_cases(spec)]
