"""Python overhead per op: tiny tensors, where launching an op costs more than its math.

Rows report microseconds per op (time of one call / ops in it), the same divisor on both sides:
  overhead/chain       x (16,16): 10 x (y * w + b).tanh(), sum, backward: 31 ops forward
  overhead/fcn_tiny    the FCN-bench GN train step at (1,3,8,8); ops = autograd nodes of
                       gradflow's forward graph (the step also runs backward and SGD)
"""
import numpy as np

from bench.harness import Case, Pair, rel_diff
from bench.sides import to_gradflow, to_numpy, to_torch, torch_setup
from bench.workloads.fcn_net import GradflowStep, TorchStep

CHAIN_LENGTH = 10


def chain_pair(settings):
    torch_setup(settings.device, settings.threads)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((16, 16)).astype(np.float32) * s for s in (1.0, 0.5, 0.1)]
    gf_x, gf_w, gf_b = (to_gradflow(a, settings.device, True) for a in arrays)
    t_x, t_w, t_b = (to_torch(a, settings.device, True) for a in arrays)

    def run(x, w, b):
        for leaf in (x, w, b):
            leaf.grad = None
        y = x
        for _ in range(CHAIN_LENGTH):
            y = (y * w + b).tanh()
        loss = y.sum()
        loss.backward()
        return loss

    def check():
        return {"max_rel_diff": rel_diff(to_numpy(run(gf_x, gf_w, gf_b)), to_numpy(run(t_x, t_w, t_b))),
                "tolerance": 1e-4}

    return Pair(lambda: run(gf_x, gf_w, gf_b), lambda: run(t_x, t_w, t_b), check,
                ops_per_call=3 * CHAIN_LENGTH + 1, note=f"{3 * CHAIN_LENGTH + 1} ops fwd, + backward")


def fcn_tiny_pair(settings):
    torch_setup(settings.device, settings.threads)
    torch_step = TorchStep("gn", 1, settings.device, size=8)
    gf_step = GradflowStep("gn", 1, settings.device, size=8, weights=torch_step.weights())
    nodes = gf_step.graph_size()

    def check():
        return {"max_rel_diff": max(rel_diff(to_numpy(gf_step()), to_numpy(torch_step())) for _ in range(2)),
                "tolerance": 1e-3}

    return Pair(gf_step, torch_step, check, ops_per_call=nodes,
                note=f"{nodes} graph nodes; step = fwd+bwd+SGD")


def cases(settings=None):
    return [
        Case("overhead/chain", "10 x (y*w+b).tanh() on (16,16), forward+backward, per op",
             chain_pair, unit="us/op"),
        Case("overhead/fcn_tiny", "FCN-bench GN train step at (1,3,8,8), per forward graph node",
             fcn_tiny_pair, unit="us/op"),
    ]
