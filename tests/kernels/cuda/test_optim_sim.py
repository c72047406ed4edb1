"""The CUDA optimizer kernels (kernels/cuda/optim.py): whole optimizer steps through
them equal the array-op reference updates bit for bit, with more parameters than one
launch takes (several chunks, a padded last one), parameters larger than the grid
(grid-stride loops), steps without a gradient, and a repeated parameter.

In the simulator the parameters stay NumPy arrays and fused._device sends them to the
CUDA kernels; on a GPU they are CuPy arrays. See conftest.py."""
import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
import gradflow.optim as optim
from gradflow import backend
from gradflow.kernels.cuda import launch
from gradflow.kernels.cuda import optim as cuda_optim
from gradflow.optim import fused
from tests.optim import reference

ON_GPU = backend.cuda_available()
SHAPES = [(3,), (2, 5), (19,), (1,), (4, 2), (7,), (2, 2, 2), (3,), (6,), (11,)]   # 10 > CHUNK parameters
CASES = [
    (optim.SGD, dict(lr=0.1), reference.sgd_update),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.1, maximize=True), reference.sgd_update),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1), reference.sgd_update),
    (optim.Adam, dict(lr=0.01, betas=(0.3, 0.9), weight_decay=0.1, amsgrad=True), reference.adam_update),
    (optim.Adam, dict(lr=0.01, maximize=True), reference.adam_update),
    (optim.AdamW, dict(lr=0.01, amsgrad=True), reference.adam_update),
]


@pytest.fixture
def on_cuda_kernels(monkeypatch):
    if not ON_GPU:
        monkeypatch.setattr(fused, "_device", lambda array: "cuda")
    with launch.geometry(threads=4, max_blocks=2):
        yield


def _device(array):
    return gf.tensor(array, device="cuda" if ON_GPU else "cpu")


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls, kwargs, reference_update", CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_cuda_optimizer_steps_equal_reference(on_cuda_kernels, cls, kwargs, reference_update, dtype):
    assert len(SHAPES) > cuda_optim.CHUNK
    rng = np.random.default_rng(0)
    initial = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    params = [nn.Parameter(_device(a.copy())) for a in initial]
    opt = cls(params, **kwargs)
    group = dict(opt.param_groups[0])
    expected, states = [a.copy() for a in initial], [{} for _ in initial]
    for step in range(3):
        grads = [(rng.standard_normal(s) + step).astype(dtype) for s in SHAPES]
        grads[2 + step] = None                   # a different parameter skips each step
        for p, g in zip(params, grads):
            p.grad = None if g is None else _device(g)
        opt.step()
        for param, grad, state in zip(expected, grads, states):
            if grad is not None:
                reference_update(group, param, grad, state)
    for i, (p, e) in enumerate(zip(params, expected)):
        np.testing.assert_array_equal(backend.to_numpy(p.data), e, err_msg=f"parameter {i}")
    for p, state in zip(params, states):
        for key, value in state.items():
            np.testing.assert_array_equal(backend.to_numpy(opt.state[p][key]), value, err_msg=key)


@pytest.mark.cudasim
def test_repeated_parameter_goes_to_separate_launches(on_cuda_kernels):
    with pytest.warns(UserWarning, match="duplicate"):
        p = nn.Parameter(_device(np.linspace(-1, 1, 5)))
        opt = optim.SGD([p, p], lr=0.1, momentum=0.9)
    expected, state = np.linspace(-1, 1, 5), {}
    for _ in range(2):
        grad = np.cos(expected)
        p.grad = _device(grad)
        opt.step()
        for _ in range(2):
            reference.sgd_update(dict(opt.param_groups[0]), expected, grad, state)
    np.testing.assert_array_equal(backend.to_numpy(p.data), expected)


@pytest.mark.cudasim
def test_launch_count_is_one_per_chunk(on_cuda_kernels, monkeypatch):
    launches = []
    original = cuda_optim._adam_chunk

    def counting(grid, threads, *args):
        launches.append(grid)
        original(grid, threads, *args)
    monkeypatch.setattr(cuda_optim, "_adam_chunk", counting)
    params = [nn.Parameter(_device(np.ones(s))) for s in SHAPES]
    opt = optim.Adam(params)
    for p in params:
        p.grad = _device(np.ones(p.shape))
    opt.step()
    assert [g[1] for g in launches] == [8, 2]      # 10 parameters: one full chunk, one of 2


@pytest.mark.cudasim
def test_per_tensor_launches_when_chunked_kernels_do_not_compile(on_cuda_kernels, monkeypatch):
    def refuses(*args):
        raise TypeError("no tuple indexing here")
    monkeypatch.setattr(cuda_optim, "_sgd_chunk", refuses)
    monkeypatch.setattr(cuda_optim, "per_tensor_reason", None)
    rng = np.random.default_rng(1)
    initial = [rng.standard_normal(s) for s in SHAPES]
    params = [nn.Parameter(_device(a.copy())) for a in initial]
    opt = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
    expected, states = [a.copy() for a in initial], [{} for _ in initial]
    for _ in range(2):
        grads = [rng.standard_normal(s) for s in SHAPES]
        for p, g in zip(params, grads):
            p.grad = _device(g)
        opt.step()
        for param, grad, state in zip(expected, grads, states):
            reference.sgd_update(dict(opt.param_groups[0]), param, grad, state)
    assert cuda_optim.per_tensor_reason == "TypeError: no tuple indexing here"
    for p, e in zip(params, expected):
        np.testing.assert_array_equal(backend.to_numpy(p.data), e)
