"""Normalisation rows: batch norm (training mode) and group norm (8 groups) on (8,32,64,64)."""
import numpy as np

from bench.workloads.opcase import OpSpec, op_cases, randn


def _norm_inputs(rng):
    x = randn(rng, 8, 32, 64, 64) * 2 + 0.5
    return {"x": x.astype(np.float32), "weight": 1 + randn(rng, 32, scale=0.1),
            "bias": randn(rng, 32, scale=0.1),
            "running_mean": np.zeros(32, np.float32), "running_var": np.ones(32, np.float32)}


SPECS = [
    OpSpec("batch_norm_train", "batch_norm training mode on (8,32,64,64)", ("batch_norm",), _norm_inputs,
           ("x", "weight", "bias"),
           lambda F, t: F.batch_norm(t["x"], t["running_mean"], t["running_var"], t["weight"], t["bias"],
                                     training=True, momentum=0.1, eps=1e-5)),
    OpSpec("group_norm_g8", "group_norm 8 groups on (8,32,64,64)", ("group_norm",), _norm_inputs,
           ("x", "weight", "bias"),
           lambda F, t: F.group_norm(t["x"], 8, t["weight"], t["bias"], eps=1e-5)),
]


def cases(settings=None):
    return [c for spec in SPECS for c in op_cases(spec)]
