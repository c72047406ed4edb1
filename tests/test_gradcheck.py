import numpy as np
import pytest

import gradflow as gf
from gradflow.autograd import Function


class WrongSquare(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * a * 2.01      # deliberately 0.5% off


def test_catches_a_deliberately_wrong_backward():
    x = gf.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    with pytest.raises(gf.GradcheckError, match=r"input 0 .*index \(2,\).*analytic .* numeric"):
        gf.gradcheck(WrongSquare.apply, [x])


def test_passes_a_right_backward_and_casts_to_float64():
    x = gf.tensor([0.5, -1.0, 2.0], requires_grad=True)       # float32 in: checked in float64
    assert gf.gradcheck(lambda a: (a * a).exp(), [x])


def test_checks_every_input_and_skips_constants():
    a = gf.tensor(np.ones((2, 2)), requires_grad=True)
    b = gf.tensor(np.ones(2))
    assert gf.gradcheck(lambda a, b, k: a * b * k, [a, b, 3.0])
    with pytest.raises(ValueError, match="no input requires grad"):
        gf.gradcheck(lambda b: b * 2, [b])


def test_non_contiguous_inputs_are_perturbed_in_place():
    base = gf.tensor(np.arange(6.0).reshape(2, 3))
    x = base.transpose(0, 1).detach().requires_grad_()      # a non-contiguous view
    assert gf.gradcheck(lambda a: a * a, [x])


@pytest.mark.parametrize("fn", [lambda a: a.detach() * 2, lambda a: a.argmax(), lambda a: (a > 0),
                                lambda a: 3.0, lambda a: gf.zeros(2, dtype=gf.float64)],
                         ids=["detached", "integer", "bool", "number", "constant"])
def test_a_function_without_differentiable_output_is_refused(fn):
    x = gf.tensor(np.array([0.5, -1.0]), requires_grad=True)
    with pytest.raises(gf.GradcheckError, match="no differentiable output"):
        gf.gradcheck(fn, [x])


def test_outputs_that_do_not_require_grad_beside_one_that_does_are_still_checked():
    x = gf.tensor(np.array([0.5, -1.0]), requires_grad=True)
    with pytest.raises(gf.GradcheckError, match="input 0"):
        gf.gradcheck(lambda a: (a * 2, a.detach() * 3), [x])   # the detached output's gradient is missing
    assert gf.gradcheck(lambda a: (a * 2, a.argmax()), [x])
