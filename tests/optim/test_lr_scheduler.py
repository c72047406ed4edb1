"""Learning-rate schedulers against torch.optim.lr_scheduler: identical lr sequences and resumable state."""
import pickle
import warnings

import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
import gradflow.optim as optim
from gradflow.optim import lr_scheduler

torch = pytest.importorskip("torch")


def _optimizers(lrs=(0.1, 0.02)):
    """Our SGD and torch's, each with one parameter group per lr."""
    ours = optim.SGD([{"params": [nn.Parameter(gf.ones(1))], "lr": lr} for lr in lrs], lr=lrs[0], momentum=0.9)
    theirs = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.ones(1))], "lr": lr} for lr in lrs],
                             lr=lrs[0], momentum=0.9)
    return ours, theirs


def _build(name, opt, backend, kwargs):
    make = kwargs.pop("lambda", None)
    if make is not None:
        kwargs["lr_lambda"] = make
    return getattr(backend, name)(opt, **kwargs)


SCHEDULES = [
    ("StepLR", dict(step_size=3)),
    ("StepLR", dict(step_size=2, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3)),
    ("CosineAnnealingLR", dict(T_max=10)),
    ("CosineAnnealingLR", dict(T_max=4, eta_min=0.001)),   # past T_max: it climbs back, periodically
    ("ExponentialLR", dict(gamma=0.9)),
    ("PolynomialLR", dict(total_iters=6, power=2.0)),
    ("LambdaLR", {"lambda": lambda epoch: 0.95 ** epoch}),
]


@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=lambda v: str(v))
def test_lr_sequence_matches_torch(name, kwargs):
    ours_opt, torch_opt = _optimizers()
    ours = _build(name, ours_opt, lr_scheduler, dict(kwargs))
    theirs = _build(name, torch_opt, torch.optim.lr_scheduler, dict(kwargs))
    assert ours.get_last_lr() == theirs.get_last_lr()
    for epoch in range(20):
        ours_opt.step()
        torch_opt.step()
        ours.step()
        theirs.step()
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12, err_msg=f"epoch {epoch}")
        assert [g["lr"] for g in ours_opt.param_groups] == ours.get_last_lr()


@pytest.mark.parametrize("name, kwargs", SCHEDULES[:7], ids=lambda v: str(v))
def test_explicit_epoch_uses_the_closed_form_like_torch(name, kwargs):
    ours_opt, torch_opt = _optimizers()
    ours = _build(name, ours_opt, lr_scheduler, dict(kwargs))
    theirs = _build(name, torch_opt, torch.optim.lr_scheduler, dict(kwargs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in [3, 7, 1, 12]:
            ours.step(epoch)
            theirs.step(epoch)
            np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12)


def test_chained_schedulers_match_torch():
    ours_opt, torch_opt = _optimizers()
    ours = [lr_scheduler.StepLR(ours_opt, 4, 0.5), lr_scheduler.CosineAnnealingLR(ours_opt, T_max=6)]
    theirs = [torch.optim.lr_scheduler.StepLR(torch_opt, 4, 0.5),
              torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=6)]
    for _ in range(15):
        ours_opt.step()
        torch_opt.step()
        for a, b in zip(ours, theirs):
            a.step()
            b.step()
        np.testing.assert_allclose([g["lr"] for g in ours_opt.param_groups],
                                   [g["lr"] for g in torch_opt.param_groups], rtol=1e-12)


PLATEAU_CASES = [
    dict(),
    dict(mode="max", factor=0.5, patience=2),
    dict(patience=1, cooldown=2, threshold=0.1, threshold_mode="abs"),
    dict(mode="max", patience=0, threshold_mode="abs", min_lr=[0.01, 0.005]),
    dict(patience=1, factor=0.5, min_lr=0.02, eps=1e-3),
]


@pytest.mark.parametrize("kwargs", PLATEAU_CASES, ids=str)
def test_reduce_on_plateau_matches_torch(kwargs):
    ours_opt, torch_opt = _optimizers()
    ours = lr_scheduler.ReduceLROnPlateau(ours_opt, **kwargs)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **kwargs)
    metrics = np.random.default_rng(0).uniform(0.0, 1.0, 40) + np.linspace(1.0, 0.0, 40)
    for epoch, metric in enumerate(metrics):
        ours.step(metric)
        theirs.step(metric)
        assert ours.get_last_lr() == theirs.get_last_lr(), f"epoch {epoch}"
        assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter) == \
               (theirs.best, theirs.num_bad_epochs, theirs.cooldown_counter)
    assert ours.get_last_lr() != [0.1, 0.02]   # it did reduce


@pytest.mark.parametrize("name, kwargs", SCHEDULES, ids=lambda v: str(v))
def test_state_dict_round_trip_resumes_identically(name, kwargs):
    straight_opt, _ = _optimizers()
    straight = _build(name, straight_opt, lr_scheduler, dict(kwargs))
    opt, _ = _optimizers()
    sched = _build(name, opt, lr_scheduler, dict(kwargs))
    for _ in range(5):
        for o, s in ((straight_opt, straight), (opt, sched)):
            o.step()
            s.step()
    saved_sched = pickle.loads(pickle.dumps(sched.state_dict()))
    saved_opt = pickle.loads(pickle.dumps(opt.state_dict()))
    # resume: new optimizer and scheduler (as a training script would), then load both states
    resumed_opt, _ = _optimizers()
    resumed = _build(name, resumed_opt, lr_scheduler, dict(kwargs))
    resumed_opt.load_state_dict(saved_opt)
    resumed.load_state_dict(saved_sched)
    for _ in range(10):
        for o, s in ((straight_opt, straight), (resumed_opt, resumed)):
            o.step()
            s.step()
        assert resumed.get_last_lr() == straight.get_last_lr()
        assert [g["lr"] for g in resumed_opt.param_groups] == straight.get_last_lr()


def test_reduce_on_plateau_state_round_trip():
    opt, _ = _optimizers()
    sched = lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=1)
    for metric in [0.5, 0.4, 0.4, 0.6]:
        sched.step(metric)
    other_opt, _ = _optimizers()
    other = lr_scheduler.ReduceLROnPlateau(other_opt)
    other.load_state_dict(pickle.loads(pickle.dumps(sched.state_dict())))
    other_opt.load_state_dict(opt.state_dict())
    for metric in [0.3, 0.3, 0.3]:
        sched.step(metric)
        other.step(metric)
        assert other.get_last_lr() == sched.get_last_lr()
    assert other.mode == "max"


def test_lambda_lr_saves_callable_objects_state_only():
    class Warmup:
        def __init__(self, steps):
            self.steps = steps

        def __call__(self, epoch):
            return min(1.0, (epoch + 1) / self.steps)

    opt, _ = _optimizers()
    sched = lr_scheduler.LambdaLR(opt, [Warmup(4), lambda e: 1.0])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [{"steps": 4}, None]
    fresh_opt, _ = _optimizers()
    fresh = lr_scheduler.LambdaLR(fresh_opt, [Warmup(10), lambda e: 1.0])
    fresh.load_state_dict(state)
    assert fresh.lr_lambdas[0].steps == 4
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 1"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0])


def test_scheduler_errors_and_warnings():
    opt, _ = _optimizers()
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        lr_scheduler.StepLR([], 2)
    with pytest.raises(KeyError, match="param 'initial_lr' is not specified in param_groups\\[0\\]"):
        lr_scheduler.StepLR(opt, 2, last_epoch=3)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode avg is unknown"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="avg")
    with pytest.raises(ValueError, match="expected 2 min_lrs, got 1"):
        lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0.1])
    sched = lr_scheduler.StepLR(opt, 2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()


def test_scheduler_resumes_with_last_epoch_like_torch():
    ours_opt, torch_opt = _optimizers()
    for group in ours_opt.param_groups + torch_opt.param_groups:
        group["initial_lr"] = group["lr"]
    ours = lr_scheduler.CosineAnnealingLR(ours_opt, T_max=10, last_epoch=4)
    theirs = torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=10, last_epoch=4)
    for _ in range(6):
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12)
        ours_opt.step(), torch_opt.step()
        ours.step(), theirs.step()
