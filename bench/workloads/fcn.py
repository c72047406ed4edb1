"""FCN-bench training-step rows: GN and BN variants at each batch size."""
from bench.harness import Case, Pair, rel_diff
from bench.sides import to_numpy, torch_setup
from bench.workloads.fcn_net import GradflowStep, TorchStep


def step_pair(norm, batch, settings, size=64):
    torch_setup(settings.device, settings.threads)
    torch_step = TorchStep(norm, batch, settings.device, size)
    gf_step = GradflowStep(norm, batch, settings.device, size, weights=torch_step.weights())

    def check():
        # same weights in: the losses of the first two steps (before and after one update) agree
        diffs = [rel_diff(to_numpy(gf_step()), to_numpy(torch_step())) for _ in range(2)]
        return {"max_rel_diff": max(diffs), "tolerance": 1e-3}

    return Pair(gf_step, torch_step, check)


def cases(settings):
    out = []
    for batch in settings.batches:
        for norm in ("gn", "bn"):
            out.append(Case(f"fcn_{norm}_b{batch}/step",
                            f"FCN-bench train step, {norm.upper()}, batch {batch}, 64x64, 5 classes",
                            lambda s, norm=norm, batch=batch: step_pair(norm, batch, s)))
    return out
