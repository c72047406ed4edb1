"""Loss row: pixel-wise cross-entropy, logits (8,21,64,64), 5% of pixels ignored (255)."""
import numpy as np

from bench.workloads.opcase import OpSpec, op_cases, randn

IGNORE = 255


def _ce_inputs(rng):
    target = rng.integers(0, 21, size=(8, 64, 64)).astype(np.int64)
    target[rng.random(target.shape) < 0.05] = IGNORE
    return {"logits": randn(rng, 8, 21, 64, 64, scale=2.0), "target": target}


SPECS = [
    OpSpec("cross_entropy", "cross_entropy (8,21,64,64), 5% pixels ignored, mean", ("cross_entropy",),
           _ce_inputs, ("logits",),
           lambda F, t: F.cross_entropy(t["logits"], t["target"], ignore_index=IGNORE)),
]


def cases(settings=None):
    return [c for spec in SPECS for c in op_cases(spec)]
