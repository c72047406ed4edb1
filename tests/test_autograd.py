import gc
import weakref

import numpy as np
import pytest

import gradflow as gf
from gradflow.autograd import Function


def test_diamond_sums_both_paths_before_visiting_the_shared_node():
    calls = []

    class Spy(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            calls.append(g.copy())
            return g * 2

    x = gf.tensor([1.0, 2.0], requires_grad=True)
    shared = Spy.apply(x)
    (shared * 3 + shared * shared).sum().backward()
    assert len(calls) == 1                     # visited once, after both consumers
    np.testing.assert_allclose(calls[0], 3 + 2 * np.array([2.0, 4.0]))
    np.testing.assert_allclose(x.grad.numpy(), 2 * (3 + 2 * np.array([2.0, 4.0])))


def test_grad_accumulates_across_backward_calls_and_zeroing_resets():
    x = gf.tensor([1.0, -2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 3, -4 + 3])
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3, 3])


def test_no_grad_records_nothing():
    x = gf.randn(3, requires_grad=True)
    with gf.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None

    @gf.no_grad()
    def f(t):
        return t * 2
    assert not f(x).requires_grad
    assert gf.is_grad_enabled()


def test_deep_chain_backprops_without_recursion():
    x = gf.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1.0
    y.sum().backward()
    assert x.grad.item() == 1.0


def test_second_backward_raises_unless_retain_graph():
    x = gf.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    z = (x + 1).sum()        # even ops that save nothing refuse a freed graph
    z.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        z.backward()


def test_backward_on_non_scalar_needs_a_gradient():
    x = gf.randn(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar outputs.*\(2, 3\)"):
        (x * 2).backward()
    (x * 2).backward(gf.ones(2, 3))
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 2.0))
    with pytest.raises(RuntimeError, match="gradient has shape"):
        (x * 2).backward(gf.ones(3))


def test_backward_without_requires_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        gf.randn(1).sum().backward()


def test_needs_input_grad_and_gradients_only_where_needed():
    seen = {}

    class Probe(Function):
        @staticmethod
        def forward(ctx, a, b, scale):
            seen["needs"] = ctx.needs_input_grad
            return a * b * scale

        @staticmethod
        def backward(ctx, g):
            return g, g, None

    a = gf.randn(2, requires_grad=True)
    b = gf.randn(2)
    Probe.apply(a, b, 3.0).sum().backward()
    assert seen["needs"] == (True, False, False)
    assert b.grad is None and a.grad is not None


def test_graph_does_not_keep_intermediate_data_alive():
    x = gf.randn(100, requires_grad=True)
    y = x.exp()                 # saves its output
    z = y + 1.0                 # saves nothing
    ref = weakref.ref(z)
    loss = (z * 2.0).sum()      # Mul saves z's data (array), not the Tensor z
    del y, z
    gc.collect()
    assert ref() is None
    loss.backward()


def test_multiple_outputs_get_zero_grads_when_unused():
    class Split(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1, a * 2

        @staticmethod
        def backward(ctx, g1, g2):
            return g1 + 2 * g2

    x = gf.tensor([1.0, 1.0], requires_grad=True)
    first, _ = Split.apply(x)
    first.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_wrong_gradient_shape_from_backward_is_reported():
    class Bad(Function):
        @staticmethod
        def forward(ctx, a):
            return a.sum()

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(RuntimeError, match="Bad.backward returned a gradient of shape"):
        Bad.apply(gf.randn(3, requires_grad=True)).backward()


class ForgetsSecondInput(Function):
    """A broken backward: no gradient for `b` even when it needs one."""

    @staticmethod
    def forward(ctx, a, b):
        return a * b

    @staticmethod
    def backward(ctx, g):
        return g, None


def test_debug_mode_refuses_a_missing_gradient_naming_op_and_input(monkeypatch):
    a, b = gf.randn(3, requires_grad=True), gf.randn(3, requires_grad=True)
    with gf.autograd.debug_mode(True):
        assert gf.autograd.is_debug_enabled()
        with pytest.raises(RuntimeError, match=r"ForgetsSecondInput\.backward returned None for input 1"):
            ForgetsSecondInput.apply(a, b).sum().backward()
    with gf.autograd.debug_mode(False):   # outside debug mode a missing gradient counts as zero
        ForgetsSecondInput.apply(a, b).sum().backward()
        assert b.grad is None and a.grad is not None


def test_debug_mode_allows_none_for_inputs_that_need_no_gradient():
    a, b = gf.randn(3, requires_grad=True), gf.randn(3)
    with gf.autograd.debug_mode(True):
        ForgetsSecondInput.apply(a, b).sum().backward()
    assert a.grad is not None


def test_the_test_suite_runs_in_debug_mode():
    assert gf.autograd.is_debug_enabled()


def test_set_debug_and_the_environment_variable(tmp_path):
    import os
    import subprocess
    import sys
    code = "import gradflow as gf; print(gf.autograd.is_debug_enabled())"
    env = dict(os.environ, GRADFLOW_DEBUG="1")
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "True"
    env["GRADFLOW_DEBUG"] = "0"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "False"
    previous = gf.autograd.is_debug_enabled()
    try:
        gf.autograd.set_debug(False)
        assert not gf.autograd.is_debug_enabled()
        gf.autograd.set_debug(True)
        assert gf.autograd.is_debug_enabled()
    finally:
        gf.autograd.set_debug(previous)
