"""Tensor.register_post_accumulate_grad_hook: when it fires, what it sees, against PyTorch."""
import numpy as np
import pytest
import torch

import gradflow as gf


def _graph(lib, w, b, x):
    """w is used twice (two contributions), b once, x is an input that needs no hook."""
    h = (x * w).sum() + (w * w).sum()
    return h * b.sum()


def _run(lib, make, record_order):
    w = make(np.array([1.0, -2.0, 3.0]))
    b = make(np.array([0.5, 0.25]))
    x = make(np.array([2.0, 1.0, -1.0]), grad=False)
    events = []
    for name, t in (("w", w), ("b", b)):
        t.register_post_accumulate_grad_hook(
            lambda p, name=name: events.append((name, np.array(p.grad.detach().numpy()))))
    _graph(lib, w, b, x).backward()
    return events if record_order else sorted(events, key=lambda e: e[0])


def _gf(a, grad=True):
    return gf.tensor(a, requires_grad=grad)


def _torch(a, grad=True):
    return torch.tensor(a, requires_grad=grad)


def test_each_hook_fires_once_with_the_fully_accumulated_grad_like_torch():
    ours = _run(gf, _gf, record_order=False)
    ref = _run(torch, _torch, record_order=False)
    assert [name for name, _ in ours] == [name for name, _ in ref] == ["b", "w"]
    for (_, g), (_, r) in zip(ours, ref):
        np.testing.assert_allclose(g, r, rtol=1e-12)


def test_hook_fires_while_backward_is_still_running():
    """The hook of the parameter nearest the loss runs before the first layer's backward."""
    trace = []

    class Spy(gf.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a.copy()

        @staticmethod
        def backward(ctx, g):
            trace.append("first layer backward")
            return g

    x = gf.tensor(np.ones(3), requires_grad=True)
    w = gf.tensor(np.full(3, 2.0), requires_grad=True)
    w.register_post_accumulate_grad_hook(lambda p: trace.append("w ready"))
    (Spy.apply(x) * w).sum().backward()
    assert trace == ["w ready", "first layer backward"]


def test_weight_behind_a_transpose_is_ready_before_the_earlier_layers_backward():
    """linear uses w through a transpose node: that short branch must run right after the
    matmul's backward, not after the whole rest of the graph."""
    trace = []

    class Spy(gf.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a.copy()

        @staticmethod
        def backward(ctx, g):
            trace.append("first layer backward")
            return g

    first = gf.nn.Linear(3, 4)
    second = gf.nn.Linear(4, 2)
    second.weight.register_post_accumulate_grad_hook(lambda p: trace.append("second.weight ready"))
    first.weight.register_post_accumulate_grad_hook(lambda p: trace.append("first.weight ready"))
    x = gf.tensor(np.ones((5, 3), np.float32))
    second(Spy.apply(first(x))).sum().backward()
    assert trace == ["second.weight ready", "first layer backward", "first.weight ready"]


def test_accumulates_over_passes_and_hook_sees_the_running_total():
    w = gf.tensor(np.array([1.0, 2.0]), requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.numpy().copy()))
    for _ in range(2):
        (w * 3.0).sum().backward()
    np.testing.assert_array_equal(seen[0], [3.0, 3.0])
    np.testing.assert_array_equal(seen[1], [6.0, 6.0])


def test_leaf_passed_to_backward_directly_and_leaf_outside_the_graph():
    w = gf.tensor(np.array([1.0, 2.0]), requires_grad=True)
    other = gf.tensor(np.array([1.0]), requires_grad=True)
    calls = []
    w.register_post_accumulate_grad_hook(lambda p: calls.append("w"))
    other.register_post_accumulate_grad_hook(lambda p: calls.append("other"))
    w.backward(gf.tensor(np.array([1.0, 1.0])))
    assert calls == ["w"]
    (w.detach() * 2 + other * 0).sum().backward()   # w is outside this graph
    assert calls == ["w", "other"]


def test_none_gradient_from_a_node_does_not_fire():
    class NoGrad(gf.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, g):
            return g, None

    a = gf.tensor(np.ones(2), requires_grad=True)
    b = gf.tensor(np.ones(2), requires_grad=True)
    fired = []
    b.register_post_accumulate_grad_hook(lambda p: fired.append(p))
    with gf.autograd.debug_mode(False):     # debug mode would refuse the None (rightly)
        NoGrad.apply(a, b).sum().backward()
    assert fired == []


def test_remove_unregisters():
    w = gf.tensor(np.ones(2), requires_grad=True)
    calls = []
    handle = w.register_post_accumulate_grad_hook(lambda p: calls.append(1))
    handle.remove()
    (w * 2).sum().backward()
    assert calls == []


def test_registration_errors():
    w = gf.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        gf.tensor(np.ones(2)).register_post_accumulate_grad_hook(lambda p: None)
    with pytest.raises(TypeError, match="callable"):
        w.register_post_accumulate_grad_hook(3)
