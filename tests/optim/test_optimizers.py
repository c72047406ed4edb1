"""SGD, Adam and AdamW against torch.optim: the same weights after N steps, for every option combination,
and state_dicts that resume identically (ours, pickled, and to/from torch's)."""
import itertools
import pickle

import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
import gradflow.optim as optim

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (5,), (2, 1, 3)]


def _initial(seed, dtype):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def _grads(step, params, seed):
    """Gradients for a step: noise plus a pull toward the current weights (so errors would compound).

    The last parameter gets no gradient on odd steps: optimizers must skip it, state untouched.
    """
    rng = np.random.default_rng(seed * 1000 + step)
    grads = [rng.standard_normal(p.shape).astype(p.dtype) + 0.5 * p for p in params]
    if step % 2:
        grads[-1] = None
    return grads


def _run_ours(cls, kwargs, initial, steps, seed, groups=None):
    params = [nn.Parameter(gf.tensor(a.copy())) for a in initial]
    opt = cls(_groups(params, groups), **kwargs)
    _steps(opt, params, range(steps), seed)
    return params, opt


def _steps(opt, params, step_range, seed):
    for step in step_range:
        for p, g in zip(params, _grads(step, [p.detach().numpy() for p in params], seed)):
            p.grad = None if g is None else gf.tensor(g)
        opt.step()


def _run_torch(cls, kwargs, initial, steps, seed, groups=None):
    params = [torch.nn.Parameter(torch.tensor(a.copy())) for a in initial]
    opt = cls(_groups(params, groups), **kwargs)
    _torch_steps(opt, params, range(steps), seed)
    return params, opt


def _torch_steps(opt, params, step_range, seed):
    for step in step_range:
        for p, g in zip(params, _grads(step, [p.detach().numpy() for p in params], seed)):
            p.grad = None if g is None else torch.tensor(g)
        opt.step()


def _groups(params, groups):
    if groups is None:
        return params
    return [dict(params=params[:1], **groups[0]), dict(params=params[1:], **groups[1])]


def _assert_same_weights(ours, theirs, dtype):
    rtol, atol = (1e-11, 1e-13) if dtype == np.float64 else (2e-5, 1e-6)
    for i, (p, t) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(p.detach().numpy(), t.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"parameter {i}")


SGD_OPTIONS = [dict(lr=0.1, momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
               for m, d, wd, n, mx in itertools.product([0, 0.9], [0, 0.3], [0, 0.1], [False, True], [False, True])
               if not (n and (m == 0 or d != 0))]
ADAM_OPTIONS = [dict(lr=0.01, betas=b, eps=e, weight_decay=wd, amsgrad=a, maximize=mx)
                for b, e, wd, a, mx in itertools.product([(0.9, 0.999), (0.3, 0.9)], [1e-8], [0, 0.1],
                                                         [False, True], [False, True])]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", SGD_OPTIONS, ids=str)
def test_sgd_matches_torch(kwargs, dtype):
    initial = _initial(0, dtype)
    ours, _ = _run_ours(optim.SGD, kwargs, initial, 8, seed=1)
    theirs, _ = _run_torch(torch.optim.SGD, kwargs, initial, 8, seed=1)
    _assert_same_weights(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", ADAM_OPTIONS, ids=str)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_and_adamw_match_torch(name, kwargs, dtype):
    initial = _initial(2, dtype)
    ours, opt = _run_ours(getattr(optim, name), kwargs, initial, 8, seed=3)
    theirs, topt = _run_torch(getattr(torch.optim, name), kwargs, initial, 8, seed=3)
    _assert_same_weights(ours, theirs, dtype)
    state, tstate = opt.state[ours[0]], topt.state[theirs[0]]
    assert state["step"] == tstate["step"].item() == 8
    np.testing.assert_allclose(state["exp_avg_sq"], tstate["exp_avg_sq"].numpy(), rtol=1e-5)
    assert opt.state[ours[-1]]["step"] == 4   # skipped on the steps it had no gradient


def test_adam_decoupled_weight_decay_flag_is_adamw():
    initial = _initial(4, np.float64)
    kwargs = dict(lr=0.05, weight_decay=0.2)
    a, _ = _run_ours(optim.Adam, dict(kwargs, decoupled_weight_decay=True), initial, 5, seed=5)
    b, _ = _run_ours(optim.AdamW, kwargs, initial, 5, seed=5)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
    assert optim.AdamW(b).defaults["weight_decay"] == 1e-2


@pytest.mark.parametrize("cls, groups", [
    ("SGD", [dict(lr=0.1, momentum=0.9), dict(lr=0.01, weight_decay=0.1, nesterov=True, momentum=0.5)]),
    ("Adam", [dict(lr=0.01, amsgrad=True), dict(lr=0.1, betas=(0.5, 0.9))]),
])
def test_per_group_options_match_torch(cls, groups):
    initial = _initial(6, np.float64)
    ours, _ = _run_ours(getattr(optim, cls), dict(lr=0.05), initial, 6, seed=7, groups=groups)
    theirs, _ = _run_torch(getattr(torch.optim, cls), dict(lr=0.05), initial, 6, seed=7, groups=groups)
    _assert_same_weights(ours, theirs, np.float64)


CHECKPOINT_CASES = [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                    ("SGD", dict(lr=0.1, momentum=0.5, dampening=0.1, weight_decay=0.01)),
                    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
                    ("AdamW", dict(lr=0.01))]


@pytest.mark.parametrize("name, kwargs", CHECKPOINT_CASES)
def test_state_dict_round_trip_resumes_identically(name, kwargs):
    initial = _initial(8, np.float32)
    straight, _ = _run_ours(getattr(optim, name), kwargs, initial, 10, seed=9)

    first, opt = _run_ours(getattr(optim, name), kwargs, initial, 5, seed=9)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    assert all(isinstance(v, np.ndarray) for s in saved["state"].values() for v in s.values() if hasattr(v, "shape"))
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1, 2]]
    resumed = [nn.Parameter(gf.tensor(p.detach().numpy().copy())) for p in first]
    opt2 = getattr(optim, name)(resumed, **kwargs)
    opt2.load_state_dict(saved)
    _steps(opt2, resumed, range(5, 10), seed=9)
    for p, q in zip(straight, resumed):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


@pytest.mark.parametrize("name, kwargs", CHECKPOINT_CASES)
def test_torch_optimizer_state_loads_into_ours_and_back(name, kwargs):
    initial = _initial(10, np.float64)
    theirs, topt = _run_torch(getattr(torch.optim, name), kwargs, initial, 5, seed=11)
    # torch -> gradflow: continue both from torch's state
    ours = [nn.Parameter(gf.tensor(t.detach().numpy().copy())) for t in theirs]
    opt = getattr(optim, name)(ours, **kwargs)
    opt.load_state_dict(topt.state_dict())
    _steps(opt, ours, range(5, 10), seed=11)
    _torch_steps(topt, theirs, range(5, 10), seed=11)
    _assert_same_weights(ours, theirs, np.float64)
    # gradflow -> torch: our (numpy) state as tensors loads into a fresh torch optimizer
    state = opt.state_dict()
    as_torch = {"param_groups": state["param_groups"],
                "state": {i: {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in s.items()}
                          for i, s in state["state"].items()}}
    fresh = [torch.nn.Parameter(torch.tensor(p.detach().numpy().copy())) for p in ours]
    topt2 = getattr(torch.optim, name)(fresh, **kwargs)
    topt2.load_state_dict(as_torch)
    _torch_steps(topt2, fresh, range(10, 14), seed=11)
    _steps(opt, ours, range(10, 14), seed=11)
    _assert_same_weights(ours, fresh, np.float64)


def test_load_state_dict_casts_state_to_parameter_dtype_and_checks_groups():
    params = [nn.Parameter(gf.ones(3))]
    opt = optim.Adam(params)
    params[0].grad = gf.ones(3)
    opt.step()
    state = opt.state_dict()
    state["state"][0]["exp_avg"] = state["state"][0]["exp_avg"].astype(np.float64)
    opt.load_state_dict(state)
    assert opt.state[params[0]]["exp_avg"].dtype == np.float32
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="doesn't match the size of optimizer's group"):
        opt.load_state_dict({"state": {}, "param_groups": [dict(state["param_groups"][0], params=[0, 1])]})


def test_zero_grad_and_closure():
    p = nn.Parameter(gf.ones(2))
    opt = optim.SGD([p], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 2.0
    np.testing.assert_allclose(p.detach().numpy(), [0.0, 0.0])   # 1 - 0.5 * 2
    opt.zero_grad(set_to_none=False)
    assert (p.grad.numpy() == 0).all()
    opt.zero_grad()
    assert p.grad is None


def test_parameters_are_updated_in_place():
    layer = nn.Linear(2, 2)
    weight, data = layer.weight, layer.weight.data
    opt = optim.Adam(layer.parameters(), lr=0.1)
    layer(gf.ones(1, 2)).sum().backward()
    opt.step()
    assert layer.weight is weight and layer.weight.data is data


@pytest.mark.parametrize("make, error, match", [
    (lambda p: optim.SGD(p, lr=-1), ValueError, "Invalid learning rate: -1"),
    (lambda p: optim.SGD(p, momentum=-0.1), ValueError, "Invalid momentum value: -0.1"),
    (lambda p: optim.SGD(p, weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    (lambda p: optim.SGD(p, nesterov=True), ValueError, "Nesterov momentum requires a momentum and zero dampening"),
    (lambda p: optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "Nesterov"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0: 1.0"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), ValueError, "Invalid beta parameter at index 1: -0.1"),
    (lambda p: optim.Adam(p, eps=-1e-8), ValueError, "Invalid epsilon value"),
    (lambda p: optim.SGD([], lr=0.1), ValueError, "optimizer got an empty parameter list"),
    (lambda p: optim.SGD(p[0], lr=0.1), TypeError, "should be an iterable of Tensors or dicts, but got Parameter"),
    (lambda p: optim.SGD([{"params": p}, {"params": p[:1]}]), ValueError, "appear in more than one parameter group"),
    (lambda p: optim.SGD([{"params": set(p)}]), TypeError, "ordered collections"),
    (lambda p: optim.SGD([np.ones(2)]), TypeError, "optimizer can only optimize Tensors"),
    (lambda p: optim.SGD([p[0] * 2]), ValueError, "can't optimize a non-leaf Tensor"),
])
def test_constructor_errors(make, error, match):
    with pytest.raises(error, match=match):
        make([nn.Parameter(gf.ones(2)), nn.Parameter(gf.ones(3))])


def test_add_param_group_uses_defaults_and_repr():
    a, b = nn.Parameter(gf.ones(1)), nn.Parameter(gf.ones(1))
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.01})
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[1]["momentum"] == 0.9
    assert "Parameter Group 1" in repr(opt) and "lr: 0.01" in repr(opt)


@pytest.mark.gpu
@pytest.mark.parametrize("name, kwargs", CHECKPOINT_CASES)
def test_cuda_updates_match_cpu(name, kwargs):
    initial = _initial(12, np.float64)
    cpu, _ = _run_ours(getattr(optim, name), kwargs, initial, 6, seed=13)
    params = [nn.Parameter(gf.tensor(a.copy(), device="cuda")) for a in initial]
    opt = getattr(optim, name)(params, **kwargs)
    for step in range(6):
        for p, g in zip(params, _grads(step, [p.detach().cpu().numpy() for p in params], 13)):
            p.grad = None if g is None else gf.tensor(g, device="cuda")
        opt.step()
    for p, q in zip(cpu, params):
        assert q.device == "cuda"
        np.testing.assert_allclose(q.detach().cpu().numpy(), p.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert all(isinstance(v, np.ndarray) for s in opt.state_dict()["state"].values() for v in s.values()
               if hasattr(v, "shape"))
