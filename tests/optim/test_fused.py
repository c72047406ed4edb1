"""The fused optimizer kernels against the array-op updates they replaced (tests/optim/reference.py):
the same bits in float64 (and float32) over several steps, for every option combination, at
any thread count, with parameters that skip steps, repeat, or span several parallel blocks."""
import itertools

import numba
import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
import gradflow.optim as optim
from gradflow.optim import fused
from tests.optim import reference

# the last one spans several blocks of the CPU kernel, the last block partial
SHAPES = [(3, 4), (5,), (2, 1, 3), (fused.BLOCK * 2 + 7,)]
# ... and here large enough for the parallel kernel (when more than one thread is allowed)
LARGE_SHAPES = SHAPES[:3] + [(fused.PARALLEL_SIZE + fused.BLOCK + 7,)]

SGD_OPTIONS = [dict(lr=0.1, momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
               for m, d, wd, n, mx in itertools.product([0, 0.9], [0, 0.3], [0, 0.1], [False, True], [False, True])
               if not (n and (m == 0 or d != 0))]
ADAM_OPTIONS = [dict(lr=0.01, betas=b, eps=e, weight_decay=wd, amsgrad=a, maximize=mx, decoupled_weight_decay=dc)
                for b, e, wd, a, mx, dc in itertools.product([(0.9, 0.999), (0.3, 0.9)], [1e-8, 0.1], [0, 0.1],
                                                             [False, True], [False, True], [False, True])]


def _grads(step, shapes, dtype, seed):
    """Noise gradients; the third parameter gets none on odd steps (skipped, state untouched)."""
    rng = np.random.default_rng(seed * 1000 + step)
    grads = [(rng.standard_normal(s) * (1 + step)).astype(dtype) for s in shapes]
    if step % 2:
        grads[2] = None
    return grads


def _compare(cls, reference_update, kwargs, dtype, steps=5, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    initial = [rng.standard_normal(s).astype(dtype) for s in shapes]
    params = [nn.Parameter(gf.tensor(a.copy())) for a in initial]
    opt = cls(params, **kwargs)
    group = dict(opt.param_groups[0])
    ref_params = [a.copy() for a in initial]
    ref_states = [{} for _ in initial]
    for step in range(steps):
        grads = _grads(step, shapes, dtype, seed)
        for p, g in zip(params, grads):
            p.grad = None if g is None else gf.tensor(g)
        opt.step()
        for param, grad, state in zip(ref_params, grads, ref_states):
            if grad is not None:
                reference_update(group, param, grad, state)
        for i, (p, expected) in enumerate(zip(params, ref_params)):
            assert p.data.dtype == dtype
            np.testing.assert_array_equal(p.data, expected, err_msg=f"parameter {i} after step {step}")
        for i, (p, expected) in enumerate(zip(params, ref_states)):
            got = opt.state[p]
            assert set(got) == set(expected), i
            for key, value in expected.items():
                np.testing.assert_array_equal(got[key], value, err_msg=f"state {key} of parameter {i}")
    return params


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", SGD_OPTIONS, ids=str)
def test_sgd_equals_array_op_update_bit_for_bit(kwargs, dtype):
    _compare(optim.SGD, reference.sgd_update, kwargs, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", ADAM_OPTIONS, ids=str)
def test_adam_equals_array_op_update_bit_for_bit(kwargs, dtype):
    _compare(optim.Adam, reference.adam_update, kwargs, dtype)


@pytest.mark.parametrize("cls, kwargs", [(optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
                                         (optim.AdamW, dict(lr=0.01, amsgrad=True))])
def test_same_bits_at_any_thread_count(cls, kwargs):
    """Serial and parallel kernels (gradflow's thread count picks them) give the same bits."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here (NUMBA_NUM_THREADS=1)")
    previous = gf.get_num_threads()
    results = []
    try:
        for threads in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            gf.set_num_threads(threads)
            results.append([p.data.copy() for p in _compare(cls, _reference_of(cls), kwargs, np.float64, steps=3,
                                                            shapes=LARGE_SHAPES)])
    finally:
        gf.set_num_threads(previous)
    for got in results[1:]:
        for a, b in zip(results[0], got):
            np.testing.assert_array_equal(a, b)


def test_large_parameters_take_the_parallel_kernel_only_with_threads(monkeypatch):
    calls = []
    original = fused._cpu_kernel

    def recording(pair, size):
        kernel = original(pair, size)
        calls.append((size, kernel is pair[1]))
        return kernel
    monkeypatch.setattr(fused, "_cpu_kernel", recording)
    previous = gf.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            gf.set_num_threads(threads)
            calls.clear()
            _compare(optim.Adam, reference.adam_update, dict(lr=0.01), np.float32, steps=1, shapes=LARGE_SHAPES)
            assert calls and all(parallel == (threads > 1 and size >= fused.PARALLEL_SIZE) for size, parallel in calls)
    finally:
        gf.set_num_threads(previous)


def _reference_of(cls):
    return reference.sgd_update if cls is optim.SGD else reference.adam_update


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam])
def test_a_repeated_parameter_is_updated_once_per_occurrence(cls):
    with pytest.warns(UserWarning, match="duplicate parameters"):
        p = nn.Parameter(gf.tensor(np.linspace(-1, 1, 6)))
        opt = cls([p, p], lr=0.1, **({"momentum": 0.9} if cls is optim.SGD else {}))
    expected = p.data.copy()
    state = {}
    group = dict(opt.param_groups[0])
    for _ in range(3):
        grad = np.cos(expected) + 0.5
        p.grad = gf.tensor(grad)
        opt.step()
        for _ in range(2):
            _reference_of(cls)(group, expected, grad, state)
    np.testing.assert_array_equal(p.data, expected)


def test_non_contiguous_parameter_data_is_refused_clearly():
    p = nn.Parameter(gf.tensor(np.ones((3, 4))))
    p.data = np.ones((4, 3)).T
    p.grad = gf.tensor(np.ones((3, 4)))
    with pytest.raises(ValueError, match="contiguous"):
        optim.SGD([p], lr=0.1).step()


def test_zero_denominator_gives_nan_as_numpy_does():
    """eps=0 with a zero gradient: 0/0 is NaN in NumPy's arithmetic (not a ZeroDivisionError)."""
    p = nn.Parameter(gf.tensor(np.ones(4)))
    p.grad = gf.tensor(np.zeros(4))
    opt = optim.Adam([p], lr=0.1, eps=0.0)
    expected, state = np.ones(4), {}
    with np.errstate(invalid="ignore", divide="ignore"):
        opt.step()
        reference.adam_update(dict(opt.param_groups[0]), expected, np.zeros(4), state)
    assert np.isnan(expected).all()
    np.testing.assert_array_equal(p.data, expected)
